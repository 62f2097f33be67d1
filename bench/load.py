"""Load test: many concurrent Lambdas call the connector through the real `ggic` runtime; every answer is checked.

Why: the connector serves requests one at a time from a queue shared by all callers, and the runtime routes each
answer back by invocation id. A routing or queueing bug shows up under concurrency as an answer that goes missing,
reaches the wrong caller or arrives twice, which a classification accuracy figure would hide. So every request
carries a different image from those in flight at the same time, each image's expected answer is the exact
probability vector of a direct in-process MXNet forward (bench/material.py `ReferenceModel`: its own
preprocessing, no connector code), and each answer is matched bit for bit against all expected vectors.

    python -m bench.load [--requests 10000] [--clients 16] [--json PATH] [--model digits]

Prints the counts, throughput and latency; writes them as JSON (default bench/results/, which git ignores); exits
1 unless lost, misrouted, duplicated, wrong, errors and unsent are all zero. The runtime listens on 127.0.0.1 only,
gets no AWS credentials, and is stopped on exit, on Ctrl-C and at the global deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests` (a namespace package) and `examples` live at the repository root
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.load")

DEFAULT_REQUESTS = 10_000
DEFAULT_CLIENTS = 16
DEFAULT_DEADLINE_S = 600.0
RESULTS_DIR = REPO / "bench" / "results"
SERVICE_NAME = "digits-load"
MODELS = ("digits",)
# Environment variables that could give the runtime real AWS credentials or send it to a real endpoint.
_CREDENTIAL_PREFIXES = ("AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                        "AWS_ROLE", "AWS_WEB_IDENTITY", "AWS_ENDPOINT_URL", "AWS_CONTAINER_CREDENTIALS",
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CREDENTIAL")
_MESSAGE_CHARS = 300


def offline_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """`environ` without AWS credentials or endpoint overrides, with the instance metadata service disabled:
    the load test must never reach AWS (the connector then skips DescribeTrainingJob at once)."""
    env = {name: value for name, value in environ.items() if not name.startswith(_CREDENTIAL_PREFIXES)}
    env.update({
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_DEFAULT_REGION": "us-west-2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")])),
    })
    return env


# --- material: images with known answers ---------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    """One request body and the answer the connector must give for it."""
    png: bytes
    label: int
    expected: np.ndarray  # float32 probabilities of a direct MXNet forward


def digits_images() -> List[Image]:
    """scikit-learn's 1,797 digits as the 8×8 PNGs a client sends, each with its direct-forward answer.

    Images whose PNG or expected vector repeats an earlier one are dropped, so an answer names its image.
    """
    from sklearn.datasets import load_digits

    from bench.material import DIGITS_MODEL, ReferenceModel
    from examples.models._artifact import artifact_files
    from examples.models.digits import digit_png

    _, params, shapes = artifact_files(DIGITS_MODEL)
    epoch = int(params.stem.rsplit("-", 1)[1])
    shape = tuple(json.loads(shapes.read_text())[0]["shape"][1:])
    reference = ReferenceModel(DIGITS_MODEL, epoch, shape)
    digits = load_digits()
    images: List[Image] = []
    seen_png, seen_answer = set(), set()
    for pixels, label in zip(digits.images, digits.target):
        png = digit_png(pixels)
        expected = reference.probabilities(png).astype(np.float32)
        if png in seen_png or expected.tobytes() in seen_answer:
            continue
        seen_png.add(png)
        seen_answer.add(expected.tobytes())
        images.append(Image(png, int(label), expected))
    return images


# --- the plan and what happened to each request ---------------------------------------------------------------

@dataclass
class Outcome:
    """One request: which client sent which image, and what came back."""
    request_id: int
    client: int
    image: int
    sent: bool = False
    answers: List[str] = field(default_factory=list)  # response bodies received for this request
    error: Optional[str] = None  # the service or the runtime answered with an error
    lost: Optional[str] = None  # why no answer came back
    latency_s: Optional[float] = None


def plan(requests: int, clients: int, images: int) -> List[List[Outcome]]:
    """Each client's requests, in sending order.

    Request r goes to client r mod `clients`. Client c cycles through its own images (those with index ≡ c mod
    `clients`), so concurrent requests always carry different images and a client's consecutive requests too.
    """
    if clients < 1 or requests < 1:
        raise ValueError("requests and clients must be at least 1")
    if images < 2 * clients:
        raise ValueError(f"{images} distinct images are too few for {clients} clients (need 2 per client)")
    own = [list(range(c, images, clients)) for c in range(clients)]
    per_client: List[List[Outcome]] = [[] for _ in range(clients)]
    for request_id in range(requests):
        client = request_id % clients
        mine = own[client]
        per_client[client].append(Outcome(request_id, client, mine[len(per_client[client]) % len(mine)]))
    return per_client


@dataclass
class Counts:
    """The verdict on every planned request; all but `answered` and `correct` must be zero."""
    requests: int = 0
    answered: int = 0  # requests that got an answer body (correct or not)
    correct: int = 0  # ... bit-identical to the expected vector of their own image
    lost: int = 0  # sent, and nothing came back
    misrouted: int = 0  # the answer is another image's that this client has not been answered before
    duplicated: int = 0  # an answer this client already received for an earlier request, or a second answer
    wrong: int = 0  # the answer matches no expected vector
    errors: int = 0  # the service or runtime answered with an error
    unsent: int = 0  # never sent (deadline or interruption came first)
    error_messages: Dict[str, int] = field(default_factory=dict)
    lost_messages: Dict[str, int] = field(default_factory=dict)
    wrong_examples: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.answered == self.correct == self.requests and not (
            self.lost or self.misrouted or self.duplicated or self.wrong or self.errors or self.unsent)


def _answer_key(text: str) -> Optional[bytes]:
    """The float32 bytes an answer text stands for; None when it is not a '[p0,p1,...]' list of numbers."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        return np.array(text[1:-1].split(","), dtype=np.float32).tobytes()
    except ValueError:
        return None


def check(per_client: Sequence[Sequence[Outcome]], expected: Sequence[np.ndarray]) -> Counts:
    """Classify every outcome by matching its answer exactly against all images' expected vectors."""
    owner = {vector.astype(np.float32).tobytes(): index for index, vector in enumerate(expected)}
    counts = Counts()
    errors: Counter = Counter()
    lost: Counter = Counter()
    for outcomes in per_client:
        answered_images = set()  # images this client has already been answered for
        for outcome in outcomes:
            counts.requests += 1
            if not outcome.sent:
                counts.unsent += 1
                continue
            if outcome.error is not None:
                counts.errors += 1
                errors[outcome.error] += 1
                continue
            if not outcome.answers:
                counts.lost += 1
                lost[outcome.lost or "no answer"] += 1
                continue
            counts.answered += 1
            counts.duplicated += len(outcome.answers) - 1
            key = _answer_key(outcome.answers[0])
            match = owner.get(key) if key is not None else None
            if match == outcome.image:
                counts.correct += 1
                answered_images.add(outcome.image)
            elif match is None:
                counts.wrong += 1
                if len(counts.wrong_examples) < 5:
                    counts.wrong_examples.append(outcome.answers[0][:_MESSAGE_CHARS])
            elif match in answered_images:
                counts.duplicated += 1
            else:
                counts.misrouted += 1
    counts.error_messages = dict(errors.most_common())
    counts.lost_messages = dict(lost.most_common())
    return counts


# --- clients ------------------------------------------------------------------------------------------------

def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_MESSAGE_CHARS]


def _answered_by_runtime(error: BaseException) -> bool:
    """False when the SDK's exception comes from a transport failure (no HTTP answer at all)."""
    from greengrass_ipc_python_sdk.ipc_client import IPCException

    cause: Optional[BaseException] = error
    while cause is not None:
        if isinstance(cause, IPCException):
            return cause.status is not None
        cause = cause.__cause__
    return True  # e.g. an Unhandled function error the runtime reported


class _InFlight:
    """How many requests are out at once; the peak shows the clients really overlapped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def _client(outcomes: Sequence[Outcome], images: Sequence[Image], deadline: float, stop: threading.Event,
            start: threading.Barrier, in_flight: _InFlight) -> None:
    """One Lambda: its own ML SDK client (hence its own keep-alive connection), one request at a time."""
    import greengrass_machine_learning_sdk as ml

    try:
        client = ml.client("inference")
    except Exception as error:  # noqa: BLE001 - its requests stay unsent, and are counted so
        log.error("%s could not build an inference client: %s", threading.current_thread().name, error)
        client = None
    try:
        start.wait()
    except threading.BrokenBarrierError:
        return
    if client is None:
        return
    for outcome in outcomes:
        if stop.is_set() or time.monotonic() >= deadline:
            return
        outcome.sent = True
        began = time.perf_counter()
        try:
            with in_flight:
                response = client.invoke_inference_service(
                    AlgoType="image-classification", ServiceName=SERVICE_NAME, ContentType="image/png",
                    Body=images[outcome.image].png)
            body = response["Body"].read().decode("utf-8", errors="replace")
        except ml.GreengrassInferenceException as error:
            outcome.error = _describe(error)
        except Exception as error:  # noqa: BLE001 - every failure is counted, by message
            if isinstance(error, ml.GreengrassDependencyException) and _answered_by_runtime(error):
                outcome.error = _describe(error)
            else:
                outcome.lost = _describe(error)
        else:
            outcome.answers.append(body)
        outcome.latency_s = time.perf_counter() - began


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Make this process a Lambda of the runtime (what `eval "$(ggic env)"` does), then restore os.environ."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- the run ------------------------------------------------------------------------------------------------

@dataclass
class LoadReport:
    """Everything one run measured; `to_json()` is what the JSON file holds."""
    model: str
    clients: int
    distinct_images: int
    counts: Counts
    passed: bool
    load_s: float
    requests_per_s: float
    latency_ms: Dict[str, float]
    peak_in_flight: int
    runtime_start_s: float
    total_s: float
    deadline_s: float
    deadline_reached: bool
    host: Dict[str, object]
    runtime_log_tail: str = ""

    def to_json(self) -> dict:
        data = asdict(self)
        return {**data.pop("counts"), **data}


def _latency_ms(per_client: Sequence[Sequence[Outcome]]) -> Dict[str, float]:
    latencies = np.array([o.latency_s for outcomes in per_client for o in outcomes
                          if o.answers and o.latency_s is not None]) * 1000.0
    if latencies.size == 0:
        return {}
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(latencies.max()), 3), "mean": round(float(latencies.mean()), 3)}


def run_load(requests: int = DEFAULT_REQUESTS, clients: int = DEFAULT_CLIENTS, model: str = "digits",
             deadline_s: float = DEFAULT_DEADLINE_S) -> LoadReport:
    """Start `ggic run` with the model's connector, send `requests` from `clients` threads, check every answer.

    Everything (references, runtime start, load) happens within `deadline_s`; requests not sent by then count as
    unsent and requests still waiting as lost. The runtime is stopped before returning, also on Ctrl-C.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    from bench.harness import GGICRuntime, connector_entry
    from bench.material import DIGITS_MODEL

    started = time.monotonic()
    deadline = started + deadline_s
    log.info("computing the expected answers (direct MXNet forward of every image)")
    images = digits_images()
    per_client = plan(requests, clients, len(images))
    log.info("%d distinct images, %d requests from %d clients", len(images), requests, clients)

    stop = threading.Event()
    in_flight = _InFlight()
    gate = threading.Barrier(clients + 1, timeout=max(1.0, deadline - time.monotonic()))
    threads: List[threading.Thread] = []
    load_began = load_ended = time.perf_counter()
    deadline_reached = False
    with tempfile.TemporaryDirectory(prefix="ggic-load-") as state:
        runtime = GGICRuntime(Path(state), [connector_entry(DIGITS_MODEL, service_name=SERVICE_NAME,
                                                            connector_id=SERVICE_NAME)],
                              base_env=offline_env(os.environ))
        try:
            runtime_began = time.monotonic()
            runtime.start()  # `ggic run --port 0`, on 127.0.0.1 (its default)
            runtime_start_s = time.monotonic() - runtime_began
            log.info("runtime ready on 127.0.0.1:%d after %.1f s", runtime.port, runtime_start_s)
            with _environment(runtime.client_env):
                for number, outcomes in enumerate(per_client):
                    thread = threading.Thread(target=_client, name=f"load-client-{number}", daemon=True,
                                              args=(outcomes, images, deadline, stop, gate, in_flight))
                    thread.start()
                    threads.append(thread)
                gate.wait()
                load_began = time.perf_counter()
                for thread in threads:  # short joins, so that Ctrl-C gets through
                    while thread.is_alive() and time.monotonic() < deadline:
                        thread.join(min(0.5, max(0.0, deadline - time.monotonic())))
                load_ended = time.perf_counter()
                deadline_reached = any(thread.is_alive() for thread in threads)
                stop.set()  # while the clients still have the runtime's environment
        finally:
            stop.set()
            gate.abort()
            runtime.stop()  # SIGTERM, then SIGKILL after 20 s; closes connections of requests still waiting
            for thread in threads:
                thread.join(5.0)
            log_tail = "\n".join(runtime.output().splitlines()[-40:])
    for outcomes in per_client:
        for outcome in outcomes:
            if outcome.sent and not outcome.answers and outcome.error is None and outcome.lost is None:
                outcome.lost = "no answer before the deadline"
    counts = check(per_client, [image.expected for image in images])
    load_s = max(load_ended - load_began, 1e-9)
    return LoadReport(
        model=model, clients=clients, distinct_images=len(images), counts=counts, passed=counts.passed,
        load_s=round(load_s, 3), requests_per_s=round(counts.answered / load_s, 1),
        latency_ms=_latency_ms(per_client), peak_in_flight=in_flight.peak, runtime_start_s=round(runtime_start_s, 3),
        total_s=round(time.monotonic() - started, 3), deadline_s=deadline_s, deadline_reached=deadline_reached,
        host={"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
              "platform": platform.platform()},
        runtime_log_tail="" if counts.passed else log_tail)


def format_table(report: LoadReport) -> str:
    """The human-readable summary the CLI prints."""
    c = report.counts
    lat = report.latency_ms
    rows = [
        f"load test: {c.requests} requests from {report.clients} clients, {report.distinct_images} distinct "
        f"images, model {report.model}",
        f"  {'answered':<11}{c.answered:>8}",
        f"  {'correct':<11}{c.correct:>8}",
        f"  {'lost':<11}{c.lost:>8}",
        f"  {'misrouted':<11}{c.misrouted:>8}",
        f"  {'duplicated':<11}{c.duplicated:>8}",
        f"  {'wrong':<11}{c.wrong:>8}",
        f"  {'errors':<11}{c.errors:>8}",
        f"  {'unsent':<11}{c.unsent:>8}",
        f"  throughput {report.requests_per_s:.1f} requests/s ({report.load_s:.1f} s of load, "
        f"{report.total_s:.1f} s in all, runtime ready after {report.runtime_start_s:.1f} s)",
    ]
    if lat:
        rows.append(f"  latency    p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                    f"max {lat['max']:.1f} ms; up to {report.peak_in_flight} requests in flight")
    for title, messages in (("errors", c.error_messages), ("lost", c.lost_messages)):
        for message, count in messages.items():
            rows.append(f"  {title}: {count} x {message}")
    for example in c.wrong_examples:
        rows.append(f"  wrong answer: {example}")
    if report.deadline_reached:
        rows.append(f"  the deadline of {report.deadline_s:g} s was reached")
    rows.append("PASS" if report.passed else "FAIL")
    return "\n".join(rows)


def write_json(report: LoadReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return path


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def go_offline() -> None:
    """Make this bench process offline (`offline_env`, before anything imports boto3) and turn SIGTERM into a
    KeyboardInterrupt, so that a bench stopped either way stops the runtime it started."""
    clean = offline_env(os.environ)
    os.environ.clear()
    os.environ.update(clean)
    signal.signal(signal.SIGTERM, _terminate)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="requests in all (default 10000)")
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent clients (default 16)")
    parser.add_argument("--model", choices=MODELS, default="digits", help="model to serve (default digits)")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/load-*.json)")
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S,
                        help="seconds the whole run may take (default 600)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    go_offline()
    try:
        report = run_load(args.requests, args.clients, args.model, args.deadline)
    except KeyboardInterrupt:
        print("interrupted; the runtime was stopped", file=sys.stderr)
        return 130
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = write_json(report, args.json or RESULTS_DIR / f"load-{stamp}.json")
    print(format_table(report))
    print(f"results: {path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
