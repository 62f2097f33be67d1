"""`python -m bench.profile`: where one request's time goes outside the engine, sampled with py-spy.

It starts the service (`ggic run`, the default layout unless `--workers`) on the bench's model and photo, drives it
with one client sending back to back, and for `--seconds` samples every process of the service with
`py-spy record --subprocesses` (the runtime, which hosts the connector, and its inference worker) and, with a
second py-spy, the client itself (the ML SDK's side of the request). It writes the raw collapsed stacks (flamegraph
input, one file per py-spy) and a JSON summary under `bench/results/`, and prints, per process, its sampled time
per request, the top frames, and the request's time by stage (engine, preprocessing, answer formatting, the pipe to
the worker, the runtime's HTTP server, the HTTP clients, ...).

py-spy leaves out idle threads (blocked in a system call), so the figures are the time a process ran or waited
for a core on the request's behalf. The sampler itself takes CPU: compare stages with each other, not the absolute
latency it prints with a run of `bench/serving.py`.

py-spy is not a dependency of the project: `python -m pip install --target /tmp/prof py-spy`, then
`--py-spy /tmp/prof/bin/py-spy` (or put it on PATH). Attaching to running processes needs root or
`kernel.yama.ptrace_scope=0`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.load import RESULTS_DIR, _environment, offline_env  # noqa: E402
from bench.serving import (  # noqa: E402
    BENCH_LIMIT_KB,
    SERVICE,
    _invoke_function,
    build_model,
    latency_summary,
    test_image,
)

log = logging.getLogger("bench.profile")

# A sample's stage: the first rule, in this order, that one of its frames matches ("function (file" text).
STAGES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("engine (MXNet forward, ClassifierModel.predict)", ("ClassifierModel.predict (", "mxnet/")),
    ("decode + preprocess (imaging.py)", ("connector/image_classification/imaging.py",)),
    ("answer formatting (format_probabilities)", ("format_probabilities (",)),
    ("worker pipe frames (frames.py)", ("connector/image_classification/frames.py",)),
    ("memory watchdog", ("MemoryWatchdog._loop (", "_loop (connector/contract/processes.py")),
    ("heartbeat", ("_heartbeat (",)),
    ("native hosting (the connector in the runtime)", ("connector/core/native.py", "image_classification/endpoint.py")),
    ("runtime HTTP server (ipc_server, http.server)", ("ipc_server.py", "http/server.py", "socketserver.py")),
    ("HTTP clients (IPC SDK, http.client)", ("ipc_client.py", "ipc_facade.py", "http/client.py")),
    ("JSON", ("json/",)),
    ("logging", ("logging/",)),
)
OTHER = "other"
_LOCATION = re.compile(r" \(([^()]*?)(?::\d+)?\)$")


def find_py_spy(explicit: Optional[str]) -> str:
    for candidate in (explicit, shutil.which("py-spy"), "/tmp/prof/bin/py-spy"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("py-spy not found: `python -m pip install --target /tmp/prof py-spy` (or give --py-spy PATH)")


# --- reading py-spy's collapsed stacks ---------------------------------------------------------------------

def process_label(frame: str) -> str:
    """`process 123:"python -m connector.image_classification.worker"` → `connector.image_classification.worker`."""
    command = frame.split(":", 1)[1].strip('"')
    words = command.split()
    if "-m" in words and words.index("-m") + 1 < len(words):
        return words[words.index("-m") + 1]
    return Path(words[-1]).name if words else command


def short(frame: str) -> str:
    """`Executor.forward (mxnet/executor.py:115)` → `Executor.forward (executor.py)`."""
    match = _LOCATION.search(frame)
    if not match:
        return frame
    return f"{frame[:match.start()]} ({Path(match.group(1)).name})"


def parse_collapsed(lines: Iterable[str], default_process: str) -> List[Tuple[str, List[str], int]]:
    """(process, frames root→leaf, count) for each line `frame;frame;... count`."""
    samples = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        processes = [frame for frame in frames if frame.startswith("process ")]
        process = process_label(processes[-1]) if processes else default_process
        samples.append((process, [frame for frame in frames if not frame.startswith("process ")], int(count)))
    return samples


def stage_of(frames: Sequence[str]) -> str:
    for stage, needles in STAGES:
        if any(needle in frame for frame in frames for needle in needles):
            return stage
    return OTHER


def summarize(samples: Sequence[Tuple[str, List[str], int]], rate_hz: float, requests: int,
              top: int = 15) -> dict:
    """Per process, per stage and per frame: share of all samples and milliseconds per request."""
    total = sum(count for _, _, count in samples) or 1

    def entry(count: int) -> Dict[str, float]:
        return {"samples": count, "share": round(count / total, 4),
                "ms_per_request": round(count / rate_hz / max(1, requests) * 1000, 3)}

    per_process: Counter = Counter()
    per_stage: Counter = Counter()
    self_time: Dict[str, Counter] = defaultdict(Counter)
    inclusive: Dict[str, Counter] = defaultdict(Counter)
    for process, frames, count in samples:
        per_process[process] += count
        per_stage[stage_of(frames)] += count
        if frames:
            self_time[process][short(frames[-1])] += count
        for frame in {short(frame) for frame in frames}:
            inclusive[process][frame] += count
    return {
        "rate_hz": rate_hz, "requests": requests, "samples": total,
        "processes": {name: entry(count) for name, count in per_process.most_common()},
        "stages": {name: entry(count) for name, count in per_stage.most_common()},
        "top_self": [{"process": process, "frame": frame, **entry(count)}
                     for (process, frame), count in Counter({(process, frame): count
                                                            for process, frames in self_time.items()
                                                            for frame, count in frames.items()}).most_common(top)],
        "top_inclusive": {process: [{"frame": frame, **entry(count)} for frame, count in frames.most_common(top)]
                          for process, frames in inclusive.items()},
    }


def format_summary(summary: dict, latency: Dict[str, float]) -> str:
    lines = [f"{summary['requests']} requests from 1 client, p50 {latency['p50_ms']:.2f} ms while sampled at "
             f"{summary['rate_hz']:.0f} Hz; {summary['samples']} samples of non-idle threads", "",
             f"{'process':<40}{'share':>8}{'ms/request':>12}"]
    lines += [f"{name:<40}{value['share'] * 100:>7.1f}%{value['ms_per_request']:>12.3f}"
              for name, value in summary["processes"].items()]
    lines += ["", f"{'stage':<52}{'share':>8}{'ms/request':>12}"]
    lines += [f"{name:<52}{value['share'] * 100:>7.1f}%{value['ms_per_request']:>12.3f}"
              for name, value in summary["stages"].items()]
    lines += ["", f"{'top frames (self time)':<84}{'share':>8}{'ms/request':>12}"]
    lines += [f"{row['process'] + ': ' + row['frame']:<84.84}{row['share'] * 100:>7.1f}%{row['ms_per_request']:>12.3f}"
              for row in summary["top_self"]]
    return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------------------------

def _model(name: str, directory: Path) -> Path:
    if name == "digits":
        from bench.material import DIGITS_MODEL

        return DIGITS_MODEL
    return build_model(name, directory)


def _record(py_spy: str, pid: int, seconds: int, rate_hz: int, output: Path, subprocesses: bool) -> subprocess.Popen:
    command = [py_spy, "record", "--pid", str(pid), "--rate", str(rate_hz), "--duration", str(seconds),
               "--format", "raw", "--output", str(output), "--nonblocking", "--function"]
    return subprocess.Popen(command + (["--subprocesses"] if subprocesses else []), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _finish(recorder: subprocess.Popen, output: Path, timeout_s: float) -> None:
    said, _ = recorder.communicate(timeout=timeout_s)
    if recorder.returncode or not output.is_file():
        raise RuntimeError(f"py-spy failed ({recorder.returncode}): {said.decode(errors='replace')[-2000:]}")


def run(model_name: str, seconds: int, rate_hz: int, workers: str, py_spy: str, out_dir: Path,
        stamp: str, warm_up: int = 30) -> dict:
    from bench.harness import GGICRuntime, connector_entry

    env = offline_env(os.environ)
    with tempfile.TemporaryDirectory(prefix="ggic-profile-") as scratch:
        model = _model(model_name, Path(scratch) / model_name)
        body = test_image(Path(scratch)).read_bytes()  # any model resizes it to its input shape
        runtime = GGICRuntime(Path(scratch) / "state",
                              [connector_entry(model, service_name=SERVICE, connector_id=SERVICE,
                                               LocalInferenceServiceMemoryLimitKB=str(BENCH_LIMIT_KB))],
                              base_env=env, run_args=["--workers", workers])
        service_out, client_out = out_dir / f"profile-{stamp}.txt", out_dir / f"profile-{stamp}-client.txt"
        with runtime, _environment(runtime.client_env):
            invoke = _invoke_function(body)
            for _ in range(warm_up):
                invoke()
            status = runtime.connector_status()["supervisor"]
            recorders = [(_record(py_spy, runtime.process.pid, seconds, rate_hz, service_out, True), service_out),
                         (_record(py_spy, os.getpid(), seconds, rate_hz, client_out, False), client_out)]
            time.sleep(1.0)  # py-spy attaches (and finds the subprocesses) before the window opens
            latencies: List[float] = []
            ends = time.perf_counter() + max(1.0, seconds - 2.0)  # inside the sampled window
            while time.perf_counter() < ends:
                began = time.perf_counter()
                invoke()
                latencies.append(time.perf_counter() - began)
            for recorder, output in recorders:
                _finish(recorder, output, seconds + 60)
    samples = parse_collapsed(service_out.read_text().splitlines(), "ggic run")
    samples += parse_collapsed(client_out.read_text().splitlines(), "client (ML SDK)")
    summary = summarize(samples, rate_hz, len(latencies))
    return {"date": stamp, "model": model_name, "workers": workers, "layout": status.get("layout"),
            "latency": latency_summary(latencies), "summary": summary,
            "raw": {"service": str(service_out), "client": str(client_out)}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="resnet18 (default), efficientnet-lite0 or digits")
    parser.add_argument("--seconds", type=int, default=15, help="sampled window (default 15)")
    parser.add_argument("--rate", type=int, default=250, help="samples a second per thread (default 250)")
    parser.add_argument("--workers", default="1", help="ggic run --workers (default 1)")
    parser.add_argument("--py-spy", help="the py-spy executable (default: on PATH, or /tmp/prof/bin/py-spy)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="default bench/results/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    py_spy = find_py_spy(args.py_spy)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report = run(args.model, max(3, args.seconds), args.rate, args.workers, py_spy, args.out_dir, stamp)
    json_path = args.out_dir / f"profile-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2))
    print(format_summary(report["summary"], report["latency"]))
    print(f"JSON: {json_path}\nraw stacks (flamegraph input): {report['raw']['service']}, {report['raw']['client']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
