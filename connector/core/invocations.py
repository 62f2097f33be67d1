"""Work queues and invocation results: the state behind the IPC routes.

A Greengrass core queues the invocations of a long-lived function and hands them, in order, to the function's
runtime loop (`GET .../work`); the caller collects the answer with `GET ...` and its invocation id. Every
invocation gets exactly one answer: the function's result, its Handled error, or an Unhandled error from the
runtime when the function's process dies with the invocation in hand, or when the function's timeout passes
(waiting in the queue counts). Nothing is dropped without an answer, and answers nobody collects are dropped after
`RESULT_TTL_S`.
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
    finished: Optional[float] = None
    result: Optional[bytes] = None
    function_error: str = ""
    error_reason: Optional[str] = None  # a short tag for metrics, when the function named one (a hosted connector)
    owner: str = ""  # the principal that may collect the result (credentials.py); "" for the runtime's own
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _finish_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    listener: Optional[Callable[["Invocation"], None]] = field(default=None, repr=False)

    @property
    def deadline(self) -> Optional[float]:
        """time.monotonic() by which the invocation must be answered, when its function has a timeout."""
        return None if self.timeout_s is None else self.received + self.timeout_s

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
    """The ordered work of one function plus the invocations its process holds right now."""

    def __init__(self, function_arn: str, max_items: int = DEFAULT_MAX_WORK_ITEMS,
                 timeout_s: Optional[float] = None) -> None:
        self.function_arn = function_arn
        self.max_items = max_items
        self.timeout_s = timeout_s
        self._pending: Deque[Invocation] = collections.deque()
        self._in_flight: Dict[str, Invocation] = {}
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._in_flight)

    def submit(self, invocation: Invocation) -> None:
        with self._cond:
            if len(self._pending) >= self.max_items:
                raise QueueFullError(
                    f"function {self.function_arn} is busy: {len(self._pending)} requests are queued "
                    f"(maxWorkItemCount {self.max_items}); retry later")
            invocation.timeout_s = self.timeout_s
            self._pending.append(invocation)
            self._cond.notify()

    def take(self, timeout: float, still_wanted: Callable[[], bool] = lambda: True) -> Optional[Invocation]:
        """Hand the oldest pending invocation to the function, waiting up to `timeout` seconds for one.

        `still_wanted` is asked just before an item is handed out, so work is never given to a poller that has
        gone away (a process that died while long-polling).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if not still_wanted():
                return None
            invocation = self._pending.popleft()
            self._in_flight[invocation.id] = invocation
            return invocation

    def complete(self, invocation_id: str, payload: bytes, function_error: str = "",
                 reason: Optional[str] = None) -> Invocation:
        with self._cond:
            invocation = self._in_flight.pop(invocation_id, None)
        if invocation is None:
            raise InvocationNotFoundError(
                f"invocation {invocation_id} is not in flight for function {self.function_arn} "
                f"(it may have timed out already)")
        invocation.finish(payload, function_error, reason)
        return invocation

    def expire(self, now: float) -> Tuple[List[Invocation], List[Invocation]]:
        """Answer invocations past their deadline with a timeout error: queued ones at the deadline, ones in
        flight after `TIMEOUT_GRACE_S` more (the function had its chance to answer). Returns (queued, in flight)
        so the caller can stop a function that is stuck."""
        if self.timeout_s is None:
            return [], []
        with self._cond:
            queued = [item for item in self._pending if item.deadline is not None and item.deadline <= now]
            for item in queued:
                self._pending.remove(item)
            stuck = [item for item in self._in_flight.values()
                     if item.deadline is not None and item.deadline + TIMEOUT_GRACE_S <= now]
            for item in stuck:
                del self._in_flight[item.id]
        for item in queued:
            item.finish(error_payload(
                f"Task timed out after {self.timeout_s:g} s: the request waited in the queue of {self.function_arn} "
                f"behind {len(self)} other(s) and never ran", "TimeoutError"), UNHANDLED)
        for item in stuck:
            item.finish(error_payload(
                f"Task timed out after {self.timeout_s:g} s: {self.function_arn} did not answer in time",
                "TimeoutError"), UNHANDLED)
        return queued, stuck

    def fail_in_flight(self, message: str) -> int:
        """Answer every invocation the function holds with an Unhandled error (its process is gone)."""
        with self._cond:
            lost = list(self._in_flight.values())
            self._in_flight.clear()
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
                     timeout_s: Optional[float] = None) -> FunctionQueue:
        queue = FunctionQueue(unqualified_arn(function_arn), max_items, timeout_s)
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
