"""Work queues and invocation results: the state behind the IPC routes.

A Greengrass core queues the invocations of a long-lived function and hands them, in order, to the function's
runtime loop (`GET .../work`); the caller collects the answer with `GET ...` and its invocation id. Every
invocation gets exactly one answer: the function's result, its Handled error, or an Unhandled error from the
runtime when the function's process dies with the invocation in hand. Nothing is dropped without an answer.
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
from typing import Callable, Deque, Dict, Optional

log = logging.getLogger("ggic.runtime")

REQUEST_RESPONSE = "RequestResponse"
EVENT = "Event"
INVOCATION_TYPES = (REQUEST_RESPONSE, EVENT)

HANDLED = "Handled"
UNHANDLED = "Unhandled"

# Greengrass core default for maxWorkItemCount.
DEFAULT_MAX_WORK_ITEMS = 1024

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
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: float = field(default_factory=time.monotonic)
    result: Optional[bytes] = None
    function_error: str = ""
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def finish(self, payload: bytes, function_error: str = "") -> None:
        self.result = payload
        self.function_error = function_error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float]) -> bool:
        return self._done.wait(timeout)


class FunctionQueue:
    """The ordered work of one function plus the invocations its process holds right now."""

    def __init__(self, function_arn: str, max_items: int = DEFAULT_MAX_WORK_ITEMS) -> None:
        self.function_arn = function_arn
        self.max_items = max_items
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

    def complete(self, invocation_id: str, payload: bytes, function_error: str = "") -> Invocation:
        with self._cond:
            invocation = self._in_flight.pop(invocation_id, None)
        if invocation is None:
            raise InvocationNotFoundError(
                f"invocation {invocation_id} is not in flight for function {self.function_arn}")
        invocation.finish(payload, function_error)
        return invocation

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


def error_payload(message: str, error_type: str) -> bytes:
    """The JSON body of a function error, in the shape the Lambda runtimes use."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode("utf-8")


class Dispatcher:
    """Routes invocations to function queues and keeps RequestResponse results until their caller collects them."""

    def __init__(self) -> None:
        self._queues: Dict[str, FunctionQueue] = {}
        self._results: Dict[str, Invocation] = {}
        self._lock = threading.Lock()

    def add_function(self, function_arn: str, max_items: int = DEFAULT_MAX_WORK_ITEMS) -> FunctionQueue:
        queue = FunctionQueue(unqualified_arn(function_arn), max_items)
        with self._lock:
            self._queues[queue.function_arn] = queue
        return queue

    def queue(self, function_arn: str) -> FunctionQueue:
        try:
            return self._queues[unqualified_arn(function_arn)]
        except KeyError:
            raise FunctionNotFoundError(
                f"function {function_arn} is not deployed in this Greengrass runtime "
                f"(deployed: {', '.join(sorted(self._queues)) or 'none'})") from None

    def submit(self, function_arn: str, payload: bytes, client_context: str, invocation_type: str) -> Invocation:
        queue = self.queue(function_arn)
        invocation = Invocation(queue.function_arn, payload, client_context, invocation_type)
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
