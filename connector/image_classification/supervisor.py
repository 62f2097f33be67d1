"""The supervisor of the inference worker: the connector's promises about time and memory are kept here.

The connector's own process (the runtime's, or a Lambda's on a core) never imports MXNet. It owns its worker processes
(`connector.image_classification.worker`; one by default, `GGIC_WORKERS` / `ggic run --workers N` for more, each with
cores / N engine threads and an equal share of the memory limit, or `--workers auto`: as many as the cores and the
memory limit allow, see `choose_layout`) and, in the manner of gunicorn's arbiter, gives each explicit states, watches
it, reaps it and replaces it:

    STARTING ──ready──▶ READY ⇄ BUSY        (a request in hand)
        │                  │
        └──failed / died───┴──▶ BACKOFF ──delay──▶ STARTING

* Memory: a watchdog thread (`connector.contract.processes.MemoryWatchdog`, the one the core holds Lambdas to their
  MemorySize with) reads each worker's RSS every few milliseconds and kills it with SIGKILL above its share of
  `LocalInferenceServiceMemoryLimitKB`; the request it held fails with `MemoryLimitExceededError`.
* Time (docs/overload.md): LocalInferenceServiceTimeoutSeconds bounds two things. The caller's wait: a request is
  answered, or fails with `InferenceTimeoutError`, by its deadline (the timeout from its arrival, queueing counted);
  one whose deadline passes before a worker takes it never reaches a worker, and one that cannot be served in what
  is left of it (its expected wait for a worker plus the measured inference time, `ServiceTime`) is refused at once
  with `ServiceBusyError`. And the inference in hand: a worker is killed only when the inference it holds has run
  longer than the timeout itself. A worker still busy with a request whose caller's deadline passed (it waited
  before the worker took it) is left alone: its late answer is read and discarded, then it takes the next request.
* Crashes: a worker that dies (a signal, a native crash) fails the request it held with `WorkerCrashedError`.
* Heartbeats: an idle worker is pinged; one that does not answer is killed.

A dead worker is replaced at once; failures in a row back off (1 s doubling to 30 s; the states, back-off and
reaping are `connector.contract.supervision`'s, shared with the runtime's function processes). Requests wait for
the new worker within their own deadline. `status()` gives state, RSS and restarts as a `SupervisorStatus`, which
the runtime's health and metrics endpoints report.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Mapping, Optional, Tuple, Union

from connector.contract.environment import ENGINE_THREADS_ENV, WORKERS_ENV
from connector.contract.processes import MemoryWatchdog, available_memory_kb, describe_exit
from connector.contract.service_time import ServiceTime
from connector.contract.status import SupervisorStatus, WorkerStatus
from connector.contract.supervision import Backoff, State, stop_process, watch_exit
from connector.image_classification import errors
from connector.image_classification.errors import (
    ConfigurationError,
    ConnectorStartError,
    InferenceTimeoutError,
    MemoryLimitExceededError,
    MemoryLimitTooSmallError,
    RequestError,
    ServiceBusyError,
    WorkerCrashedError,
    WorkerStartError,
)
from connector.image_classification.frames import FrameError, read_frame, write_frame
from connector.image_classification.parameters import ImageClassificationParameters, positive_setting

log = logging.getLogger("connector.image_classification.supervisor")

WATCH_INTERVAL_S = 0.005
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 300.0
# Loading briefly holds the params file and the bound arrays at once; the limit is checked on the loaded model.
LOAD_HEADROOM = 2
# A limit too small even to load the model is measured once more by a probe worker allowed this share of the
# memory available, so that the start-up error can say which limit would work.
PROBE_SHARE_OF_AVAILABLE = 0.8
STOP_GRACE_S = 3.0
# A request taken by a worker less than this before its deadline is given the whole inference timeout (its caller
# hears at most this much after its deadline): its inference is then judged as stuck or not by the timeout itself.
LATE_TOLERANCE_S = 0.1
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


AUTO = "auto"
# `auto` gives each worker at least this many times what the loaded model measured: room to decode request images
# (the same margin the too-small-limit error asks for).
LAYOUT_MARGIN = 1.25


def parse_workers(text: str) -> Union[int, str]:
    """`auto` or a number of inference workers, 1 or more (`ggic run --workers`, `GGIC_WORKERS`)."""
    cleaned = str(text).strip().lower()
    if cleaned == AUTO:
        return AUTO
    if not cleaned.isdigit() or int(cleaned) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1 or more) or 'auto'")
    return int(cleaned)


def workers_from_environment(environ: Mapping[str, str]) -> Union[int, str]:
    """`GGIC_WORKERS` (`ggic run --workers`): how many inference workers, default 1, or `auto`."""
    text = environ.get(WORKERS_ENV) or "1"
    try:
        return parse_workers(text)
    except argparse.ArgumentTypeError:
        raise ConfigurationError(f"{WORKERS_ENV}={text!r} is not a number of workers (1 or more) or "
                                 f"'{AUTO}'") from None


def threads_from_environment(environ: Mapping[str, str]) -> Optional[int]:
    """`GGIC_ENGINE_THREADS`: engine threads per worker chosen by the user, or None (the layout decides)."""
    return positive_setting(environ, ENGINE_THREADS_ENV, "a number of engine threads (1 or more)")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Layout:
    """How many inference workers and how many engine threads each: what its status reports."""

    mode: str                  # "auto" or "fixed" (--workers N)
    workers: int
    threads: int
    cores: int
    limit_kb: int
    need_kb: Optional[int]     # a loaded worker's measured RSS (auto decides on it), None before one loaded
    reason: str

    def describe(self) -> str:
        need = "" if self.need_kb is None else f", worker needs {self.need_kb / 1024:.0f} MB"
        return (f"{self.workers} worker{'s' if self.workers > 1 else ''} x {self.threads} "
                f"thread{'s' if self.threads > 1 else ''}: {self.cores} cores{need}, limit "
                f"{self.limit_kb / 1024:.0f} MB ({self.reason})")

    def to_json(self) -> Dict[str, object]:
        return {"mode": self.mode, "workers": self.workers, "threads": self.threads, "cores": self.cores,
                "limit_kb": self.limit_kb, "need_kb": self.need_kb, "reason": self.reason,
                "summary": self.describe()}


def choose_layout(cores: int, limit_kb: int, need_kb: int, threads: Optional[int] = None,
                  margin: float = LAYOUT_MARGIN) -> Layout:
    """`--workers auto`: as many workers as LocalInferenceServiceMemoryLimitKB holds, `margin` x `need_kb` each
    (the measured RSS of a loaded, warmed-up worker), and no more than the cores; engine threads cores / workers,
    so workers x threads never exceeds the cores. At least one worker (a model that does not fit at all is refused
    before this is asked). `threads` is the user's GGIC_ENGINE_THREADS: then workers x threads stays within the
    cores too.

    Why the most workers that fit: measured on 2 cores (`make bench`, docs/performance.md), 2 workers x 1 thread
    serve 20-30 % more requests per second under concurrent load than 1 x 2 (MXNet's batch-1 operators do not keep
    two OpenMP threads busy), while 1 x 2 answers a lone caller faster; `auto` is the layout for concurrent load.
    """
    cores = max(1, cores)
    by_cores = max(1, cores // threads) if threads else cores
    by_memory = int(limit_kb // (need_kb * margin)) if need_kb > 0 else 1  # an unknown need: one worker
    workers = max(1, min(by_cores, by_memory))
    if by_memory < by_cores:
        reason = (f"the memory limit holds {by_memory} at {margin:g} x the need each" if by_memory >= 1 else
                  f"the memory limit is below {margin:g} x the need: one worker")
    else:
        reason = (f"{ENGINE_THREADS_ENV}={threads}: {cores} // {threads} workers" if threads else
                  "one core" if cores == 1 else "one worker per core")
        if by_memory > by_cores:
            reason += f"; the memory limit would hold {by_memory}"
    return Layout(AUTO, workers, threads or max(1, cores // workers), cores, limit_kb, need_kb, reason)


def fixed_layout(workers: int, cores: int, limit_kb: int, threads: Optional[int] = None) -> Layout:
    """`--workers N`: N workers with cores / N engine threads each (or GGIC_ENGINE_THREADS)."""
    return Layout("fixed", workers, threads or max(1, max(1, cores) // workers), max(1, cores), limit_kb, None,
                  f"--workers {workers}" + (f", {ENGINE_THREADS_ENV}={threads}" if threads else ""))


@dataclass
class Worker:
    """One worker process and what the supervisor knows of it."""

    process: subprocess.Popen
    slot: int = 0
    threads: int = 0               # its engine threads (OMP_NUM_THREADS is read once, when MXNet loads)
    requests: int = 0              # requests handed to it
    started: float = field(default_factory=time.monotonic)
    state: State = State.STARTING
    rss_kb: int = 0
    peak_rss_kb: int = 0
    model_rss_kb: int = 0
    kill_reason: str = ""          # "memory", "timeout", "heartbeat", "stop" when we killed it
    breach_kb: int = 0
    ceiling_kb: int = 0            # a probe worker's own memory ceiling, in place of the limit
    busy_since: float = 0.0        # time.monotonic() when it took its current request

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()


class InferenceSupervisor:
    """Runs inference requests on supervised worker processes, one request per idle worker; see the module
    docstring.

    `workers="auto"` (`choose_layout`): the worker count depends on the model's measured memory, but each worker's
    engine threads are fixed before it loads MXNet (OMP_NUM_THREADS is read once, at import). So the first worker
    starts alone with every core's threads, the layout of one worker, which is also the best layout for a lone
    caller and what most memory limits allow; the service is ready as soon as it has loaded, so the cold start is
    that of one worker. Its measured RSS then decides the count: when more fit, the others start in the background
    with cores / N threads, and once one of them serves, the first worker is retired when idle (it finishes the
    request it holds; nothing is refused) and replaced by one with cores / N threads. Workers x threads exceed the
    cores only while that first worker drains, and there are never more than N workers, so the memory limit holds
    throughout. The alternative, starting the first worker with cores / N threads for an N estimated before
    loading, needs a guess of the model's memory, and a wrong guess either oversubscribes the cores or leaves a lone
    worker with too few threads.
    """

    def __init__(self, parameters: ImageClassificationParameters, environment: Optional[Mapping[str, str]] = None,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S, workers: Union[int, str] = 1,
                 logger: logging.Logger = log, capture_output: Optional[Callable[[BinaryIO], None]] = None) -> None:
        """`environment`: the workers' (the connector's parameters and settings; default this process's);
        `logger` and `capture_output` (a worker's stderr): where its lines go (default this process's stderr)."""
        self.parameters = parameters
        self.environment = dict(os.environ if environment is None else environment)
        self.log = logger
        self.capture_output = capture_output
        self.limit_kb = parameters.memory_limit_kb
        self.auto = workers == AUTO
        self.size = 1 if self.auto else max(1, int(workers))
        self.share_kb = self.limit_kb // self.size  # each worker's part of LocalInferenceServiceMemoryLimitKB
        self.cores = available_cores()
        self.threads_override = threads_from_environment(self.environment)
        self.layout: Layout = fixed_layout(self.size, self.cores, self.limit_kb, self.threads_override)
        if self.auto:  # the first worker loads alone, with every core's threads, until its memory decides
            self.layout = dataclasses.replace(self.layout, mode=AUTO,
                                              reason="deciding: the first worker's measured memory decides")
        self.threads = self.layout.threads
        self._retiring = False
        self.need_kb = 0                     # a loaded worker's measured RSS (after load and warm-up)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.slots: List[Optional[Worker]] = [None] * self.size
        self.restarts = 0
        self.restart_reasons: Dict[str, int] = {}
        self.backoff = Backoff(first_at_once=True)  # a worker killed for a request's sake is replaced at once
        self.last_failure = ""
        self.next_start_at = 0.0
        self.last_answer_at = 0.0            # wall clock of the worker's last answer or pong
        self.model_info: Dict[str, object] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = False
        self.memory = MemoryWatchdog(WATCH_INTERVAL_S, "memory-watchdog")
        self._waiting = 0                    # requests waiting for an idle worker
        self._sequence = itertools.count(1)  # each request's number: the worker echoes it with the answer
        self.service_time = ServiceTime()    # one inference on a worker of the layout, measured
        self.abandoned = 0                   # requests whose caller's deadline passed while a worker ran them
        self.shed = 0                        # requests refused as busy or timed out before reaching a worker

    @property
    def worker(self) -> Optional[Worker]:
        """The first worker (the only one unless the connector runs several)."""
        return self.slots[0]

    @property
    def workers(self) -> List[Worker]:
        return [worker for worker in self.slots if worker is not None]

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and wait for their models; a failure here is a start-up error with the reason.

        With `auto`, wait for the first worker only, decide the layout on its measured memory and start the others
        in the background (see the class docstring); `size` is the worker count from then on."""
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        for worker in [self._spawn(slot) for slot in range(self.size)]:  # they load side by side
            problem = self._boot(worker)
            if problem is not None:
                self.stop()
                raise problem
        if self.auto:
            self._grow(self.need_kb)
        else:
            self.layout = dataclasses.replace(self.layout, need_kb=self.need_kb)
            self.log.info("inference layout %s", self.layout.describe())

    def _grow(self, need_kb: int) -> None:
        """`auto`: the layout from the first worker's measured need; start the other workers in the background."""
        layout = choose_layout(self.cores, self.limit_kb, need_kb, self.threads_override)
        self.log.info("inference layout (auto) %s", layout.describe())
        with self._lock:
            if layout.threads != self.threads:
                self.service_time.reset()  # measured on the first worker's threads: not the layout's
            self.layout = layout
            self.threads = layout.threads
            if layout.workers > self.size:
                self.slots.extend([None] * (layout.workers - self.size))
                self.size = layout.workers
                self.share_kb = self.limit_kb // self.size
        for slot in range(1, self.size):  # each boots (and, failing, backs off and retries) on its own thread
            threading.Thread(target=self._replace, args=(slot, 0.0), name=f"start-worker-{slot}",
                             daemon=True).start()

    def _retire_if_stale(self) -> None:
        """A worker loaded with other engine threads than the layout's (auto's first worker) is replaced by one
        with the layout's threads, once another worker serves: taken when idle, stopped, started anew."""
        with self._lock:
            if self._retiring or self._stopping:
                return
            stale = [w for w in self.workers if w.threads != self.threads and w.state in
                     (State.READY, State.BUSY) and w.process.poll() is None]
            serving = [w for w in self.workers if w.threads == self.threads and w.state in
                       (State.READY, State.BUSY)]
            if not stale or not serving:
                return
            self._retiring = True
        threading.Thread(target=self._retire, args=(stale[0],), name=f"retire-{stale[0].pid}", daemon=True).start()

    def _retire(self, worker: Worker) -> None:
        try:
            with self._lock:
                while worker.state != State.READY and not self._stopping and worker.process.poll() is None:
                    self._changed.wait(1.0)  # it finishes the request (or heartbeat) it holds
                if self._stopping or worker.process.poll() is not None:
                    return  # stopping, or it died: the reaper replaces it, with the layout's threads
                worker.state = State.BUSY  # taken: no request reaches it now
                worker.kill_reason = "stop"
            self.log.info("inference worker %d (%d engine threads) retired for one with %d, as the layout says",
                          worker.pid, worker.threads, self.threads)
            self._end(worker)
        finally:
            with self._lock:
                self._retiring = False
        self._replace(worker.slot, 0.0)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            workers = self.workers
            self._changed.notify_all()
        self.memory.stop()
        for worker in workers:
            if worker.process.poll() is None:
                worker.kill_reason = "stop"
                self._end(worker)
            else:
                self._set_state(worker, State.STOPPED)

    def _end(self, worker: Worker) -> None:
        """Stop a worker the polite way (it exits on end of input), by force after STOP_GRACE_S."""
        stop_process(worker.process, STOP_GRACE_S, ask=worker.process.stdin.close)
        self._set_state(worker, State.STOPPED)

    def _spawn(self, slot: int, ceiling_kb: int = 0) -> Worker:
        environment = dict(self.environment)  # the worker finds this package wherever the Lambda's code was unpacked
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, environment.get("PYTHONPATH")]))
        threads = self.threads
        # workers x threads <= cores (the layout); read once, before MXNet loads
        environment[ENGINE_THREADS_ENV] = str(threads)
        # A session of its own: a terminal's Ctrl-C (SIGINT to the foreground process group) is for `ggic run`,
        # which stops its workers itself; a worker ends when its input closes or its supervisor's process is gone.
        process = subprocess.Popen([sys.executable, "-m", "connector.image_classification.worker"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=environment, start_new_session=True,
                                   stderr=subprocess.PIPE if self.capture_output else None)
        if self.capture_output is not None:
            self.capture_output(process.stderr)
        worker = Worker(process, slot, threads=threads, ceiling_kb=ceiling_kb)
        with self._lock:
            self.slots[slot] = worker
            stopping = self._stopping
        if stopping:  # stop() ran meanwhile and did not see this worker: it must not outlive the supervisor
            worker.kill_reason = "stop"
            process.kill()
            process.wait()
        else:
            self.memory.watch(process.pid, lambda: self._ceiling(worker), lambda used: self._over_memory(worker, used),
                              on_reading=lambda used: self._observe_memory(worker, used), tree=False)
        self.log.info("inference worker %d starting", worker.pid)
        return worker

    def _limit_text(self) -> str:
        if self.size == 1:
            return f"LocalInferenceServiceMemoryLimitKB is {self.limit_kb} KB"
        return (f"LocalInferenceServiceMemoryLimitKB is {self.limit_kb} KB shared by {self.size} workers "
                f"({self.share_kb} KB each)")

    def _boot(self, worker: Worker) -> Optional[ConnectorStartError]:
        """Wait for the worker's first frame: ready (with its memory checked) or the reason it failed."""
        try:
            header = self._first_frame(worker)
        except FrameError as exc:
            worker.process.kill()
            returncode = worker.process.wait()
            if worker.kill_reason == "memory":
                return MemoryLimitTooSmallError(self._load_breach_text(worker))
            return WorkerStartError(f"the inference worker ended while loading the model ({exc}; "
                                    f"{describe_exit(returncode)}); see the lines above in this log")
        if header.get("op") == "failed":
            worker.process.wait()
            return errors.error_class(header.get("type"), ConnectorStartError, WorkerStartError)(
                str(header.get("message")))
        need_kb = int(header.get("rss_kb") or 0)
        if need_kb > self.share_kb:
            worker.kill_reason = "stop"
            worker.process.kill()
            worker.process.wait()
            return MemoryLimitTooSmallError(
                f"the loaded model needs {need_kb} KB (measured RSS of the inference worker after loading and one "
                f"warm-up inference) but {self._limit_text()}; set it to at least {int(need_kb * 1.25 * self.size)} "
                f"to leave room for decoding request images")
        worker.model_rss_kb = need_kb
        self.need_kb = need_kb
        self.model_info = {"shape": header.get("shape"), "classes": header.get("classes")}
        self.last_answer_at = time.time()
        self.log.info("inference worker %d ready in %.2f s, %d KB resident (limit %d KB)", worker.pid,
                      time.monotonic() - worker.started, need_kb, self.share_kb)
        self._set_state(worker, State.READY)
        watch_exit(worker.process, lambda returncode: self._reaped(worker, returncode), f"reap-{worker.pid}")
        self._retire_if_stale()
        return None

    @staticmethod
    def _first_frame(worker: Worker) -> Dict[str, object]:
        """A starting worker's first frame (ready, or why it failed); FrameError when it ends or takes longer than
        LOAD_TIMEOUT_S to load."""
        ready, _, _ = select.select([worker.output], [], [], LOAD_TIMEOUT_S)
        if not ready:
            raise FrameError(f"the model was not loaded within {LOAD_TIMEOUT_S:.0f} s")
        header, _ = read_frame(worker.output)
        return header

    def _load_breach_text(self, breached: Worker) -> str:
        """Why a worker was stopped while loading, and the limit that would hold the model (measured by a probe)."""
        text = (f"loading the model needs more than LocalInferenceServiceMemoryLimitKB allows: the inference worker "
                f"reached {breached.breach_kb} KB (measured) while loading and was stopped at {LOAD_HEADROOM}x the "
                f"limit of {self.share_kb} KB")
        measured = self._probe_need(breached.slot)
        if measured is None:
            return text + "; raise the limit (the model's need could not be measured: not enough memory available)"
        loaded_kb, peak_kb = measured
        at_least = max(int(loaded_kb * LAYOUT_MARGIN), -(-peak_kb // LOAD_HEADROOM)) * self.size
        return (f"{text}. Measured with room to spare, the model needs {loaded_kb} KB once loaded ({peak_kb} KB at "
                f"its peak while loading): set it to at least {at_least}")

    def _probe_need(self, slot: int) -> Optional[Tuple[int, int]]:
        """Load the model in a worker allowed most of the available memory: (RSS once loaded, peak RSS while
        loading) in KB, or None when there is no more room than the limit gave or the probe fails too."""
        available = available_memory_kb()
        ceiling = int((available or 0) * PROBE_SHARE_OF_AVAILABLE)
        if ceiling <= self.share_kb * LOAD_HEADROOM:
            return None
        self.log.info("measuring what the model needs: a worker allowed %d KB (%.0f%% of the memory available)",
                      ceiling, PROBE_SHARE_OF_AVAILABLE * 100)
        probe = self._spawn(slot, ceiling_kb=ceiling)
        try:
            header = self._first_frame(probe)
        except FrameError:
            header = {}
        finally:
            probe.kill_reason = "stop"
            probe.process.kill()
            probe.process.wait()
        if header.get("op") != "ready" or not header.get("rss_kb"):
            return None
        loaded_kb = int(header["rss_kb"])
        return loaded_kb, max(loaded_kb, probe.peak_rss_kb)

    def _set_state(self, worker: Optional[Worker], state: State) -> None:
        with self._lock:
            if worker is not None:
                worker.state = state
            self._changed.notify_all()

    def _reaped(self, worker: Worker, returncode: int) -> None:
        """The worker ended; unless we are stopping, replace it (after a back-off when failing often)."""
        if self._stopping or worker.kill_reason == "stop":
            return
        reason = worker.kill_reason or "crash"
        how = describe_exit(returncode)
        with self._lock:
            self.restarts += 1
            self.restart_reasons[reason] = self.restart_reasons.get(reason, 0) + 1
            delay = self.backoff.failed()
            self.last_failure = f"worker {worker.pid} {how} ({reason})"
            self.next_start_at = time.time() + delay
        self.log.error("inference worker %d ended: %s, reason %s; %d failure(s) in a row; new worker in %.0f s",
                       worker.pid, how, reason, self.backoff.failures, delay)
        self._set_state(worker, State.BACKOFF)
        self._replace(worker.slot, delay)

    def _replace(self, slot: int, delay: float) -> None:
        while not self._stopping:
            if delay:
                time.sleep(delay)
            if self._stopping:
                return
            problem = self._boot(self._spawn(slot))
            if problem is None or self._stopping:
                return
            with self._lock:
                self.restarts += 1
                self.restart_reasons["start-failed"] = self.restart_reasons.get("start-failed", 0) + 1
                delay = self.backoff.failed()
                self.last_failure = f"a new worker failed to start: {problem}"
                self.next_start_at = time.time() + delay
            self.log.error("%s; next try in %.0f s", self.last_failure, delay)
            self._set_state(self.slots[slot], State.BACKOFF)

    # --- requests --------------------------------------------------------------------------------------------

    def _observe(self, worker: Worker, seconds: float) -> None:
        """One inference's time, measured on a worker of the current layout (auto's first worker does not count)."""
        if worker.threads == self.threads:
            self.service_time.observe(seconds)

    def infer(self, body: bytes, content_type: Optional[str], deadline: float) -> Dict[str, str]:
        """Classify one image before `deadline` (time.monotonic()); raise a RequestError subclass otherwise.

        Refused at once when it cannot be answered in time (`_refuse_if_late`); the worker that takes it may run
        it for LocalInferenceServiceTimeoutSeconds; its caller hears by `deadline` (see the module docstring)."""
        self._refuse_if_late(deadline)
        worker = self._take_worker(deadline)
        self._give_back_if_late(worker, deadline)
        sequence = next(self._sequence)
        started = worker.busy_since
        limit = started + self.parameters.timeout_seconds  # how long the inference in hand may run
        if limit - deadline <= LATE_TOLERANCE_S:
            deadline = limit
        try:
            self._send(worker, {"op": "infer", "content_type": content_type, "seq": sequence}, body, limit)
            answered, _, _ = select.select([worker.output], [], [], max(0.0, deadline - time.monotonic()))
            if not answered and deadline >= limit:
                self._kill(worker, "timeout")
                raise InferenceTimeoutError(
                    f"inference did not finish within LocalInferenceServiceTimeoutSeconds "
                    f"({self.parameters.timeout_seconds} s); the worker was stopped and a new one is starting")
            if not answered:
                raise self._abandon(worker, sequence, started, limit, deadline)
            header, answer = read_frame(worker.output)
        except (FrameError, OSError, ValueError):  # ValueError: stop() closed its input meanwhile
            raise self._death_error(worker) from None
        self._check_sequence(worker, header, sequence)
        self.last_answer_at = time.time()
        if header.get("op") == "answer":
            self._observe(worker, time.monotonic() - started)
        self._release(worker)
        if header.get("op") == "answer":
            if self.backoff.failures:  # recovered
                with self._lock:
                    self.backoff.recovered()
                    self.last_failure = ""
            return {"Body": answer.decode("utf-8"), "ContentType": str(header.get("content_type"))}
        raise errors.error_class(header.get("type"), RequestError, errors.InferenceError)(str(header.get("message")))

    def _send(self, worker: Worker, header: Dict[str, object], body: bytes, limit: float) -> None:
        """Write a request to the worker; a worker that stops reading (frozen, stuck) blocks the write once the
        pipe is full, so it is killed at `limit` as if it had not answered (the write then fails)."""
        watchdog = threading.Timer(max(0.0, limit - time.monotonic()), self._kill, args=(worker, "timeout"))
        watchdog.daemon = True
        watchdog.start()
        try:
            write_frame(worker.process.stdin, header, body)
        finally:
            watchdog.cancel()

    def _refuse_if_late(self, deadline: float) -> None:
        """A request that cannot be answered before its deadline fails now, before it reaches a worker: its
        deadline has passed, or it has waited and its wait for a worker plus one measured inference (mean + 2
        deviations, `ServiceTime.bound`) would pass what is left (busy). A request that has not waited gets its
        chance."""
        now = time.monotonic()
        remaining = deadline - now
        timeout = self.parameters.timeout_seconds
        if remaining <= 0:
            with self._lock:
                self.shed += 1
            raise InferenceTimeoutError(
                f"the request was not answered within LocalInferenceServiceTimeoutSeconds ({timeout} s): its "
                f"deadline passed while it waited in the queue, before an inference worker took it")
        with self._lock:
            in_service = [now - worker.busy_since for worker in self.workers
                          if worker.state != State.READY and worker.busy_since]
            free = any(worker.state == State.READY for worker in self.workers)
            waiting = self._waiting
        wait = 0.0 if free else self.service_time.wait_s(waiting, in_service, self.size)
        if remaining >= timeout - LATE_TOLERANCE_S and not wait:
            return  # it has not waited and a worker is free
        expected = wait + self.service_time.bound()
        if expected <= remaining:
            return
        with self._lock:
            self.shed += 1
        raise ServiceBusyError(
            f"the inference service is busy: this request waited {max(0.0, timeout - remaining):.2f} s in the "
            f"queue; {waiting} more wait for {len(in_service)} busy inference worker(s), and with one inference "
            f"taking {self.service_time.describe()} it would be answered in about {expected:.2f} s, but "
            f"{remaining:.2f} s are left of its LocalInferenceServiceTimeoutSeconds ({timeout} s); refused before "
            f"any worker ran it, retry later")

    def _give_back_if_late(self, worker: Worker, deadline: float) -> None:
        """A worker became free for a request that waited for it too long to be served in what is left: the
        worker goes back untouched and the request is refused as busy."""
        remaining = deadline - time.monotonic()
        timeout = self.parameters.timeout_seconds
        bound = self.service_time.bound()
        if remaining >= timeout - LATE_TOLERANCE_S or remaining >= bound:
            return
        with self._lock:
            worker.requests -= 1
            self.shed += 1
        self._release(worker)
        raise ServiceBusyError(
            f"the inference service is busy: this request waited {timeout - max(0.0, remaining):.2f} s for an "
            f"inference worker, and one inference takes {self.service_time.describe()}, more than the "
            f"{max(0.0, remaining):.2f} s left of its LocalInferenceServiceTimeoutSeconds ({timeout} s); refused "
            f"before any worker ran it, retry later")

    def _abandon(self, worker: Worker, sequence: int, started: float, limit: float,
                 deadline: float) -> InferenceTimeoutError:
        """The caller's deadline passed while the worker runs its request, within the worker's own time: the
        caller gets the timeout error, the worker finishes; `_drain` reads and discards its answer."""
        with self._lock:
            self.abandoned += 1
        threading.Thread(target=self._drain, args=(worker, sequence, started, limit), name=f"drain-{worker.pid}",
                         daemon=True).start()
        timeout = self.parameters.timeout_seconds
        waited = max(0.0, started - (deadline - timeout))  # the deadline is the timeout from its arrival
        return InferenceTimeoutError(
            f"the request was not answered within LocalInferenceServiceTimeoutSeconds ({timeout} s): it waited "
            f"{waited:.2f} s in the queue before an inference worker took it, too long for its inference to finish "
            f"in time; the worker goes on (its answer to this request is discarded)")

    def _drain(self, worker: Worker, sequence: int, started: float, limit: float) -> None:
        """Wait for the answer of a request its caller no longer waits for, at most until the inference has run
        LocalInferenceServiceTimeoutSeconds; discard it and free the worker, or kill the worker as stuck."""
        try:
            answered, _, _ = select.select([worker.output], [], [], max(0.0, limit - time.monotonic()))
            if not answered:
                self.log.error("inference worker %d did not finish a request within "
                               "LocalInferenceServiceTimeoutSeconds (%s s); killing it", worker.pid,
                               self.parameters.timeout_seconds)
                self._kill(worker, "timeout")
                return
            header, _ = read_frame(worker.output)
        except (FrameError, OSError, ValueError):
            return  # it died (the reaper replaces it), or stop() closed its input
        try:
            self._check_sequence(worker, header, sequence)
        except WorkerCrashedError:
            return
        elapsed = time.monotonic() - started
        if header.get("op") == "answer":
            self._observe(worker, elapsed)
        self.last_answer_at = time.time()
        self.log.info("inference worker %d answered request %d after %.3f s, past its caller's deadline; answer "
                      "discarded", worker.pid, sequence, elapsed)
        self._release(worker)

    def _check_sequence(self, worker: Worker, header: Mapping[str, object], sequence: int) -> None:
        """An answer must be to the request in hand: anything else is a broken worker, never another's answer."""
        if header.get("seq") == sequence:
            return
        self.log.error("inference worker %d answered request %r while it held request %d; killing it", worker.pid,
                       header.get("seq"), sequence)
        self._kill(worker, "crash")
        raise WorkerCrashedError(f"the inference worker answered another request ({header.get('seq')!r}) than "
                                 f"this one ({sequence}); it was stopped and a new worker is starting")

    def _take_worker(self, deadline: float) -> Worker:
        """An idle worker, marked busy (published by the next heartbeat, not on every request)."""
        with self._lock:
            self._waiting += 1
            try:
                while True:
                    for worker in self.workers:
                        if worker.state == State.READY and worker.process.poll() is None:
                            worker.state = State.BUSY
                            worker.requests += 1
                            worker.busy_since = time.monotonic()
                            return worker
                    remaining = deadline - time.monotonic()
                    if self._stopping or remaining <= 0:
                        self.shed += 1
                        raise InferenceTimeoutError(
                            f"no inference worker was ready within LocalInferenceServiceTimeoutSeconds "
                            f"({self.parameters.timeout_seconds} s): {self.last_failure or 'the worker is starting'}"
                            f"; the request never reached a worker")
                    self._changed.wait(remaining)
            finally:
                self._waiting -= 1

    def _release(self, worker: Worker) -> None:
        with self._lock:
            if worker.state == State.BUSY:
                worker.state = State.READY
                self._changed.notify_all()

    def _death_error(self, worker: Worker) -> RequestError:
        """The worker died with this request in hand: say why, as a Greengrass core reports an Unhandled error."""
        try:
            returncode = worker.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._kill(worker, worker.kill_reason or "crash")
            returncode = worker.process.wait()
        if worker.kill_reason == "timeout":  # `_send`'s watchdog: it stopped reading the request
            return InferenceTimeoutError(
                f"inference did not finish within LocalInferenceServiceTimeoutSeconds "
                f"({self.parameters.timeout_seconds} s); the worker was stopped and a new one is starting")
        if worker.kill_reason == "memory":
            return MemoryLimitExceededError(
                f"the inference worker used {worker.breach_kb} KB, over LocalInferenceServiceMemoryLimitKB "
                f"({self.limit_kb} KB{'' if self.size == 1 else f' shared by {self.size} workers'}), while "
                f"handling this request and was stopped; a new worker is starting")
        return WorkerCrashedError(f"the inference worker died while handling this request "
                                  f"({describe_exit(returncode)}); a new worker is starting")

    def _kill(self, worker: Worker, reason: str) -> None:
        if not worker.kill_reason:
            worker.kill_reason = reason
        try:
            worker.process.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- watchers --------------------------------------------------------------------------------------------

    def _ceiling(self, worker: Worker) -> int:
        """What the worker may use now: its share of the limit (twice that while it loads), a probe's own."""
        return worker.ceiling_kb or self.share_kb * (LOAD_HEADROOM if worker.state == State.STARTING else 1)

    def _observe_memory(self, worker: Worker, used: int) -> None:
        worker.rss_kb = used
        worker.peak_rss_kb = max(worker.peak_rss_kb, used)

    def _over_memory(self, worker: Worker, used: int) -> None:
        if worker.kill_reason or worker.process.returncode is not None:
            return
        worker.breach_kb = used
        self.log.warning("inference worker %d consumed all allocated memory: %d KB used, limit %d KB; killing it",
                         worker.pid, used, self._ceiling(worker))
        self._kill(worker, "memory")

    def _heartbeat(self) -> None:
        while not self._stopping:
            time.sleep(self.heartbeat_interval_s)
            for worker in self.workers:
                with self._lock:  # an idle worker is taken for the ping, so no request meets it meanwhile
                    idle = worker.state == State.READY and not self._stopping
                    if idle:
                        worker.state = State.BUSY
                if idle:
                    self._ping(worker)
                    self._release(worker)

    def _ping(self, worker: Worker) -> None:
        try:
            write_frame(worker.process.stdin, {"op": "ping"})
            answered, _, _ = select.select([worker.output], [], [], HEARTBEAT_TIMEOUT_S)
            if not answered:
                self.log.error("inference worker %d missed its heartbeat (%.0f s); killing it", worker.pid,
                               HEARTBEAT_TIMEOUT_S)
                self._kill(worker, "heartbeat")
                return
            read_frame(worker.output)
            self.last_answer_at = time.time()
        except (FrameError, OSError, ValueError):
            pass  # it died (the reaper replaces it), or stop() closed its input

    # --- reporting -------------------------------------------------------------------------------------------

    def status(self) -> SupervisorStatus:
        """State, memory and restarts of every worker: what the runtime's /health, /metrics and `ggic status` say."""
        now = time.monotonic()
        workers = [WorkerStatus(pid=worker.pid, state=worker.state.value, rss_kb=worker.rss_kb,
                                peak_rss_kb=worker.peak_rss_kb, model_rss_kb=worker.model_rss_kb,
                                threads=worker.threads, requests=worker.requests,
                                uptime_s=round(now - worker.started, 3)) for worker in self.workers]
        backoff = any(worker.state == State.BACKOFF for worker in self.workers)
        return SupervisorStatus(
            service=self.parameters.service_name, pid=os.getpid(), heartbeat_interval_s=self.heartbeat_interval_s,
            timeout_s=self.parameters.timeout_seconds, memory_limit_kb=self.limit_kb, workers=workers,
            layout=self.layout.to_json(), last_answer_at=self.last_answer_at, restarts=self.restarts,
            restart_reasons=dict(self.restart_reasons), consecutive_failures=self.backoff.failures,
            last_failure=self.last_failure, next_start_at=self.next_start_at if backoff else None,
            model=dict(self.model_info), service_time_s=self.service_time.mean, shed=self.shed,
            abandoned=self.abandoned)
