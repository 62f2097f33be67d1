"""`make bench`: the service against the bare engine, side by side in one run, on the same model and image.

For each model (a random-weight ResNet-18 at 224×224 and the demo's EfficientNet-Lite0), it measures:

* the bare engine (`bench.bare`): decode + preprocess + forward in one process, 1-image latency with every core's
  thread, and the throughput of each layout (processes × threads = cores);
* the service through `invoke_inference_service` with 1, 4 and 8 concurrent clients (p50/p99 latency, requests/s),
  in the default layout (1 worker with every core's engine threads) and with `--workers auto` (as many workers as
  the cores and the memory limit allow; measured once its layout is in place);
* the same with `--connector-hosting lambda`: the connector in a Lambda function process of its own, reached over
  the Lambda protocol, as a Greengrass core runs it (and as ggic did before it hosted connectors natively): what
  the seam between the core and the connector costs;
* the 1-client latency of the bare engine and of the service in both hostings, interleaved: batches of each in
  turn, several rounds, all three loaded at once, so that a noisy neighbour weighs on all of them alike (the
  targets are judged on these);
* cold start: from launching `ggic run` to the first answer;
* the peak RSS of the whole service (`ggic run` and every process under it).

It prints a table of ratios to the bare engine with the targets of the performance issue, and writes JSON and a
PNG plot under `bench/results/`. Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.load import RESULTS_DIR, _environment, offline_env  # noqa: E402
from connector.contract.processes import rss_kb

log = logging.getLogger("bench.serving")

SERVICE = "bench"
MODELS = ("resnet18", "efficientnet-lite0")
CLIENT_COUNTS = (1, 4, 8)
# The targets of the performance issue.
TARGET_P50_DELTA_MS = 1.0
TARGET_THROUGHPUT_RATIO = 0.95
TARGET_COLD_START_S = 1.5
TARGET_RSS_MB = 400.0
# Room for several MXNet workers: the bench measures speed, not the limit's enforcement.
BENCH_LIMIT_KB = 4_000_000


@dataclass
class Settings:
    latency_requests: int = 200
    window_s: float = 10.0
    load_margin_s: float = 8.0  # a layout's processes all load and warm up before its window opens

    @classmethod
    def quick(cls) -> "Settings":
        return cls(latency_requests=20, window_s=1.5, load_margin_s=4.0)


def cores() -> int:
    return len(os.sched_getaffinity(0))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency_summary(latencies_s: Sequence[float]) -> Dict[str, float]:
    return {"p50_ms": round(percentile(latencies_s, 0.5) * 1000, 3),
            "p99_ms": round(percentile(latencies_s, 0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(latencies_s) * 1000, 3), "n": len(latencies_s)}


# --- material ---------------------------------------------------------------------------------------------

def build_model(name: str, directory: Path) -> Path:
    if name == "resnet18":
        from examples.models.resnet import save_random_model

        return save_random_model(directory, num_classes=1000, num_layers=18, image_shape="3,224,224")
    if name == "efficientnet-lite0":
        from examples.models.efficientnet_lite0 import build

        return build(directory)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def test_image(directory: Path) -> Path:
    """A real photo (scikit-image's cat) as a JPEG of about 15 KB, like the issue's reference measurement."""
    import cv2
    from skimage import data

    rgb = cv2.resize(data.chelsea(), (300, 225), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    path = directory / "chelsea.jpg"
    path.write_bytes(encoded.tobytes())
    return path


# --- the bare engine ----------------------------------------------------------------------------------------

def _bare(model: Path, image: Path, threads: int, extra: List[str], env: Dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.bare", "--model", str(model), "--image", str(image),
                             "--threads", str(threads), *extra], cwd=REPO, env=env, stdout=subprocess.PIPE)


def _collect(process: subprocess.Popen, timeout: float) -> dict:
    out, _ = process.communicate(timeout=timeout)
    if process.returncode:
        raise RuntimeError(f"bench.bare exited with {process.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


def bare_engine(model: Path, image: Path, settings: Settings, env: Dict[str, str]) -> dict:
    """1-image latency with all cores' threads, and the throughput of every processes × threads layout."""
    n = cores()
    latency = _collect(_bare(model, image, n, ["--latency", str(settings.latency_requests)], env), 300)
    layouts = {}
    for processes in sorted({1, n} | {p for p in range(1, n + 1) if n % p == 0}):
        threads = n // processes
        start_at = time.time() + settings.load_margin_s
        running = [_bare(model, image, threads, ["--seconds", str(settings.window_s), "--start-at", str(start_at)],
                         env) for _ in range(processes)]
        done = sum(_collect(process, 300)["done"] for process in running)
        layouts[f"{processes}x{threads}"] = round(done / settings.window_s, 2)
    best = max(layouts, key=layouts.get)
    return {"latency": latency_summary(latency["latencies_s"]), "threads": n, "layouts_rps": layouts,
            "best_layout": best, "best_rps": layouts[best]}


# --- the service ------------------------------------------------------------------------------------------

class TreeRSS:
    """Samples the summed RSS of a process and all its descendants; keeps the peak."""

    def __init__(self, root_pid: int, interval_s: float = 0.05) -> None:
        self.root_pid = root_pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._interval_s = interval_s

    def __enter__(self) -> "TreeRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def tree(self) -> List[int]:
        children: Dict[int, List[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as stat:
                        ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def sample(self) -> int:
        total = sum(rss_kb(pid) or 0 for pid in self.tree())
        self.peak_kb = max(self.peak_kb, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()


def _invoke_function(body: bytes) -> Callable[[], bytes]:
    import greengrass_machine_learning_sdk as ml

    client = ml.client("inference")

    def invoke() -> bytes:
        response = client.invoke_inference_service(AlgoType="image-classification", ServiceName=SERVICE,
                                                   ContentType="image/jpeg", Body=body)
        return response["Body"].read()
    return invoke


def clients_run(body: bytes, clients: int, settings: Settings) -> dict:
    """`clients` threads, each with its own SDK client, send back to back for the window."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    gate = threading.Barrier(clients + 1)
    ends = [0.0]

    def client(number: int) -> None:
        invoke = _invoke_function(body)
        invoke()  # its connection is open before the window
        gate.wait()
        while time.perf_counter() < ends[0]:
            began = time.perf_counter()
            invoke()
            latencies[number].append(time.perf_counter() - began)

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    ends[0] = time.perf_counter() + settings.window_s + 0.5
    gate.wait()
    began = time.perf_counter()
    ends[0] = began + settings.window_s
    for thread in threads:
        thread.join(settings.window_s + 120)
    elapsed = time.perf_counter() - began
    every = [value for values in latencies for value in values]
    return {"clients": clients, "rps": round(len(every) / elapsed, 2), "latency": latency_summary(every)}


def service(model: Path, image: Path, settings: Settings, env: Dict[str, str], engine: str = "mxnet",
            workers: Union[int, str] = 1, hosting: str = "native") -> dict:
    from bench.harness import GGICRuntime, connector_entry

    body = image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="ggic-bench-") as state:
        runtime = GGICRuntime(Path(state), [connector_entry(model, service_name=SERVICE, connector_id=SERVICE,
                                                            LocalInferenceServiceMemoryLimitKB=str(BENCH_LIMIT_KB))],
                              base_env=env, run_args=["--engine", engine, "--workers", str(workers),
                                                      "--connector-hosting", hosting])
        if engine != "mxnet":  # convert once into the state's model cache, as a device's first start does;
            with runtime:      # the cold start measured below is then a restart's
                pass
        runtime.create_definition()
        launched = time.perf_counter()
        runtime.start(expect_ready=False)
        try:
            with TreeRSS(runtime.process.pid) as rss:
                first_answer_s = _first_answer(runtime, body, launched)
                if workers == "auto":  # the other workers start in the background: measure the layout in place
                    _wait_for_layout(runtime)
                with _environment(runtime.client_env):
                    sequential = []
                    invoke = _invoke_function(body)
                    for _ in range(settings.latency_requests):
                        began = time.perf_counter()
                        invoke()
                        sequential.append(time.perf_counter() - began)
                    concurrent = {str(n): clients_run(body, n, settings) for n in CLIENT_COUNTS if n > 1}
                rss.sample()
            engine = runtime.connector_status()["supervisor"] or {}  # none when hosted as a Lambda process
        finally:
            runtime.stop()
    return {"cold_start_s": round(first_answer_s, 3), "latency_1_client": latency_summary(sequential),
            "clients": concurrent, "peak_rss_mb": round(rss.peak_kb / 1024, 1),
            "worker_rss_mb": round((engine.get("worker") or {}).get("peak_rss_kb", 0) / 1024, 1),
            "layout": engine.get("layout")}


HOSTINGS = ("native", "lambda")


def interleaved_latency(model: Path, image: Path, settings: Settings, env: Dict[str, str],
                        rounds: int = 5) -> Dict[str, dict]:
    """1-client latency of the bare engine and of the service hosted natively and as a Lambda process, measured
    in turns (a batch of each per round) with all three loaded, so that each sees the same machine."""
    from bench.harness import GGICRuntime, connector_entry

    body = image.read_bytes()
    batch = max(1, settings.latency_requests // rounds)
    latencies: Dict[str, List[float]] = {"bare": [], **{hosting: [] for hosting in HOSTINGS}}
    bare = subprocess.Popen([sys.executable, "-m", "bench.bare", "--model", str(model), "--image", str(image),
                             "--threads", str(cores()), "--serve"], cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    with tempfile.TemporaryDirectory(prefix="ggic-bench-") as state:
        runtimes = {hosting: GGICRuntime(Path(state) / hosting, [connector_entry(
            model, service_name=SERVICE, connector_id=SERVICE, LocalInferenceServiceMemoryLimitKB=str(BENCH_LIMIT_KB))],
            base_env=env, run_args=["--connector-hosting", hosting]) for hosting in HOSTINGS}
        try:
            json.loads(bare.stdout.readline())  # loaded and warmed up
            invokers = {}
            for hosting, runtime in runtimes.items():
                runtime.start()
                with _environment(runtime.client_env):
                    invokers[hosting] = _invoke_function(body)
                    for _ in range(5):
                        invokers[hosting]()  # connection open, worker warm
            for _ in range(rounds):
                bare.stdin.write(f"{batch}\n")
                bare.stdin.flush()
                latencies["bare"] += json.loads(bare.stdout.readline())
                for hosting, runtime in runtimes.items():
                    with _environment(runtime.client_env):
                        for _ in range(batch):
                            began = time.perf_counter()
                            invokers[hosting]()
                            latencies[hosting].append(time.perf_counter() - began)
        finally:
            bare.stdin.close()
            bare.wait(60)
            for runtime in runtimes.values():
                runtime.stop()
    return {name: latency_summary(values) for name, values in latencies.items()}


def _wait_for_layout(runtime, timeout_s: float = 120.0) -> None:
    """Until every worker of the supervisor's layout is ready with the layout's engine threads."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor = runtime.connector_status().get("supervisor") or {}
        layout, workers = supervisor.get("layout") or {}, supervisor.get("workers") or []
        if layout.get("workers") == len(workers) and all(
                w["state"] == "ready" and w.get("threads") == layout.get("threads") for w in workers):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the auto layout was not in place within {timeout_s:.0f} s")


def _first_answer(runtime, body: bytes, launched: float, timeout_s: float = 120.0) -> float:
    """Seconds from launching `ggic run` to the first answer, asking as soon as the runtime says where it is."""
    env_file = runtime.state_dir / "env"
    deadline = launched + timeout_s
    while not env_file.is_file():
        if time.perf_counter() > deadline or runtime.process.poll() is not None:
            raise RuntimeError(f"ggic run did not start:\n{runtime.output()}")
        time.sleep(0.005)
    with _environment(runtime.client_env):
        _invoke_function(body)()
    return time.perf_counter() - launched


# --- report -----------------------------------------------------------------------------------------------

def targets(bare: dict, served: dict, model: str, workers: Optional[dict] = None,
            interleaved: Optional[Dict[str, dict]] = None) -> Dict[str, dict]:
    """The issue's targets: latency of the default layout (1 worker; interleaved with the bare engine when
    measured so), throughput of the better layout."""
    if interleaved:
        delta = interleaved["native"]["p50_ms"] - interleaved["bare"]["p50_ms"]
    else:
        delta = served["latency_1_client"]["p50_ms"] - bare["latency"]["p50_ms"]
    ratio = max(served["clients"]["4"]["rps"], (workers or served)["clients"]["4"]["rps"]) / bare["best_rps"]
    result = {
        "p50_delta_ms": {"value": round(delta, 3), "target": f"<= {TARGET_P50_DELTA_MS}",
                         "met": delta <= TARGET_P50_DELTA_MS},
        "throughput_4_clients_ratio": {"value": round(ratio, 3), "target": f">= {TARGET_THROUGHPUT_RATIO}",
                                       "met": ratio >= TARGET_THROUGHPUT_RATIO},
        "peak_rss_mb": {"value": served["peak_rss_mb"], "target": f"<= {TARGET_RSS_MB:.0f}",
                        "met": served["peak_rss_mb"] <= TARGET_RSS_MB},
    }
    if model == "resnet18":
        result["cold_start_s"] = {"value": served["cold_start_s"], "target": f"<= {TARGET_COLD_START_S}",
                                  "met": served["cold_start_s"] <= TARGET_COLD_START_S}
    return result


def _variant_summary(run: dict, bare: dict) -> str:
    """One line for another layout or engine of the service, in ratios to the bare (MXNet) engine."""
    p50 = run["latency_1_client"]["p50_ms"]
    layout = run.get("layout") or {}
    chosen = f"{layout['workers']} x {layout['threads']}: " if layout.get("mode") == "auto" else ""
    return (f"{chosen}p50 1 client {p50:.2f} ms ({p50 / bare['latency']['p50_ms']:.2f}x the bare engine), "
            f"4 clients {run['clients']['4']['rps']:.1f}/s ({run['clients']['4']['rps'] / bare['best_rps']:.2f}x "
            f"the bare best), 8 clients {run['clients']['8']['rps']:.1f}/s, cold start {run['cold_start_s']:.2f} s, "
            f"peak RSS {run['peak_rss_mb']:.0f} MB")


def format_table(report: dict) -> str:
    lines = [f"ggic bench, {report['date']}, {report['host']['cpus']} cores, {report['host']['platform']}", ""]
    header = f"{'model':<20}{'measure':<34}{'bare engine':>14}{'service':>12}{'ratio':>9}"
    lines += [header, "-" * len(header)]
    for name, entry in report["models"].items():
        bare, served = entry["bare"], entry["service"]
        rows = [("p50 latency, 1 client (ms)", bare["latency"]["p50_ms"], served["latency_1_client"]["p50_ms"]),
                ("p99 latency, 1 client (ms)", bare["latency"]["p99_ms"], served["latency_1_client"]["p99_ms"])]
        for clients, run in served["clients"].items():
            rows.append((f"requests/s, {clients} clients", bare["best_rps"], run["rps"]))
            rows.append((f"p50 / p99 ms, {clients} clients", None,
                         f"{run['latency']['p50_ms']:.1f}/{run['latency']['p99_ms']:.1f}"))
        for label, left, right in rows:
            ratio = f"{right / left:.3f}" if isinstance(left, float) and isinstance(right, float) and left else ""
            left_text = "" if left is None else f"{left:.2f}"
            right_text = right if isinstance(right, str) else f"{right:.2f}"
            lines.append(f"{name:<20}{label:<34}{left_text:>14}{right_text:>12}{ratio:>9}")
        if entry.get("interleaved"):
            turns = entry["interleaved"]
            lines.append(f"{name:<20}interleaved 1-client p50 (ms): bare {turns['bare']['p50_ms']:.2f}, native "
                         f"{turns['native']['p50_ms']:.2f} (+{turns['native']['p50_ms'] - turns['bare']['p50_ms']:.2f}),"
                         f" lambda {turns['lambda']['p50_ms']:.2f} "
                         f"(+{turns['lambda']['p50_ms'] - turns['bare']['p50_ms']:.2f}); n = {turns['bare']['n']} each")
        layouts = ", ".join(f"{layout} {rps:.1f}/s" for layout, rps in bare["layouts_rps"].items())
        lines.append(f"{name:<20}bare layouts (processes x threads): {layouts}; best {bare['best_layout']}")
        lines.append(f"{name:<20}cold start {served['cold_start_s']:.2f} s, peak RSS {served['peak_rss_mb']:.0f} MB "
                     f"(worker {served['worker_rss_mb']:.0f} MB)")
        for key, label in (("service_auto", "--workers auto"), ("service_lambda", "--connector-hosting lambda"),
                           ("service_onnxruntime", "--engine onnxruntime")):
            if entry.get(key):
                lines.append(f"{name:<20}with {label}: {_variant_summary(entry[key], bare)}")
        for target, value in entry["targets"].items():
            lines.append(f"{name:<20}  target {target}: {value['value']} (want {value['target']}) "
                         f"{'met' if value['met'] else 'NOT met'}")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / (len(CLIENT_COUNTS) + 1)
    for index, name in enumerate(names):
        entry = report["models"][name]
        bars = [("bare " + entry["bare"]["best_layout"], entry["bare"]["best_rps"])]
        bars += [(f"{n} clients", entry["service"]["clients"][str(n)]["rps"]) for n in CLIENT_COUNTS if n > 1]
        for offset, (label, value) in enumerate(bars):
            throughput.bar(index + offset * width, value, width, label=label if index == 0 else None,
                           color=f"C{offset}")
        latency.bar(index - width / 2, entry["bare"]["latency"]["p50_ms"], width, color="C0",
                    label="bare engine" if index == 0 else None)
        latency.bar(index + width / 2, entry["service"]["latency_1_client"]["p50_ms"], width, color="C1",
                    label="service, 1 client" if index == 0 else None)
    for axis, title, unit in ((throughput, "throughput", "requests/s"), (latency, "p50 latency", "ms")):
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(names)
        axis.set_title(title)
        axis.set_ylabel(unit)
        axis.legend(fontsize=8)
    figure.suptitle(f"ggic bench {report['date']} ({report['host']['cpus']} cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run(models: Sequence[str], settings: Settings, engines: Sequence[str] = ("mxnet",)) -> dict:
    env = offline_env(os.environ)
    report: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "host": {"cpus": cores(), "python": platform.python_version(), "platform": platform.platform()},
                    "settings": vars(settings), "models": {}}
    with tempfile.TemporaryDirectory(prefix="ggic-bench-models-") as scratch:
        image = test_image(Path(scratch))
        report["image_bytes"] = image.stat().st_size
        for name in models:
            log.info("%s: building the model", name)
            model = build_model(name, Path(scratch) / name)
            log.info("%s: bare engine", name)
            bare = bare_engine(model, image, settings, env)
            log.info("%s: service", name)
            served = service(model, image, settings, env)
            entry = {"bare": bare, "service": served}
            if cores() > 1:
                log.info("%s: service with --workers auto", name)
                entry["service_auto"] = service(model, image, settings, env, workers="auto")
            log.info("%s: service with --connector-hosting lambda (the Lambda-protocol hop)", name)
            entry["service_lambda"] = service(model, image, settings, env, hosting="lambda")
            log.info("%s: 1-client latency, bare and both hostings in turns", name)
            entry["interleaved"] = interleaved_latency(model, image, settings, env)
            entry["targets"] = targets(bare, served, name, entry.get("service_auto"), entry["interleaved"])
            if "onnxruntime" in engines:
                log.info("%s: service with ONNX Runtime", name)
                entry["service_onnxruntime"] = service(model, image, settings, env, "onnxruntime")
            report["models"][name] = entry
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="small counts and short windows (for tests)")
    parser.add_argument("--onnxruntime", action="store_true",
                        help="also measure the service with the opt-in ONNX Runtime engine")
    parser.add_argument("--json", type=Path, help="where to write the JSON (default bench/results/...)")
    parser.add_argument("--plot", type=Path, help="where to write the PNG (default beside the JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    settings = Settings.quick() if args.quick else Settings()
    report = run([name.strip() for name in args.models.split(",") if name.strip()], settings,
                 ["mxnet"] + (["onnxruntime"] if args.onnxruntime else []))
    stamp = report["date"].replace("-", "").replace(":", "")
    json_path = args.json or RESULTS_DIR / f"serving-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    plot_path = plot(report, args.plot or json_path.with_suffix(".png"))
    print(format_table(report))
    print(f"JSON: {json_path}\nplot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
