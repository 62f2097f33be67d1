"""One way to supervise child processes, shared by the core's function processes and a connector's inference
workers: the states a child goes through, the back-off between restarts of one that keeps failing, a reaper that
reports its end, and a stop that asks first and kills after a grace period (as gunicorn's arbiter does).

    STARTING ──ready──▶ READY ⇄ BUSY            (BUSY: a request in hand; inference workers only)
        │                  │
        └─failed / died────┴──▶ BACKOFF (or FAILED_INIT) ──delay──▶ STARTING
"""

from __future__ import annotations

import enum
import subprocess
import threading
import time
from typing import Callable, Optional

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0


class State(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    FAILED_INIT = "failed-init"   # it never became ready; retried after the back-off
    BACKOFF = "backoff"
    STOPPED = "stopped"


class Lifecycle:
    """A child's state, and waiting for it to settle (READY or a failure): one per supervised child, on the
    supervisor's lock when it has one, so state changes and the supervisor's own bookkeeping stay atomic."""

    def __init__(self, lock: Optional[threading.Lock] = None) -> None:
        self._changed = threading.Condition(lock or threading.Lock())
        self.state = State.STOPPED

    def set(self, state: State) -> None:
        with self._changed:
            self.set_locked(state)

    def set_locked(self, state: State) -> None:
        """`set`, for a caller that holds the lock already."""
        self.state = state
        self._changed.notify_all()

    def wait_settled(self, timeout: float) -> State:
        """Wait while STARTING (at most `timeout` seconds); return the state then."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.state == State.STARTING and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return self.state


class Backoff:
    """Delay before the next start: doubling from `start_s` to `max_s` with each failure in a row. With
    `first_at_once`, the first failure is replaced at once (a worker killed for a request's sake is not failing)."""

    def __init__(self, start_s: float = BACKOFF_START_S, max_s: float = BACKOFF_MAX_S,
                 first_at_once: bool = False) -> None:
        self.start_s = start_s
        self.max_s = max_s
        self.first_at_once = first_at_once
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure in a row; return how long to wait before the next start."""
        self.failures += 1
        doublings = self.failures - (2 if self.first_at_once else 1)
        return 0.0 if doublings < 0 else min(self.max_s, self.start_s * 2 ** doublings)

    def recovered(self) -> None:
        self.failures = 0


def watch_exit(process: subprocess.Popen, on_exit: Callable[[int], None], name: str) -> threading.Thread:
    """Call `on_exit(returncode)` on a daemon thread when `process` ends (the reaper)."""
    thread = threading.Thread(target=lambda: on_exit(process.wait()), name=name, daemon=True)
    thread.start()
    return thread


def stop_process(process: subprocess.Popen, grace_s: float, ask: Optional[Callable[[], None]] = None) -> int:
    """Ask `process` to end (`ask`, default SIGTERM), SIGKILL it after `grace_s`; return its exit status."""
    if process.poll() is not None:
        return process.returncode
    try:
        (ask or process.terminate)()
        return process.wait(grace_s)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        return process.wait()
