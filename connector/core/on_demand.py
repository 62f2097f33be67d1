"""An on-demand user Lambda: processes started for invocations, several at once when they overlap, stopped when idle.

A Greengrass core starts an on-demand (not pinned) function's worker when an invocation arrives and no worker of it
is free, runs overlapping invocations in parallel workers up to a bound (the core's `maxConcurrentLimit`), keeps no
module state promise, and stops a worker that has been idle for a while. Here:

- every process of the function polls the function's one queue (`FunctionQueue`) with a token of its own, and each
  invocation is tagged with the process that took it;
- on each submission, when the invocations queued and in hand outnumber the processes alive, more are started, up
  to `max_processes` (default `DEFAULT_MAX_PROCESSES`, a core's maxConcurrentLimit);
- a process that has taken nothing for `idle_s` is first barred from taking more (`FunctionQueue.retire_worker`,
  atomically with the check that it holds nothing), then stopped;
- a process that ends (a crash, killed over its MemorySize or past its Timeout) fails only the invocation it held;
  what is queued waits for another process, started at once if needed. One that fails to initialize fails the
  oldest queued invocation with the reason (so a Lambda that cannot start is not restarted forever).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Collection, Dict, List, Optional

from connector.contract.supervision import Lifecycle, State
from connector.core.functions import FunctionProcess, FunctionSpec, worker_health
from connector.core.invocations import UNHANDLED, FunctionQueue, error_payload
from connector.core.logfiles import RotatingLogFile

log = logging.getLogger("ggic.runtime")

DEFAULT_MAX_PROCESSES = 25  # a Greengrass core's maxConcurrentLimit
DEFAULT_IDLE_S = 60.0       # an idle process is stopped after this long (`ggic run --on-demand-idle`)


class OnDemandFunction:
    """The processes of one on-demand function (the runtime hosts it like one function)."""

    def __init__(self, spec: FunctionSpec, queue: FunctionQueue,
                 make_process: Callable[[Callable[[FunctionProcess, str], None]], FunctionProcess],
                 max_processes: int = DEFAULT_MAX_PROCESSES, idle_s: float = DEFAULT_IDLE_S,
                 log_file: Optional[RotatingLogFile] = None) -> None:
        self.spec = spec
        self.queue = queue
        self.max_processes = max_processes
        self.idle_s = idle_s
        self.init_error = ""
        self.restarts = 0  # processes that ended for a reason other than idleness
        self.started_processes = 0
        self._make_process = make_process
        self._processes: Dict[str, FunctionProcess] = {}  # by worker id
        self._lock = threading.Lock()
        self.lifecycle = Lifecycle()
        self._stopping = threading.Event()
        self._monitor: Optional[threading.Thread] = None
        self._ended: List[FunctionProcess] = []
        self.log_file = log_file  # shared by its processes

    # --- the HostedFunction interface ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def start(self) -> None:
        """Ready at once: processes start with the invocations."""
        self._stopping.clear()
        self.queue.on_submit = self._demand
        self.lifecycle.set(State.READY)
        self._monitor = threading.Thread(target=self._watch_idle, name=f"on-demand-{self.spec.name}", daemon=True)
        self._monitor.start()

    def wait_settled(self, timeout: float) -> State:
        return self.lifecycle.wait_settled(timeout)

    def initialized(self, success: bool, response: str, worker: str = "") -> None:
        with self._lock:
            process = self._processes.get(worker)
        if process is not None:
            process.initialized(success, response)

    def kill_stuck(self, overdue: int, workers: Collection[str] = ()) -> None:
        with self._lock:
            stuck = [process for worker, process in self._processes.items() if worker in workers]
        for process in stuck:
            process.kill_stuck(overdue)

    def stop(self) -> None:
        self._stopping.set()
        self.queue.on_submit = None
        with self._lock:
            processes = list(self._processes.values())
            self._processes.clear()
        for process in processes:
            process.stop()
            self._ended.append(process)
        self.lifecycle.set(State.STOPPED)

    def close_log(self) -> None:
        for process in self._ended:
            process.close_log()
        if self.log_file is not None:
            self.log_file.close()

    @property
    def pids(self) -> List[int]:
        with self._lock:
            return [process.pid for process in self._processes.values() if process.pid is not None]

    @property
    def pid(self) -> Optional[int]:
        pids = self.pids
        return pids[0] if pids else None

    def supervisor_status(self) -> None:
        return None

    def health(self) -> Dict[str, object]:
        with self._lock:
            processes = list(self._processes.values())
        if not processes:
            return worker_health(self.spec.arn, "", None, State.STOPPED, False)
        first = processes[0]
        return worker_health(self.spec.arn, first.worker_id, first.pid, first.state,
                             self.queue.in_flight_of(first.pool_worker) > 0)

    # --- processes ---------------------------------------------------------------------------------------------

    def _demand(self) -> None:
        """Start processes while the invocations queued and in hand outnumber those alive (up to the bound)."""
        started = []
        with self._lock:
            if self._stopping.is_set():
                return
            alive = sum(1 for process in self._processes.values() if process.state != State.STOPPED)
            wanted = len(self.queue) + self.queue.in_flight
            for _ in range(min(wanted - alive, self.max_processes - len(self._processes))):
                process = self._make_process(self._process_ended)
                self._processes[process.pool_worker] = process
                started.append(process)
        for process in started:
            self.started_processes += 1
            process.start()

    def _process_ended(self, process: FunctionProcess, why: str) -> None:
        """A process ended by itself or was killed (not stopped for idleness): its invocations are answered."""
        with self._lock:
            self._processes.pop(process.pool_worker, None)
            self._ended.append(process)
            self.restarts += 1
        self.queue.forget_worker(process.pool_worker)
        if process.init_error:
            self.init_error = process.init_error
            if self.queue.in_flight_of(process.pool_worker) == 0:
                self._fail_oldest(f"function {self.spec.arn} failed to initialize: {process.init_error} "
                                  f"(log: {self.spec.log_path})")
        self._demand()

    def _fail_oldest(self, message: str) -> None:
        """Answer the oldest queued invocation with an Unhandled error (the one a failed process was started for)."""
        invocation = self.queue.pop_oldest()
        if invocation is not None:
            invocation.finish(error_payload(message, "Unhandled"), UNHANDLED)

    def _watch_idle(self) -> None:
        interval = max(0.05, min(1.0, self.idle_s / 4))
        while not self._stopping.wait(interval):
            now = time.monotonic()
            with self._lock:
                candidates = [process for process in self._processes.values() if process.state == State.READY]
            for process in candidates:
                since = self.queue.idle_since(process.pool_worker, process.started_at)
                if since is None or now - since < self.idle_s:
                    continue
                if not self.queue.retire_worker(process.pool_worker):  # it took an invocation meanwhile
                    continue
                with self._lock:
                    self._processes.pop(process.pool_worker, None)
                log.info("%s: stopping process %s, idle for %.1f s", self.spec.arn, process.pid, now - since)
                process.stop()
                process.close_log()
                self.queue.forget_worker(process.pool_worker)
            if len(self.queue):  # a process ended while invocations wait
                self._demand()
