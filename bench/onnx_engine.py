"""Would ONNX Runtime be a faster engine than MXNet for the same SageMaker artifact? (issue 6, item 4)

The criterion: an ONNX Runtime engine, converted from the same SageMaker artifact by our own converter
(`connector.image_classification.onnx_export`, numpy only), is worth offering only if it is at least 1.2x faster at batch 1
than the MXNet engine with the same top-1 and max |dp| <= 1e-4 on real photos.

For two models, a ResNet-18 at 3x224x224 (random weights: `examples.models.resnet.save_random_model`) and the
real EfficientNet-Lite0 (`examples.models.efficientnet_lite0.build`), this script

1. converts the artifact to ONNX (`connector.image_classification.onnx_export.convert`, as the connector's model
cache does; docs/conversion.md); 2. loads the MXNet engine exactly as the connector does
(`connector.image_classification.model.ClassifierModel`) and an ONNX Runtime session on the CPU execution provider
with the same thread count (`connector.image_classification.model.engine_threads`); 3. feeds both the same tensors
(`connector.image_classification.imaging.preprocess` of the real photos in `bench/material.py`) and compares the
probability vectors: top-1 agreement and max |dp| over all classes and photos; 4. times batch-1 `predict` (tensor in,
probability vector out, conversions included, as a request pays them) of both engines in the same process, in
alternating blocks of back-to-back requests with a rest between blocks (see `measure`), after warm-up.

    python -m bench.onnx_engine [--runs 50] [--block 5] [--no-spinning] [--json PATH] [--models
    resnet18,efficientnet-lite0]

Prints a table and writes JSON (default bench/results/, which git ignores). Needs the optional packages
`onnx` and `onnxruntime` (see install/constraints.txt); exits 2 with a message when they are missing.
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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests` (a namespace package) and `examples` live at the repository root
    sys.path.insert(0, str(REPO))

from connector.image_classification.artifact import ModelArtifact, locate, read_model_shapes
from connector.image_classification.model import DEFAULT_IMAGE_SHAPE, InputShape, engine_threads, import_mxnet
from connector.image_classification.onnx_export import convert
from connector.image_classification.onnx_model import onnx_session

log = logging.getLogger("bench.onnx_engine")

RESULTS_DIR = REPO / "bench" / "results"
MODELS = ("resnet18", "efficientnet-lite0")
SPEEDUP_CRITERION = 1.2
BLOCK_PAUSE_S = 0.2
MAX_ABS_DIFF_CRITERION = 1e-4


class OnnxClassifier:
    """An ONNX Runtime session on a converted file with the MXNet engine's `predict` interface."""

    def __init__(self, onnx_path: Path, threads: int, spinning: bool = True) -> None:
        self.threads = threads
        self.session = onnx_session(Path(onnx_path), threads, spinning)
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, tensor: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(tensor, dtype=np.float32)
        return self.session.run(None, {self.input_name: data})[0][0].astype(np.float32, copy=False)


# --- measurement -------------------------------------------------------------------------------------------------

@dataclass
class ModelResult:
    model: str
    input_shape: str
    num_classes: int
    conversion: Optional[dict]
    conversion_error: Optional[str] = None
    photos: int = 0
    top1_agree: int = 0
    max_abs_diff: Optional[float] = None
    worst_photo: Optional[str] = None
    mxnet_ms: Dict[str, float] = field(default_factory=dict)
    onnxruntime_ms: Dict[str, float] = field(default_factory=dict)
    speedup_p50: Optional[float] = None
    meets_criterion: Optional[bool] = None


def _stats(samples: Sequence[float]) -> Dict[str, float]:
    values = np.asarray(samples) * 1000.0
    return {"p50": round(float(np.percentile(values, 50)), 3), "p90": round(float(np.percentile(values, 90)), 3),
            "mean": round(float(values.mean()), 3), "min": round(float(values.min()), 3), "n": int(values.size)}


def build_model(name: str, dest: Path) -> Path:
    if name == "resnet18":
        from examples.models.resnet import save_random_model

        return save_random_model(dest, num_classes=1000, num_layers=18, image_shape="3,224,224", seed=0)
    if name == "efficientnet-lite0":
        from examples.models.efficientnet_lite0 import build

        return build(dest)
    raise ValueError(f"unknown model {name!r}: choose from {', '.join(MODELS)}")


def input_shape(artifact: ModelArtifact) -> InputShape:
    shape = read_model_shapes(artifact.shapes_path) or DEFAULT_IMAGE_SHAPE
    return InputShape(*shape, source=str(artifact.shapes_path))


def measure(name: str, model_dir: Path, work: Path, threads: int, runs: int, warmup: int, spinning: bool,
            mx, block: int = 5) -> ModelResult:
    from bench.material import photos
    from connector.image_classification.imaging import preprocess
    from connector.image_classification.model import ClassifierModel

    artifact = locate(model_dir)
    shape = input_shape(artifact)
    mxnet_engine = ClassifierModel(artifact, shape, threads=threads)
    result = ModelResult(name, str(shape), mxnet_engine.num_classes, None)
    try:
        conversion = convert(artifact.symbol_path, artifact.params_path, (shape.channels, shape.height, shape.width),
                             work / f"{name}.onnx")
    except Exception as exc:  # report precisely why, keep going with the other model
        result.conversion_error = f"{type(exc).__name__}: {exc}"
        log.error("%s: conversion failed: %s", name, result.conversion_error)
        return result
    result.conversion = asdict(conversion)
    ort_engine = OnnxClassifier(Path(conversion.onnx_path), threads, spinning)

    tensors = {photo: preprocess(body, content_type, shape.height, shape.width, shape.channels)
               for photo, (content_type, body) in photos().items()}
    worst = -1.0
    for photo, tensor in tensors.items():
        p_mx, p_ort = mxnet_engine.predict(tensor), ort_engine.predict(tensor)
        diff = float(np.max(np.abs(p_mx.astype(np.float64) - p_ort.astype(np.float64))))
        result.top1_agree += int(p_mx.argmax() == p_ort.argmax())
        if diff > worst:
            worst, result.worst_photo = diff, photo
        log.debug("%s %-12s top-1 mxnet %4d (%.4f) onnxruntime %4d (%.4f) max|dp| %.2e", name, photo,
                  p_mx.argmax(), p_mx.max(), p_ort.argmax(), p_ort.max(), diff)
    result.photos, result.max_abs_diff = len(tensors), worst

    engines = (("mxnet", mxnet_engine), ("onnxruntime", ort_engine))
    batch = list(tensors.values())
    for i in range(warmup):
        for _, engine in engines:
            engine.predict(batch[i % len(batch)])
    # Blocks of `block` back-to-back requests per engine (a busy connector), engines alternating block by block
    # and which goes first alternating round by round. The first request of a block is not counted, and the
    # engines rest between blocks: on 2 cores, threads still spinning after one engine's forward (ONNX
    # Runtime's pool, libgomp under MXNet) would otherwise steal the cores from the other engine's next forward.
    times: Dict[str, List[float]] = {"mxnet": [], "onnxruntime": []}
    rounds = -(-runs // block)
    for r in range(rounds):
        for label, engine in (engines if r % 2 == 0 else engines[::-1]):
            time.sleep(BLOCK_PAUSE_S)
            for i in range(block + 1):
                tensor = batch[(r * block + i) % len(batch)]
                started = time.perf_counter()
                engine.predict(tensor)
                if i:
                    times[label].append(time.perf_counter() - started)
    result.mxnet_ms, result.onnxruntime_ms = _stats(times["mxnet"]), _stats(times["onnxruntime"])
    result.speedup_p50 = round(result.mxnet_ms["p50"] / result.onnxruntime_ms["p50"], 3)
    result.meets_criterion = (result.speedup_p50 >= SPEEDUP_CRITERION and result.top1_agree == result.photos
                              and result.max_abs_diff <= MAX_ABS_DIFF_CRITERION)
    return result


def table(results: Sequence[ModelResult]) -> str:
    lines = [f"{'model':<18} {'input':<10} {'MXNet p50':>10} {'ORT p50':>9} {'speedup':>8} {'(min)':>13} {'top-1':>7} "
             f"{'max|dp|':>9}  criterion",
             "-" * 102]
    for r in results:
        if r.conversion_error:
            lines.append(f"{r.model:<18} {r.input_shape:<10} conversion failed: {r.conversion_error}")
            continue
        mins = f"{r.mxnet_ms['min']:.1f}/{r.onnxruntime_ms['min']:.1f}ms"
        lines.append(f"{r.model:<18} {r.input_shape:<10} {r.mxnet_ms['p50']:>8.2f}ms {r.onnxruntime_ms['p50']:>7.2f}ms "
                     f"{r.speedup_p50:>7.2f}x {mins:>13} {r.top1_agree:>3}/{r.photos:<3} {r.max_abs_diff:>9.2e}  "
                     f"{'met' if r.meets_criterion else 'not met'}")
    return "\n".join(lines)


def versions() -> Dict[str, str]:
    import mxnet
    import onnx
    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__, "mxnet": mxnet.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="timed forwards per engine and model")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--block", type=int, default=5, help="back-to-back timed requests per engine turn")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-spinning", action="store_true",
                        help="ONNX Runtime worker threads sleep instead of spinning between runs")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results (default bench/results/)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for noisy in ("examples", "connector", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    threads = engine_threads()
    mx = import_mxnet(threads)  # before anything else imports mxnet: OMP_NUM_THREADS is read once
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        print(f"bench.onnx_engine needs onnx and onnxruntime: {exc}. Install them with\n"
              "  .venv/bin/pip install -c install/constraints.txt -e '.[onnx]'", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.WARNING)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    load_before = os.getloadavg()
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ggic-onnx-") as tmp:
        for name in names:
            model_dir = build_model(name, Path(tmp) / name)
            results.append(measure(name, model_dir, Path(tmp) / "onnx", threads, args.runs, args.warmup,
                                   not args.no_spinning, mx, args.block))
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    print(f"engine threads: {threads} (MXNet OMP_NUM_THREADS and ONNX Runtime intra_op_num_threads); "
          f"{args.runs} batch-1 runs per engine in alternating blocks of {args.block}, after {args.warmup} warm-up; "
          f"ORT spinning {'off' if args.no_spinning else 'on'}")
    print(table(results))
    print(f"criterion: speedup >= {SPEEDUP_CRITERION}x, same top-1 on every photo, max|dp| <= "
          f"{MAX_ABS_DIFF_CRITERION:g}; {elapsed:.1f} s in all; 1-min load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after (on a shared machine a load near the core count makes the timings noisy)")
    report = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "cpus": len(os.sched_getaffinity(0)), "threads": threads, "runs": args.runs, "warmup": args.warmup,
              "block": args.block, "block_pause_s": BLOCK_PAUSE_S,
              "ort_spinning": not args.no_spinning, "versions": versions(),
              "criterion": {"speedup": SPEEDUP_CRITERION, "max_abs_diff": MAX_ABS_DIFF_CRITERION},
              "results": [asdict(r) for r in results], "seconds": round(elapsed, 1),
              "loadavg_before": load_before, "loadavg_after": load_after}
    path = args.json or RESULTS_DIR / f"onnx-engine-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
