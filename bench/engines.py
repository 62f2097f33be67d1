"""`make bench-engines`: the three inference engines side by side in one run, as the connector loads them.

For a ResNet-18 at 3x224x224 (random weights, `examples.models.resnet.save_random_model`) and the demo's
EfficientNet-Lite0 (`examples.models.efficientnet_lite0.build`), this script loads each engine exactly as the worker
does (`connector.image_classification.engines.engine_class`: MXNet's `ClassifierModel`, ONNX Runtime's
`OnnxClassifierModel`, OpenCV's `OpenCvClassifierModel`, the last two on the ONNX file `cached_onnx` converts once),
with the same engine threads, and

1. feeds all three the same tensors (`imaging.preprocess` of the real photos in `bench/material.py`): top-1 agreement
   with MXNet and the largest |dp| against MXNet's probabilities, over all classes and photos;
2. times batch-1 `predict` (tensor in, probabilities out, as a request pays it) in alternating blocks of
   back-to-back requests, the engines' order rotating block by block, with a rest between blocks (see
   bench/onnx_engine.py `measure` for why), after warm-up;
3. notes the one-time conversion (artifact -> ONNX) and each engine's load time from a warm cache;
4. unless `--no-service`, runs the real service once per engine (`ggic run --engine X`, bench/serving.py `service`,
   a restart after the first start converted the model): 1-client end-to-end latency over the real IPC, the cold
   start of a restart to its first answer, and the worker's peak RSS.

    python -m bench.engines [--runs 40] [--block 5] [--models resnet18,efficientnet-lite0] [--no-service]
                            [--json PATH]

Prints a table and writes JSON (default bench/results/engines-<time>.json); docs/engines.md has the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests` (a namespace package) and `examples` live at the repository root
    sys.path.insert(0, str(REPO))

from bench.onnx_engine import BLOCK_PAUSE_S, MODELS, _stats, build_model, input_shape
from connector.image_classification.artifact import locate
from connector.image_classification.engines import ENGINE_MODULES, ENGINES, importable
from connector.image_classification.model import engine_threads, import_mxnet

log = logging.getLogger("bench.engines")

RESULTS_DIR = REPO / "bench" / "results"


def load_engine(name: str, artifact, shape, threads: int, cache: Path):
    from connector.image_classification.engines import engine_class

    cls = engine_class(name)
    if name == "mxnet":
        return cls(artifact, shape, threads=threads)
    return cls(artifact, shape, threads=threads, cache_dir=cache)


def measure(model: str, model_dir: Path, cache: Path, engines: Sequence[str], threads: int, runs: int, warmup: int,
            block: int) -> dict:
    from bench.material import photos
    from connector.image_classification.imaging import preprocess
    from connector.image_classification.onnx_model import cached_onnx

    artifact = locate(model_dir)
    shape = input_shape(artifact)
    result: dict = {"model": model, "input_shape": str(shape), "engines": {}}
    began = time.perf_counter()
    cached_onnx(artifact, (shape.channels, shape.height, shape.width), cache)
    result["conversion_s"] = round(time.perf_counter() - began, 2)
    loaded = {}
    for name in engines:
        began = time.perf_counter()
        loaded[name] = load_engine(name, artifact, shape, threads, cache)
        result["engines"][name] = {"load_s": round(time.perf_counter() - began, 3)}
    result["num_classes"] = loaded["mxnet"].num_classes

    tensors = {photo: preprocess(body, content_type, shape.height, shape.width, shape.channels)
               for photo, (content_type, body) in photos().items()}
    reference = {photo: loaded["mxnet"].predict(t).astype(np.float64) for photo, t in tensors.items()}
    for name, engine in loaded.items():
        worst, top1 = 0.0, 0
        for photo, tensor in tensors.items():
            got = engine.predict(tensor).astype(np.float64)
            top1 += int(got.argmax() == reference[photo].argmax())
            worst = max(worst, float(np.max(np.abs(got - reference[photo]))))
        result["engines"][name].update(top1_agree=top1, photos=len(tensors), max_abs_diff=worst)

    batch = list(tensors.values())
    for i in range(warmup):
        for engine in loaded.values():
            engine.predict(batch[i % len(batch)])
    times: Dict[str, List[float]] = {name: [] for name in loaded}
    order = list(loaded)
    for r in range(-(-runs // block)):
        for name in order[r % len(order):] + order[:r % len(order)]:
            time.sleep(BLOCK_PAUSE_S)
            for i in range(block + 1):
                tensor = batch[(r * block + i) % len(batch)]
                started = time.perf_counter()
                loaded[name].predict(tensor)
                if i:  # the first of a block wakes the engine's threads: not counted
                    times[name].append(time.perf_counter() - started)
    base = _stats(times["mxnet"])["p50"]
    for name in loaded:
        stats = _stats(times[name])
        result["engines"][name].update(ms=stats, speedup_vs_mxnet_p50=round(base / stats["p50"], 3))
    return result


def through_the_service(model_dir: Path, engines: Sequence[str], requests: int) -> Dict[str, dict]:
    """`ggic run --engine X` for each engine, one after the other, on the same model and photo: a first start (which
    converts the model into the state's cache, as a device's first start does), then a restart measured from launch
    to its first answer, then `requests` back-to-back 1-client requests over the real IPC."""
    from bench.harness import GGICRuntime, connector_entry
    from bench.load import _environment, offline_env
    from bench.serving import BENCH_LIMIT_KB, SERVICE, _first_answer, _invoke_function, latency_summary, test_image

    env = offline_env(os.environ)
    found: Dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ggic-engines-service-") as scratch:
        body = test_image(Path(scratch)).read_bytes()
        for name in engines:
            runtime = GGICRuntime(Path(scratch) / name, [connector_entry(
                model_dir, service_name=SERVICE, connector_id=SERVICE,
                LocalInferenceServiceMemoryLimitKB=str(BENCH_LIMIT_KB))], base_env=env, run_args=["--engine", name])
            with runtime:
                pass
            runtime.create_definition()
            launched = time.perf_counter()
            runtime.start(expect_ready=False)
            try:
                cold = _first_answer(runtime, body, launched)
                with _environment(runtime.client_env):
                    invoke = _invoke_function(body)
                    latencies = []
                    for _ in range(requests):
                        began = time.perf_counter()
                        invoke()
                        latencies.append(time.perf_counter() - began)
                worker = (runtime.connector_status()["supervisor"] or {}).get("worker") or {}
            finally:
                runtime.stop()
            found[name] = {**latency_summary(latencies), "cold_start_s": round(cold, 3),
                           "worker_rss_mb": round(worker.get("peak_rss_kb", 0) / 1024, 1)}
    return found


def table(results: Sequence[dict]) -> str:
    lines = [f"{'model':<18} {'engine':<12} {'p50':>8} {'p90':>8} {'min':>8} {'vs MXNet':>9} {'top-1':>7} "
             f"{'max|dp|':>9} {'load':>7}", "-" * 94]
    for r in results:
        for name, e in r["engines"].items():
            lines.append(f"{r['model']:<18} {name:<12} {e['ms']['p50']:>6.2f}ms {e['ms']['p90']:>6.2f}ms "
                         f"{e['ms']['min']:>6.2f}ms {e['speedup_vs_mxnet_p50']:>8.2f}x {e['top1_agree']:>3}/"
                         f"{e['photos']:<3} {e['max_abs_diff']:>9.2e} {e['load_s']:>6.2f}s")
        lines.append(f"{'':<18} (conversion to ONNX, once per artifact: {r['conversion_s']:.1f} s)")
    served = [r for r in results if r.get("service")]
    if served:
        lines += ["", f"{'through ggic run':<18} {'engine':<12} {'1-client p50':>12} {'p99':>9} {'vs MXNet':>9} "
                      f"{'cold start':>11} {'worker RSS':>11}", "-" * 94]
        for r in served:
            base = r["service"]["mxnet"]["p50_ms"]
            for name, e in r["service"].items():
                lines.append(f"{r['model']:<18} {name:<12} {e['p50_ms']:>10.2f}ms {e['p99_ms']:>7.2f}ms "
                             f"{base / e['p50_ms']:>8.2f}x {e['cold_start_s']:>10.2f}s {e['worker_rss_mb']:>8.0f} MB")
    return "\n".join(lines)


def versions() -> Dict[str, str]:
    import cv2
    import mxnet
    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__, "mxnet": mxnet.__version__,
            "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="timed forwards per engine and model")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--block", type=int, default=5, help="back-to-back timed requests per engine turn")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-service", action="store_true", help="skip the end-to-end runs through `ggic run`")
    parser.add_argument("--service-requests", type=int, default=40, help="1-client requests per engine")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (default bench/results/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    threads = engine_threads()
    import_mxnet(threads)  # before anything else imports mxnet: OMP_NUM_THREADS is read once
    missing = [ENGINE_MODULES[name] for name in ENGINES if not importable(ENGINE_MODULES[name])]
    if missing or not importable("onnx"):
        print(f"bench.engines needs all three engines and the converter: {', '.join(missing + ['onnx'])} missing. "
              "Install them with\n  .venv/bin/pip install -c install/constraints.txt -e '.[onnx]'", file=sys.stderr)
        return 2

    load_before = os.getloadavg()
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="ggic-engines-") as tmp:
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            model_dir = build_model(name, Path(tmp) / name)
            results.append(measure(name, model_dir, Path(tmp) / "cache", ENGINES, threads, args.runs, args.warmup,
                                   args.block))
            if not args.no_service:
                results[-1]["service"] = through_the_service(model_dir, ENGINES, args.service_requests)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    print(f"engine threads: {threads}; {args.runs} batch-1 forwards per engine in rotating blocks of {args.block}, "
          f"after {args.warmup} warm-up; max|dp| and top-1 against MXNet on {results[0]['engines']['mxnet']['photos']} "
          f"real photos")
    print(table(results))
    print(f"{elapsed:.1f} s in all; 1-min load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"(a load near the core count makes the timings noisy)")
    report = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "machine": platform.machine(), "cpus": len(os.sched_getaffinity(0)), "threads": threads,
              "runs": args.runs, "warmup": args.warmup, "block": args.block, "block_pause_s": BLOCK_PAUSE_S,
              "versions": versions(), "results": results, "seconds": round(elapsed, 1),
              "loadavg_before": load_before, "loadavg_after": load_after}
    path = args.json or RESULTS_DIR / f"engines-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
