"""How long the MXNet-free ONNX converter takes, and what the verified cache costs on a later start (docs/conversion.md).

For random-weight SageMaker ResNet-18, -50 and -152 at 3x224x224 (`examples.models.resnet.save_random_model`) and
the demo's real EfficientNet-Lite0 (`examples.models.efficientnet_lite0.build`), in one run:

- `convert_s`: `onnx_export.convert` in this process (read params, translate, write), best and median of `--runs`;
- `first_load_s`: `onnx_cache.cached_onnx` into an empty cache: hashing the artifact, the conversion in its child
  Python, hashing the result, the sidecar (what the first start of a connector pays);
- `verified_load_s`: `cached_onnx` again with the entry in place (what every later start pays: both hashes);
- the params and ONNX file sizes.

    python -m bench.conversion [--runs 3] [--models resnet18,resnet50,resnet152,efficientnet-lite0] [--json PATH]

Prints a table and writes JSON (default bench/results/, which git ignores).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `examples` lives at the repository root
    sys.path.insert(0, str(REPO))

from connector.image_classification.artifact import locate  # noqa: E402
from connector.image_classification.onnx_cache import cached_onnx, entry_paths  # noqa: E402
from connector.image_classification.onnx_export import CONVERTER_VERSION, convert  # noqa: E402

log = logging.getLogger("bench.conversion")

RESULTS_DIR = REPO / "bench" / "results"
MODELS = ("resnet18", "resnet50", "resnet152", "efficientnet-lite0")


def build(name: str, dest: Path) -> Path:
    if name == "efficientnet-lite0":
        from examples.models.efficientnet_lite0 import build as build_efficientnet

        return build_efficientnet(dest)
    from examples.models.resnet import save_random_model

    return save_random_model(dest, 1000, int(name[len("resnet"):]), "3,224,224")


def measure(name: str, model_dir: Path, work: Path, runs: int) -> Dict[str, object]:
    artifact = locate(model_dir)
    shape = (3, 224, 224)
    times: List[float] = []
    for run in range(runs):
        started = time.perf_counter()
        conversion = convert(artifact.symbol_path, artifact.params_path, shape, work / f"{name}-{run}.onnx")
        times.append(time.perf_counter() - started)
        os.unlink(conversion.onnx_path)
    cache = work / f"cache-{name}"
    started = time.perf_counter()
    onnx_path = cached_onnx(artifact, shape, cache)
    first = time.perf_counter() - started
    verified = []
    for _ in range(runs):
        started = time.perf_counter()
        again = cached_onnx(artifact, shape, cache)
        verified.append(time.perf_counter() - started)
        assert again == onnx_path
    sidecar = json.loads(entry_paths(artifact, shape, cache)[1].read_text())
    return {"model": name, "params_mb": round(artifact.params_path.stat().st_size / 1e6, 1),
            "onnx_mb": round(onnx_path.stat().st_size / 1e6, 1), "nodes": conversion.nodes,
            "convert_s": {"min": round(min(times), 3), "median": round(statistics.median(times), 3)},
            "first_load_s": round(first, 3), "child_convert_s": sidecar["seconds"],
            "verified_load_s": {"min": round(min(verified), 3), "median": round(statistics.median(verified), 3)}}


def table(results: List[Dict[str, object]]) -> str:
    lines = [f"{'model':<20}{'params MB':>10}{'ONNX MB':>9}{'nodes':>7}{'convert s (min/med)':>21}"
             f"{'first load s':>14}{'verified load s':>17}"]
    for r in results:
        convert_s, verified = r["convert_s"], r["verified_load_s"]
        lines.append(f"{r['model']:<20}{r['params_mb']:>10}{r['onnx_mb']:>9}{r['nodes']:>7}"
                     f"{convert_s['min']:>12.2f} / {convert_s['median']:<6.2f}{r['first_load_s']:>14.2f}"
                     f"{verified['median']:>17.2f}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Time the MXNet-free ONNX converter and the verified cache.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    results = []
    with tempfile.TemporaryDirectory(prefix="ggic-conversion-") as tmp:
        for name in args.models.split(","):
            if name not in MODELS:
                parser.error(f"unknown model {name}: choose from {', '.join(MODELS)}")
            model_dir = build(name, Path(tmp) / name)
            results.append(measure(name, model_dir, Path(tmp), args.runs))
    print(table(results))
    report = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "converter_version": CONVERTER_VERSION,
              "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
              "runs": args.runs, "models": results}
    path = args.json or RESULTS_DIR / f"conversion-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
