"""Overload: goodput of the connector at 2x and 4x its measured capacity, with a short timeout.

Why: a service whose timeouts kill healthy workers, or whose queue serves only requests that can no longer be
answered in time, collapses under overload (issue 16, finding 1: with LocalInferenceServiceTimeoutSeconds=1 and
24 clients, 5 of 722 requests answered, the worker killed 5 times). Goodput, the answers that reach their caller
within the timeout per second, must stay near capacity however much is offered; what cannot be served is refused
early (busy) or timed out, each request gets exactly one answer, and no worker is killed.

    python -m bench.overload [--timeout 1] [--seconds 20] [--factors 2,4] [--side 2400] [--workers 1]
                             [--connector-hosting native|lambda] [--json PATH]

First the capacity: the answers per second of the service kept busy by one client per worker, each sending its
next request as soon as the last is answered (so none waits, and none is refused). Then, for each factor, requests
are sent open loop (at fixed intervals, as independent Lambdas would, whatever the service answers) at factor x
that capacity for `--seconds`. Then the capacity again: goodput is compared with the mean of the two (a machine
shared with other work changes speed). Busy answers are counted, and among them those refused at once on arrival.
Every request carries one of a few large JPEGs of real photographs (so the decode makes a service time of a
fraction of a second, as the 12 MP photos of finding 1), each with a different answer, measured first: an answer
that is not its own image's is counted as misrouted. Prints a table and writes JSON (default
bench/results/overload-*.json).
Loopback only, no AWS credentials, bounded in time; exits 1 when a request is lost or misrouted, or a worker was
killed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import queue
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harness import GGICRuntime, connector_entry  # noqa: E402
from bench.load import _answered_by_runtime, _environment, go_offline, offline_env  # noqa: E402
from bench.material import DIGITS_MODEL  # noqa: E402

log = logging.getLogger("bench.overload")

SERVICE_NAME = "overload"
RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_SIDE = 2400
IMAGES = 4
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
CAPACITY_S = 8.0
ERROR_PAUSE_S = 0.1


# --- material -------------------------------------------------------------------------------------------------

def large_jpegs(side: int, count: int = IMAGES) -> List[bytes]:
    """`count` real photographs (bench/material.py), each scaled to side x side and sent as a JPEG (quality 85):
    the decode of side*side*3 bytes is most of a request's service time, and each photo has its own answer."""
    import cv2

    from bench.material import photo_files

    images = []
    for name in PHOTOS[:count]:
        _, path = photo_files()[name]
        photo = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (side, side), interpolation=cv2.INTER_CUBIC)
        ok, encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        images.append(encoded.tobytes())
    return images


# --- one request ----------------------------------------------------------------------------------------------

@dataclass
class Request:
    image: int
    planned: float                      # time.monotonic() it was due
    sent: Optional[float] = None
    latency_s: Optional[float] = None
    body: Optional[str] = None          # the answer
    error: Optional[str] = None         # an error answer (busy, timeout, ...)
    lost: Optional[str] = None          # no answer at all

    @property
    def kind(self) -> str:
        """answered / late / busy / timeout / error / lost / unsent."""
        if self.sent is None:
            return "unsent"
        if self.lost is not None:
            return "lost"
        if self.body is not None:
            return "answered"
        text = (self.error or "").lower()
        if "busy" in text:
            return "busy"
        if "timed out" in text or "timeoutseconds" in text or "timeout" in text:
            return "timeout"
        return "error"


def send(client, request: Request, images: Sequence[bytes]) -> None:
    """One invocation through the ML SDK; every outcome is recorded on `request`."""
    import greengrass_machine_learning_sdk as ml

    request.sent = time.monotonic()
    try:
        response = client.invoke_inference_service(AlgoType="image-classification", ServiceName=SERVICE_NAME,
                                                   ContentType="image/jpeg", Body=images[request.image])
        request.body = response["Body"].read().decode("utf-8", errors="replace")
    except ml.GreengrassInferenceException as error:
        request.error = f"{type(error).__name__}: {error}"[:400]
    except Exception as error:  # noqa: BLE001 - every failure is counted
        if isinstance(error, ml.GreengrassDependencyException) and _answered_by_runtime(error):
            request.error = f"{type(error).__name__}: {error}"[:400]
        else:
            request.lost = f"{type(error).__name__}: {error}"[:400]
    request.latency_s = time.monotonic() - request.sent


# --- the loads ------------------------------------------------------------------------------------------------

def closed_loop(clients: int, seconds: float, images: Sequence[bytes], requests: int = 0) -> List[Request]:
    """`clients` callers, each sending its next request when the last is answered, for `seconds` (or, given
    `requests`, until each has sent that many)."""
    import greengrass_machine_learning_sdk as ml

    done: List[Request] = []
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def caller(number: int) -> None:
        client = ml.client("inference")
        sent = 0
        while (sent < requests) if requests else (time.monotonic() < until):
            request = Request((number + sent) % len(images), time.monotonic())
            send(client, request, images)
            sent += 1
            with lock:
                done.append(request)
            if request.body is None:
                time.sleep(ERROR_PAUSE_S)  # a refused caller waits a little, as a sane client does

    threads = [threading.Thread(target=caller, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120 + 30 * requests)
    return done


def open_loop(rate: float, seconds: float, timeout_s: float, images: Sequence[bytes]) -> List[Request]:
    """Requests due at fixed intervals of 1/`rate` for `seconds`, each sent by an idle caller of a pool big enough
    for every request that may be out at once (each is answered within its timeout)."""
    import greengrass_machine_learning_sdk as ml

    count = max(1, int(rate * seconds))
    start = time.monotonic() + 0.2
    requests = [Request(number % len(images), start + number / rate) for number in range(count)]
    due: "queue.Queue[Optional[Request]]" = queue.Queue()
    callers = max(4, math.ceil(rate * (timeout_s + 1.0)) + 2)

    def caller() -> None:
        client = ml.client("inference")
        while True:
            request = due.get()
            if request is None:
                return
            send(client, request, images)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for request in requests:
        delay = request.planned - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        due.put(request)
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join(timeout_s + 120)
    return requests


# --- the verdict ----------------------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    offered_per_s: float
    seconds: float
    requests: int
    answered_in_time: int
    answered_late: int
    busy: int
    busy_at_once: int                   # of them, refused on arrival by the runtime's queue (HTTP 429)
    timeouts: int
    other_errors: int
    lost: int
    unsent: int
    misrouted: int
    worker_kills: int
    goodput_per_s: float
    p50_ms: Optional[float]
    p99_ms: Optional[float]
    send_lag_p99_ms: Optional[float]
    examples: Dict[str, str] = field(default_factory=dict)


def judge(name: str, requests: Sequence[Request], seconds: float, timeout_s: float, expected: Dict[int, str],
          kills: int) -> Phase:
    """Count each kind of outcome; goodput counts answers, correct for their image, within the timeout."""
    kinds: Dict[str, int] = {}
    examples: Dict[str, str] = {}
    in_time, late, misrouted, latencies = 0, 0, 0, []
    at_once = sum(1 for request in requests if request.kind == "busy" and "refused at once" in (request.error or ""))
    for request in requests:
        kind = request.kind
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "answered":
            if expected and request.body != expected.get(request.image):
                misrouted += 1
                examples.setdefault("misrouted", f"image {request.image}: {request.body[:80]}")
                continue
            latencies.append(request.latency_s)
            if request.latency_s <= timeout_s:
                in_time += 1
            else:
                late += 1
        elif kind != "unsent":
            examples.setdefault(kind, request.error or request.lost or "")
    lags = [request.sent - request.planned for request in requests if request.sent is not None]
    span = seconds if seconds > 0 else 1.0

    def percentile(values: List[float], q: float) -> Optional[float]:
        return round(float(np.percentile(values, q)) * 1000, 1) if values else None

    return Phase(name=name, offered_per_s=round(len(requests) / span, 2), seconds=round(span, 2),
                 requests=len(requests), answered_in_time=in_time, answered_late=late, busy=kinds.get("busy", 0),
                 busy_at_once=at_once, timeouts=kinds.get("timeout", 0), other_errors=kinds.get("error", 0),
                 lost=kinds.get("lost", 0),
                 unsent=kinds.get("unsent", 0), misrouted=misrouted, worker_kills=kills,
                 goodput_per_s=round(in_time / span, 2), p50_ms=percentile(latencies, 50),
                 p99_ms=percentile(latencies, 99), send_lag_p99_ms=percentile(lags, 99), examples=examples)


def restarts(runtime: GGICRuntime) -> int:
    """Inference worker restarts so far, as the runtime's status reports them, plus function process restarts."""
    status = runtime.connector_status()
    return int((status.get("supervisor") or {}).get("restarts") or 0) + int(status.get("restarts") or 0)


@dataclass
class OverloadReport:
    timeout_s: float
    hosting: str
    workers: int
    image_side: int
    capacity_per_s: float              # the mean of the capacity measured before and after the overload
    phases: List[Phase]
    machine: Dict[str, object]

    @property
    def passed(self) -> bool:
        return all(not (phase.lost or phase.misrouted or phase.worker_kills or phase.unsent) for phase in self.phases)

    def to_json(self) -> dict:
        report = asdict(self)
        report["passed"] = self.passed
        report["goodput_of_capacity"] = {phase.name: round(phase.goodput_per_s / self.capacity_per_s, 3)
                                         for phase in self.phases if self.capacity_per_s}
        return report


def run_overload(runtime: GGICRuntime, timeout_s: float, seconds: float, factors: Sequence[float],
                 images: Sequence[bytes], servers: int, capacity_s: float = CAPACITY_S) -> List[Phase]:
    """Against a started runtime serving SERVICE_NAME: capacity, then each overload factor; the first phase is
    the capacity's. The calling process must have the runtime's client environment."""
    expected: Dict[int, str] = {}
    for number in range(len(images)):  # each image's answer, and a warm service
        probe = Request(number, time.monotonic())
        import greengrass_machine_learning_sdk as ml
        send(ml.client("inference"), probe, images)
        if probe.body is None:
            raise RuntimeError(f"image {number} was not answered: {probe.error or probe.lost}")
        expected[number] = probe.body
    if len(set(expected.values())) != len(expected):
        log.warning("two images have the same answer: misrouting between them would go unseen")
    def capacity(name: str) -> Phase:
        before = restarts(runtime)
        began = time.monotonic()
        saturated = closed_loop(servers, capacity_s, images)
        return judge(name, saturated, time.monotonic() - began, timeout_s, expected, restarts(runtime) - before)

    phases = [capacity("capacity")]
    rate = phases[0].goodput_per_s or 1.0
    for factor in factors:
        before = restarts(runtime)
        requests = open_loop(rate * factor, seconds, timeout_s, images)
        time.sleep(timeout_s + 0.5)  # an abandoned inference finishes and frees its worker; restarts show
        phases.append(judge(f"{factor:g}x", requests, seconds, timeout_s, expected, restarts(runtime) - before))
    phases.append(capacity("capacity after"))  # a machine shared with other work changes speed: measured again
    return phases


def measure(timeout_s: float = 1.0, seconds: float = 20.0, factors: Sequence[float] = (2.0, 4.0),
            side: int = DEFAULT_SIDE, workers: int = 1, hosting: str = "native") -> OverloadReport:
    images = large_jpegs(side)
    with tempfile.TemporaryDirectory(prefix="ggic-overload-") as state:
        entry = connector_entry(DIGITS_MODEL, service_name=SERVICE_NAME,
                                LocalInferenceServiceTimeoutSeconds=f"{timeout_s:g}",
                                LocalInferenceServiceMemoryLimitKB="1000000")
        runtime = GGICRuntime(Path(state), [entry], base_env=offline_env(os.environ),
                              run_args=["--workers", str(workers), "--connector-hosting", hosting])
        with runtime:
            with _environment(runtime.client_env):
                phases = run_overload(runtime, timeout_s, seconds, factors, images, workers)
    machine = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average": list(os.getloadavg())}
    capacity = (phases[0].goodput_per_s + phases[-1].goodput_per_s) / 2
    return OverloadReport(timeout_s, hosting, workers, side, round(capacity, 2), phases, machine)


def format_table(report: OverloadReport) -> str:
    head = (f"overload: timeout {report.timeout_s:g} s, {report.hosting} hosting, {report.workers} worker(s), "
            f"{report.image_side}x{report.image_side} JPEGs, capacity {report.capacity_per_s:.2f}/s")
    columns = ("phase", "offered/s", "goodput/s", "of cap.", "in time", "late", "busy", "at once", "timeout",
               "error", "lost", "misrouted", "kills", "p50 ms", "p99 ms")
    rows = [columns]
    for phase in report.phases:
        share = phase.goodput_per_s / report.capacity_per_s if report.capacity_per_s else 0.0
        rows.append((phase.name, f"{phase.offered_per_s:.2f}", f"{phase.goodput_per_s:.2f}", f"{share:.0%}",
                     str(phase.answered_in_time), str(phase.answered_late), str(phase.busy),
                     str(phase.busy_at_once), str(phase.timeouts),
                     str(phase.other_errors), str(phase.lost), str(phase.misrouted), str(phase.worker_kills),
                     str(phase.p50_ms), str(phase.p99_ms)))
    widths = [max(len(row[index]) for row in rows) for index in range(len(columns))]
    lines = [head] + ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    for phase in report.phases:
        for kind, text in phase.examples.items():
            lines.append(f"  {phase.name} {kind}: {text}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=1.0, help="LocalInferenceServiceTimeoutSeconds (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of each overload phase (default 20)")
    parser.add_argument("--factors", default="2,4", help="overload factors, comma-separated (default 2,4)")
    parser.add_argument("--side", type=int, default=DEFAULT_SIDE, help="side of the JPEGs sent (default 2400)")
    parser.add_argument("--workers", type=int, default=1, help="inference workers (default 1)")
    parser.add_argument("--connector-hosting", choices=("native", "lambda"), default="native")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/overload-*.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    go_offline()
    factors = [float(text) for text in args.factors.split(",") if text.strip()]
    try:
        report = measure(args.timeout, args.seconds, factors, args.side, args.workers, args.connector_hosting)
    except KeyboardInterrupt:
        print("interrupted; the runtime was stopped", file=sys.stderr)
        return 130
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = args.json or RESULTS_DIR / f"overload-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(format_table(report))
    print(f"results: {path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
