"""What the input bounds cost, measured side by side in one run: `python -m bench.bounds`.

1. Extracting a real model archive (the digits model, and the EfficientNet-Lite0 model tarred here) with the bounded
   extractor (`connector.contract.archives`) and with `tarfile.extractall(filter="data")`, as before it.
2. A gzip bomb (1.5 GiB of zeros in a 1.6 MB model.tar.gz): how long the bounded extractor takes to refuse it and
   how much it wrote, beside the unbounded extraction of a smaller one (256 MiB).
3. The per-request header check in the connector's process (`DecodeBudget.check`) beside the decode it guards
   (`imaging.preprocess`), on real photos and a 12 MP JPEG.

Prints a table and writes JSON (default bench/results/bounds.json). Bounded: a few seconds, local files only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from bench.material import DIGITS_ARCHIVE, REPO, photos

RESULTS = REPO / "bench" / "results"


def _median_s(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _fresh(work: Path) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def _extract_old(archive: Path, destination: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(destination, filter="data")


def archives_rows(scratch: Path, repeat: int) -> List[Dict[str, object]]:
    from connector.contract import archives
    from examples.models.efficientnet_lite0 import build

    efficientnet = build(scratch / "efficientnet")
    efficientnet_archive = scratch / "efficientnet.tar.gz"
    with tarfile.open(efficientnet_archive, "w:gz") as tar:
        for path in sorted(efficientnet.iterdir()):
            tar.add(path, arcname=path.name)
    rows = []
    for name, archive in (("digits model.tar.gz", DIGITS_ARCHIVE), ("EfficientNet-Lite0 tar.gz", efficientnet_archive)):
        work = scratch / "out"
        bounded = _median_s(lambda: archives.extract(archive, _fresh(work)), repeat)
        old = _median_s(lambda: _extract_old(archive, _fresh(work)), repeat)
        written = archives.extract(archive, _fresh(work)).bytes_written
        rows.append({"what": f"extract {name} ({archive.stat().st_size / 2**20:.1f} MiB -> "
                             f"{written / 2**20:.1f} MiB)",
                     "bounded_s": bounded, "before_s": old, "ratio": bounded / old})
    return rows


def bomb_rows(scratch: Path) -> List[Dict[str, object]]:
    from connector.contract import archives

    from bench.hostile_archives import bomb_tar_gz

    big = bomb_tar_gz(scratch / "bomb.tar.gz", {"image-classification-0001.params": 1536})
    small = bomb_tar_gz(scratch / "bomb-256.tar.gz", {"image-classification-0001.params": 256})
    work = scratch / "out"
    began = time.perf_counter()
    try:
        archives.extract(big, _fresh(work))
        refused = ""
    except archives.ArchiveLimitError as exc:
        refused = str(exc)
    bounded_s = time.perf_counter() - began
    left = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    old_s = _median_s(lambda: _extract_old(small, _fresh(work)), 1)
    old_written = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    shutil.rmtree(work, ignore_errors=True)
    return [{"what": f"1.5 GiB bomb ({big.stat().st_size / 2**20:.1f} MiB): bounded refusal",
             "seconds": bounded_s, "left_on_disk": left, "refusal": refused},
            {"what": f"256 MiB bomb ({small.stat().st_size / 2**20:.2f} MiB): unbounded extraction",
             "seconds": old_s, "left_on_disk": old_written}]


def header_rows(repeat: int) -> List[Dict[str, object]]:
    import cv2
    import numpy as np

    from connector.image_classification import imaging
    from connector.image_classification.decode_budget import DecodeBudget

    budget = DecodeBudget(share_kb=500_000, model_kb=251_900)
    samples = {name: photos()[name] for name in ("china", "grace_hopper", "coffee")}
    side_w, side_h = 4000, 3000
    x = np.linspace(0, 255, side_w, dtype=np.float32)
    y = np.linspace(0, 255, side_h, dtype=np.float32)
    image = np.dstack([np.add.outer(y, x) / 2, np.tile(x, (side_h, 1)), np.tile(y[:, None], (1, side_w))])
    ok, encoded = cv2.imencode(".jpg", image.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    samples["12 MP JPEG"] = ("image/jpeg", encoded.tobytes())
    rows = []
    for name, (content_type, body) in samples.items():
        check = _median_s(lambda: budget.check(body, content_type), repeat * 20) * 1000
        decode = _median_s(lambda: imaging.preprocess(body, content_type, 224, 224), repeat) * 1000
        rows.append({"what": f"{name} ({len(body) / 1024:.0f} KB)", "check_ms": check, "decode_ms": decode,
                     "ratio": check / decode})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS / "bounds.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ggic-bench-bounds-") as scratch_dir:
        scratch = Path(scratch_dir)
        result = {"archives": archives_rows(scratch, args.repeat), "bombs": bomb_rows(scratch),
                  "headers": header_rows(args.repeat)}
    print(f"{'archive extraction':<58} {'bounded s':>10} {'before s':>10} {'ratio':>6}")
    for row in result["archives"]:
        print(f"{row['what']:<58} {row['bounded_s']:>10.4f} {row['before_s']:>10.4f} {row['ratio']:>6.2f}")
    print(f"\n{'gzip bomb':<58} {'seconds':>10} {'left MiB':>10}")
    for row in result["bombs"]:
        print(f"{row['what']:<58} {row['seconds']:>10.3f} {row['left_on_disk'] / 2**20:>10.1f}")
    print(f"\n{'request header check (connector process)':<58} {'check ms':>10} {'decode ms':>10} {'ratio':>6}")
    for row in result["headers"]:
        print(f"{row['what']:<58} {row['check_ms']:>10.4f} {row['decode_ms']:>10.2f} {row['ratio']:>6.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
