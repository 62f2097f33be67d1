"""The bare engine: decode + preprocess + MXNet forward in one process, no serving at all.

The yardstick of `bench.serving`: the same connector code that the inference worker runs (`imaging.preprocess`,
`model.ClassifierModel`), called directly in a loop. `python -m bench.bare --model DIR --image JPG --threads T`
prints one JSON line: sequential latencies (`--latency N`) or how many images it did in `--seconds S` starting at
`--start-at` (so several processes of a layout run side by side over the same window). With `--serve` it stays up
and, for each number N read from stdin, times N sequential images and prints their latencies as one JSON line (so
`bench.serving` can interleave batches of the bare engine with batches of the service).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True, help="engine (OpenMP) threads")
    parser.add_argument("--latency", type=int, default=0, help="time this many sequential images")
    parser.add_argument("--seconds", type=float, default=0.0, help="count images done in this window")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start of the window")
    parser.add_argument("--serve", action="store_true", help="time N images for each N read from stdin")
    args = parser.parse_args(argv)
    from connector.contract.environment import ENGINE_THREADS_ENV

    os.environ[ENGINE_THREADS_ENV] = str(args.threads)

    from connector.image_classification import artifact, imaging
    from connector.image_classification.model import ClassifierModel, resolve_input_shape

    found = artifact.locate(args.model)
    shape = resolve_input_shape(found, None)
    model = ClassifierModel(found, shape, "CPU")
    body = args.image.read_bytes()

    def one() -> None:
        model.predict(imaging.preprocess(body, "image/jpeg", shape.height, shape.width, shape.channels))

    for _ in range(5):
        one()
    def timed(count: int) -> List[float]:
        latencies: List[float] = []
        for _ in range(count):
            began = time.perf_counter()
            one()
            latencies.append(time.perf_counter() - began)
        return latencies

    if args.serve:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            print(json.dumps(timed(int(line))), flush=True)
        return 0
    result: dict = {"threads": args.threads, "pid": os.getpid()}
    if args.latency:
        result["latencies_s"] = timed(args.latency)
    if args.seconds:
        time.sleep(max(0.0, args.start_at - time.time()))
        done, ends = 0, time.perf_counter() + args.seconds
        while time.perf_counter() < ends:
            one()
            done += 1
        result["done"] = done
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
