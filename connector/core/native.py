"""Connectors hosted in the runtime's own process: the short way through the seam.

A Greengrass core runs a connector as a long-lived Lambda, whose runtime loop long-polls the core for each
invocation over HTTP and posts the answer back. Both sides of that hop are ours here, so a `NativeFunction` loads
the connector from the catalog's `hosted` entry point (`contract/hosting.py`; the core imports no connector) and
hands it each invocation of its queue directly, on `concurrency` threads. Queueing, per-request deadlines, results
and metrics are the same as for a function process (`invocations.py`); the function log gets the connector's lines
and its children's output. The same connector still runs as a Lambda process (`functions.py`) with
`ggic run --connector-hosting lambda`, and on a real core from `make lambda-zip`.

States: STARTING (the connector is starting: its model loads) → READY, or FAILED_INIT with the reason (the runtime
refuses to come up; a deployment keeps the previous generation) → STOPPED.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import BinaryIO, Callable, Collection, Dict, List, Optional

from connector.contract.hosting import HostedConnector, HostServices, load_factory
from connector.contract.status import SupervisorStatus
from connector.contract.supervision import Lifecycle, State
from connector.core.functions import FunctionSpec, worker_health
from connector.core.invocations import HANDLED, FunctionQueue, Invocation, InvocationNotFoundError, error_payload
from connector.core.lambda_runtime import Context, encode_result, error_text
from connector.core.logfiles import FunctionLogHandler, RotatingLogFile, pump

log = logging.getLogger("ggic.runtime")

_POLL_S = 0.5  # how often an idle serving thread looks for the stop flag

# (the connector's logger, a function to copy a child's output into its log) → what the core gives the connector
ServicesFactory = Callable[[logging.Logger, Callable[[BinaryIO], None]], HostServices]


class NativeFunction:
    """One connector function hosted in this process; the same lifecycle surface as `FunctionProcess`."""

    def __init__(self, spec: FunctionSpec, queue: FunctionQueue, entry_point: str,
                 services: ServicesFactory) -> None:
        self.spec = spec
        self.queue = queue
        self.entry_point = entry_point
        self._services = services
        self.lifecycle = Lifecycle()
        self.init_error = ""
        self.restarts = 0  # its inference workers restart under its own supervisor (see its status)
        self.worker_id = str(uuid.uuid4())
        self.connector: Optional[HostedConnector] = None
        self._log_file: Optional[RotatingLogFile] = None
        self._handler: Optional[FunctionLogHandler] = None
        self._pumps: List[threading.Thread] = []
        self._threads: List[threading.Thread] = []
        self._stopping = threading.Event()
        self.logger = logging.getLogger(f"ggic.function.{spec.name}.{self.worker_id[:8]}")
        self.logger.propagate = False  # its lines belong in its function log, not the runtime's

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the connector on a thread of its own (its model loads meanwhile): `wait_settled` waits for it."""
        self._log_file = RotatingLogFile(self.spec.log_path, self.spec.log_max_bytes, self.spec.log_backups)
        self._handler = FunctionLogHandler(self._log_file)
        self.logger.addHandler(self._handler)
        self.logger.setLevel(logging.INFO)
        self._set_state(State.STARTING)
        log.info("starting %s in the runtime's process (%s), log %s", self.spec.arn, self.entry_point,
                 self.spec.log_path)
        threading.Thread(target=self._initialize, name=f"start-{self.spec.name}", daemon=True).start()

    def _capture(self, stream: BinaryIO) -> None:
        assert self._log_file is not None
        self._pumps.append(pump(stream, self._log_file))

    def _initialize(self) -> None:
        began = time.monotonic()
        try:
            factory = load_factory(self.entry_point)
            connector = factory(self._services(self.logger, self._capture))
        except Exception as exc:  # any failure to start is the connector's initialization failure, with why
            self.init_error = f"{type(exc).__name__}: {exc}"
            self.logger.critical("function %s failed to initialize: %s", self.spec.arn, self.init_error,
                                 exc_info=not getattr(exc, "expected", False))
            log.error("%s failed to initialize: %s", self.spec.arn, self.init_error)
            self._set_state(State.FAILED_INIT)
            return
        self.connector = connector
        if self._stopping.is_set():  # stop() ran while it started
            connector.stop()
            return
        servers = max(1, int(connector.concurrency))
        self.queue.servers = servers  # what its load shedding divides the work ahead by
        for number in range(servers):
            thread = threading.Thread(target=self._serve, name=f"serve-{self.spec.name}-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.logger.info("function %s initialized in the runtime's process in %.2f s, %d at once", self.spec.arn,
                         time.monotonic() - began, len(self._threads))
        log.info("%s is ready", self.spec.arn)
        self._set_state(State.READY)

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def _set_state(self, state: State) -> None:
        self.lifecycle.set(state)

    def wait_settled(self, timeout: float) -> State:
        """Wait until the connector is READY or has failed to start (or the timeout passes)."""
        return self.lifecycle.wait_settled(timeout)

    def initialized(self, success: bool, response: str, worker: str = "") -> None:
        """Only a function process reports its initialization over IPC; nothing to do here."""

    def kill_stuck(self, overdue: int, workers: Collection[str] = ()) -> None:
        """The connector held invocations longer than its timeout (they were answered with a timeout error); the
        connector's own supervisor stops an inference that overran (LocalInferenceServiceTimeoutSeconds), so the
        process is not killed: it is the runtime's."""
        log.warning("%s held %d invocation(s) past its %s s timeout; they were answered with a timeout error",
                    self.spec.arn, overdue, f"{self.spec.timeout_s:g}" if self.spec.timeout_s else "?")

    def stop(self) -> None:
        self._stopping.set()
        connector, self.connector = self.connector, None
        if connector is not None:
            connector.stop()
        for thread in self._threads:
            thread.join(_POLL_S * 2)
        self._set_state(State.STOPPED)

    def close_log(self) -> None:
        """After `stop`: close the log once its children's last output is in (a retired generation)."""
        for thread in self._pumps:
            thread.join(5.0)
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
        if self._log_file is not None:
            self._log_file.close()

    # --- serving -------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            invocation = self.queue.take(_POLL_S, still_wanted=lambda: not self._stopping.is_set())
            connector = self.connector
            if invocation is None or connector is None:
                continue
            self._run(connector, invocation)

    def _run(self, connector: HostedConnector, invocation: Invocation) -> None:
        remaining_ms = invocation.remaining_ms()
        deadline_ms = None if remaining_ms is None else int(time.time() * 1000) + remaining_ms
        context = Context(self.spec.arn, invocation.id, invocation.client_context, deadline_ms)
        function_error, reason = "", None
        try:
            answer = encode_result(connector.handle(invocation.payload, context), self.spec.encoding)
        except Exception as exc:  # a Handled error: the caller gets it, the connector goes on
            if not getattr(exc, "expected", False):
                self.logger.error("[%s] %s: %s", invocation.id, type(exc).__name__, exc, exc_info=True)
            answer = error_payload(error_text(exc), type(exc).__name__)
            function_error, reason = HANDLED, getattr(exc, "reason", None)
        try:
            self.queue.complete(invocation.id, answer, function_error, reason=reason)
        except InvocationNotFoundError as exc:
            self.logger.warning("[%s] the answer came too late, the runtime had answered already: %s",
                                invocation.id, exc)

    # --- reporting -----------------------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        return os.getpid()

    def supervisor_status(self) -> Optional[SupervisorStatus]:
        connector = self.connector
        return connector.status() if connector is not None and self.state == State.READY else None

    def health(self) -> Dict[str, object]:
        return worker_health(self.spec.arn, self.worker_id, os.getpid(), self.state, self.queue.in_flight > 0)
