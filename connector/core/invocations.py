"""Work queues and invocation results: the state behind the IPC routes.

A Greengrass core queues the invocations of a long-lived function and hands them, in order, to the function's
runtime loop (`GET .../work`); the caller collects the answer with `GET ...` and its invocation id. Every
invocation gets exactly one answer: the function's result, its Handled error, or an Unhandled error from the
runtime when the function's process dies with the invocation in hand, or when the function's timeout passes
(waiting in the queue counts). Nothing is dropped without an answer, and answers nobody collects are dropped after
`RESULT_TTL_S`.

Time: the caller's timeout counts from submission, so a request whose deadline passes in the queue is answered with
a timeout error and never handed to the function. A function is judged stuck (and its process killed) only when it
has itself held an invocation longer than the timeout (plus grace): one handed over with little time left is answered
with the timeout error at its deadline, its late answer is discarded, and the function goes on. A connector's queue
(`shed_load`) also refuses at once, as busy, a request that cannot be answered in time: the work ahead of it, by
the function's measured service time (`connector.contract.service_time`), plus its own service would pass its
deadline.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Tuple

from connector.contract.service_time import ServiceTime

log = logging.getLogger("ggic.runtime")

REQUEST_RESPONSE = "RequestResponse"
EVENT = "Event"
INVOCATION_TYPES = (REQUEST_RESPONSE, EVENT)

HANDLED = "Handled"
UNHANDLED = "Unhandled"

# Greengrass core default for maxWorkItemCount.
DEFAULT_MAX_WORK_ITEMS = 1024
# How long an answer waits for a caller that never comes back for it.
RESULT_TTL_S = 60.0
# What a function may take beyond its timeout to post its own (timeout) answer before the runtime answers for it.
TIMEOUT_GRACE_S = 1.0

_QUALIFIED = re.compile(r"^(arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]*:[0-9a-zA-Z]*:function:[a-zA-Z0-9_-]+)(?::([a-zA-Z0-9$_-]+))?$")


class FunctionNotFoundError(LookupError):
    """The invocation targets a function this runtime does not host."""


class QueueFullError(RuntimeError):
    """The function's work queue holds maxWorkItemCount items already."""


class OverloadedError(QueueFullError):
    """The work ahead of the invocation, at the function's measured service time, would keep it past its timeout."""


class InvocationNotFoundError(LookupError):
    """No pending result has this invocation id (unknown, already collected, or of an Event invocation)."""


def unqualified_arn(arn: str) -> str:
    """Strip a version or alias qualifier: every qualifier of a local function reaches the same process."""
    match = _QUALIFIED.match(arn)
    return match.group(1) if match else arn


@dataclass
class Invocation:
    function_arn: str
    payload: bytes
    client_context: str
    invocation_type: str = REQUEST_RESPONSE
    timeout_s: Optional[float] = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: float = field(default_factory=time.monotonic)
    taken: Optional[float] = None      # when the function took it
    finished: Optional[float] = None
    result: Optional[bytes] = None
    function_error: str = ""
    error_reason: Optional[str] = None  # a short tag for metrics, when the function named one (a hosted connector)
    owner: str = ""  # the principal that may collect the result (credentials.py); "" for the runtime's own
    worker: str = ""  # the process that took it, where a function has several (on-demand)
    execution_timeout: bool = False  # the timeout counts from when the function took it (a user Lambda's)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _finish_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    listener: Optional[Callable[["Invocation"], None]] = field(default=None, repr=False)

    @property
    def deadline(self) -> Optional[float]:
        """time.monotonic() by which the invocation must be answered, when its function has a timeout."""
        if self.timeout_s is None:
            return None
        if self.execution_timeout:  # waiting in the queue does not count
            return None if self.taken is None else self.taken + self.timeout_s
        return self.received + self.timeout_s

    def expired(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and deadline <= now

    def remaining_ms(self) -> Optional[int]:
        deadline = self.deadline
        return None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))

    def finish(self, payload: bytes, function_error: str = "", reason: Optional[str] = None) -> bool:
        """Record the one answer; False when the invocation was answered already (e.g. timed out)."""
        with self._finish_lock:
            if self._done.is_set():
                return False
            self.result = payload
            self.function_error = function_error
            self.error_reason = reason
            self.finished = time.monotonic()
            self._done.set()
        if self.listener is not None:
            self.listener(self)
        return True

    @property
    def error_type(self) -> str:
        """The errorType of a function error ("" for a result): what metrics count errors by."""
        if not self.function_error:
            return ""
        try:
            return str(json.loads(self.result or b"{}").get("errorType") or self.function_error)
        except (ValueError, AttributeError):
            return self.function_error

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float]) -> bool:
        return self._done.wait(timeout)


class FunctionQueue:
    """The ordered work of one function plus the invocations its process holds right now.

    `servers`: how many invocations the function serves at once (its host sets it). `shed_load`: refuse at once
    what cannot be answered in time (see the module docstring). `execution_timeout`: the timeout counts from when
    the function takes an invocation, as a Lambda's Timeout does (a user Lambda's queue; a connector's counts from
    arrival). `on_submit`: called after each submission (an on-demand function starts processes for it).
    Invocations are tagged with the worker (process) that took them, so that one process's end fails only
    its own."""

    def __init__(self, function_arn: str, max_items: int = DEFAULT_MAX_WORK_ITEMS,
                 timeout_s: Optional[float] = None, shed_load: bool = False) -> None:
        self.function_arn = function_arn
        self.max_items = max_items
        self.timeout_s = timeout_s
        self.shed_load = shed_load
        self.servers = 1
        self.service_time = ServiceTime()  # from handing out an invocation to its answer (a result, not an error)
        self._pending: Deque[Invocation] = collections.deque()
        self._in_flight: Dict[str, Invocation] = {}
        # Answered with a timeout error while the function still holds them: its late answer is discarded.
        self._abandoned: Dict[str, Invocation] = {}
        self._cond = threading.Condition()
        self.execution_timeout = False
        self.on_submit: Optional[Callable[[], None]] = None
        self._retired: set = set()  # workers that may take nothing more (an idle on-demand process being stopped)
        self._last_active: Dict[str, float] = {}  # worker → when it last took or answered an invocation

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Invocations the function holds (those already answered for it by their timeout included)."""
        with self._cond:
            return len(self._in_flight) + len(self._abandoned)

    def submit(self, invocation: Invocation) -> None:
        with self._cond:
            if len(self._pending) >= self.max_items:
                raise QueueFullError(
                    f"function {self.function_arn} is busy: {len(self._pending)} requests are queued "
                    f"(maxWorkItemCount {self.max_items}); retry later")
            invocation.timeout_s = self.timeout_s
            invocation.execution_timeout = self.execution_timeout
            if self.shed_load and self.timeout_s is not None:
                self._admit_locked(invocation)
            self._pending.append(invocation)
            self._cond.notify()
        if self.on_submit is not None:
            self.on_submit()

    def _admit_locked(self, invocation: Invocation) -> None:
        """Raise OverloadedError when the invocation would have to wait, and the work ahead plus its own service
        would pass its deadline."""
        now = time.monotonic()
        held = [now - item.taken for item in list(self._in_flight.values()) + list(self._abandoned.values())
                if item.taken is not None]
        wait = self.service_time.wait_s(len(self._pending), held, self.servers)
        if not wait:
            return
        expected = wait + self.service_time.bound()
        if expected > self.timeout_s:
            raise OverloadedError(
                f"function {self.function_arn} is busy: {len(self._pending)} request(s) queued and {len(held)} in "
                f"hand ({self.servers} at once, {self.service_time.describe()} each) would answer this one in "
                f"about {expected:.2f} s, past its deadline (timeout {self.timeout_s:g} s); refused at once, "
                f"retry later")

    def take(self, timeout: float, still_wanted: Callable[[], bool] = lambda: True,
             worker: str = "") -> Optional[Invocation]:
        """Hand the oldest pending invocation to the function, waiting up to `timeout` seconds for one.

        `still_wanted` is asked just before an item is handed out, so work is never given to a poller that has
        gone away (a process that died while long-polling). An invocation whose deadline has passed in the queue
        is answered with the timeout error here and never handed out.
        """
        deadline = time.monotonic() + timeout
        expired: List[Invocation] = []
        try:
            with self._cond:
                while True:
                    now = time.monotonic()
                    while self._pending and self._pending[0].expired(now):
                        expired.append(self._pending.popleft())
                    if self._pending:
                        break
                    remaining = deadline - now
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
                if not still_wanted() or worker in self._retired:
                    return None
                invocation = self._pending.popleft()
                invocation.taken = time.monotonic()
                invocation.worker = worker
                self._last_active[worker] = invocation.taken
                self._in_flight[invocation.id] = invocation
                return invocation
        finally:
            for item in expired:
                self._time_out_queued(item)

    def complete(self, invocation_id: str, payload: bytes, function_error: str = "",
                 reason: Optional[str] = None) -> Invocation:
        with self._cond:
            invocation = self._in_flight.pop(invocation_id, None)
            late = self._abandoned.pop(invocation_id, None) if invocation is None else None
            answered = invocation or late
            if answered is not None:
                self._last_active[answered.worker] = time.monotonic()
        if invocation is None:
            if late is not None:
                raise InvocationNotFoundError(
                    f"invocation {invocation_id} was answered with a timeout error after {self.timeout_s:g} s; "
                    f"the function's late answer is discarded")
            raise InvocationNotFoundError(
                f"invocation {invocation_id} is not in flight for function {self.function_arn} "
                f"(it may have timed out already)")
        if not function_error and invocation.taken is not None:
            self.service_time.observe(time.monotonic() - invocation.taken)
        invocation.finish(payload, function_error, reason)
        return invocation

    def _time_out_queued(self, item: Invocation) -> None:
        item.finish(error_payload(
            f"Task timed out after {self.timeout_s:g} s: the request waited in the queue of {self.function_arn} "
            f"behind {len(self)} other(s) and never ran", "TimeoutError"), UNHANDLED)

    def expire(self, now: float) -> Tuple[List[Invocation], List[Invocation]]:
        """Answer invocations past their deadline with a timeout error: queued ones at the deadline, ones in
        flight after `TIMEOUT_GRACE_S` more (the function had its chance to answer). Returns (queued, stuck):
        stuck are those the function has itself held longer than its timeout plus the grace, each once, so the
        caller can stop a function that is stuck; one handed over late is not stuck for having waited."""
        if self.timeout_s is None:
            return [], []
        with self._cond:
            queued = [item for item in self._pending if item.expired(now)]
            for item in queued:
                self._pending.remove(item)
            overdue = [item for item in self._in_flight.values()
                       if item.deadline is not None and item.deadline + TIMEOUT_GRACE_S <= now]
            for item in overdue:
                del self._in_flight[item.id]
                self._abandoned[item.id] = item
            stuck = [item for item in self._abandoned.values()
                     if item.taken is not None and item.taken + self.timeout_s + TIMEOUT_GRACE_S <= now]
            for item in stuck:
                item.taken = None  # reported once
        for item in queued:
            self._time_out_queued(item)
        for item in overdue:
            item.finish(error_payload(
                f"Task timed out after {self.timeout_s:g} s: {self.function_arn} did not answer in time",
                "TimeoutError"), UNHANDLED)
        return queued, stuck

    def fail_in_flight(self, message: str, worker: Optional[str] = None) -> int:
        """Answer every invocation the function holds (or, given `worker`, that process holds) with an Unhandled
        error (its process is gone)."""
        with self._cond:
            if worker is None:
                lost = list(self._in_flight.values())
                self._in_flight.clear()
                self._abandoned.clear()  # answered already
            else:
                lost = [item for item in self._in_flight.values() if item.worker == worker]
                for item in lost:
                    del self._in_flight[item.id]
                for key in [key for key, item in self._abandoned.items() if item.worker == worker]:
                    del self._abandoned[key]
        for invocation in lost:
            invocation.finish(error_payload(message, "Unhandled"), UNHANDLED)
        return len(lost)

    def fail_pending(self, message: str) -> int:
        """Answer every queued invocation with an Unhandled error (the function will not run again)."""
        with self._cond:
            lost = list(self._pending)
            self._pending.clear()
        for invocation in lost:
            invocation.finish(error_payload(message, "Unhandled"), UNHANDLED)
        return len(lost)

    def in_flight_of(self, worker: str) -> int:
        """Invocations one process holds (answered-for ones included)."""
        with self._cond:
            return sum(1 for item in list(self._in_flight.values()) + list(self._abandoned.values())
                       if item.worker == worker)

    def idle_since(self, worker: str, started: float) -> Optional[float]:
        """When the process last took or answered an invocation (`started` if never); None while it holds one."""
        with self._cond:
            if any(item.worker == worker for item in list(self._in_flight.values()) + list(self._abandoned.values())):
                return None
            return self._last_active.get(worker, started)

    def move_pending_to(self, other: "FunctionQueue") -> int:
        """Hand every queued invocation, in order, to `other` (a new generation of the function) ahead of what it
        holds; they are run there under its timeout. Returns how many moved."""
        with self._cond:
            moved = list(self._pending)
            self._pending.clear()
        if not moved:
            return 0
        with other._cond:
            for invocation in reversed(moved):
                invocation.timeout_s = other.timeout_s
                invocation.execution_timeout = other.execution_timeout
                other._pending.appendleft(invocation)
            other._cond.notify_all()
        if other.on_submit is not None:
            other.on_submit()
        return len(moved)

    def pop_oldest(self) -> Optional[Invocation]:
        """Take the oldest queued invocation out of the queue (its caller answers it)."""
        with self._cond:
            return self._pending.popleft() if self._pending else None

    def retire_worker(self, worker: str) -> bool:
        """Let the process take nothing more, if it holds nothing now (then True: it may be stopped)."""
        with self._cond:
            if any(item.worker == worker for item in list(self._in_flight.values()) + list(self._abandoned.values())):
                return False
            self._retired.add(worker)
            self._last_active.pop(worker, None)
            return True

    def forget_worker(self, worker: str) -> None:
        with self._cond:
            self._retired.discard(worker)
            self._last_active.pop(worker, None)

    def oldest_wait_s(self, now: float) -> float:
        with self._cond:
            return now - self._pending[0].received if self._pending else 0.0


def error_payload(message: str, error_type: str) -> bytes:
    """The JSON body of a function error, in the shape the Lambda runtimes use."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode("utf-8")


class Dispatcher:
    """Routes invocations to function queues, keeps RequestResponse results until their caller collects them, and
    (with `start_sweeper`) answers invocations whose function timeout has passed."""

    SWEEP_INTERVAL_S = 0.05

    def __init__(self, on_finished: Optional[Callable[[Invocation], None]] = None) -> None:
        self._queues: Dict[str, FunctionQueue] = {}
        self._results: Dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self._on_finished = on_finished
        self._sweeping = threading.Event()

    def add_function(self, function_arn: str, max_items: int = DEFAULT_MAX_WORK_ITEMS,
                     timeout_s: Optional[float] = None, shed_load: bool = False) -> FunctionQueue:
        queue = FunctionQueue(unqualified_arn(function_arn), max_items, timeout_s, shed_load)
        with self._lock:
            self._queues[queue.function_arn] = queue
        return queue

    @property
    def queues(self) -> List[FunctionQueue]:
        with self._lock:
            return list(self._queues.values())

    def queue(self, function_arn: str) -> FunctionQueue:
        try:
            return self._queues[unqualified_arn(function_arn)]
        except KeyError:
            raise FunctionNotFoundError(
                f"function {function_arn} is not deployed in this Greengrass runtime "
                f"(deployed: {', '.join(sorted(self._queues)) or 'none'})") from None

    def submit(self, function_arn: str, payload: bytes, client_context: str, invocation_type: str,
               owner: str = "") -> Invocation:
        queue = self.queue(function_arn)
        invocation = Invocation(queue.function_arn, payload, client_context, invocation_type,
                                listener=self._on_finished, owner=owner)
        if invocation_type == REQUEST_RESPONSE:
            with self._lock:
                self._results[invocation.id] = invocation
        try:
            queue.submit(invocation)
        except QueueFullError:
            with self._lock:
                self._results.pop(invocation.id, None)
            raise
        return invocation

    def result(self, invocation_id: str) -> Invocation:
        with self._lock:
            invocation = self._results.get(invocation_id)
        if invocation is None:
            raise InvocationNotFoundError(f"no result is pending for invocation {invocation_id}")
        return invocation

    def forget(self, invocation_id: str) -> None:
        with self._lock:
            self._results.pop(invocation_id, None)

    @property
    def uncollected(self) -> int:
        with self._lock:
            return len(self._results)

    def sweep(self, now: float) -> Dict[str, List[Invocation]]:
        """Time out overdue invocations and drop answers nobody collected; return {function: stuck invocations}."""
        stuck: Dict[str, List[Invocation]] = {}
        for queue in self.queues:
            _, overdue = queue.expire(now)
            if overdue:
                stuck[queue.function_arn] = overdue
        with self._lock:
            stale = [key for key, item in self._results.items()
                     if item.finished is not None and now - item.finished > RESULT_TTL_S]
            for key in stale:
                del self._results[key]
        if stale:
            log.warning("dropped %d answer(s) that no caller collected within %.0f s", len(stale), RESULT_TTL_S)
        return stuck

    def start_sweeper(self, on_stuck: Callable[[str, List[Invocation]], None]) -> None:
        """Sweep in a background thread until `stop_sweeper`; `on_stuck` stops a function that overran."""
        def loop() -> None:
            while not self._sweeping.wait(self.SWEEP_INTERVAL_S):
                for function_arn, overdue in self.sweep(time.monotonic()).items():
                    on_stuck(function_arn, overdue)
        threading.Thread(target=loop, name="invocation-sweeper", daemon=True).start()

    def stop_sweeper(self) -> None:
        self._sweeping.set()
