"""The process of each long-lived function, and its lifecycle.

States (`connector.contract.supervision`, shared with a connector's inference workers): STARTING (process spawned,
handler module loading) → READY (it reported a successful initialization) → ... → STOPPED. A process that exits while
READY is reaped: the invocation it held gets an Unhandled error naming the exit status, and the process is started
again after a back-off that doubles on each consecutive crash (the queue keeps the waiting requests meanwhile). A
process that fails to initialize goes to FAILED_INIT and is retried with the same back-off; `ggic run` refuses to come
up while a connector is in that state. A process that holds an invocation past its timeout (plus grace) is stuck: the
runtime kills it, and it is reaped like a crash.

A group's user Lambda (`GroupFunction`) runs in such a process too, with two more promises: its MemorySize, held
against the RSS of its process tree (`MemoryWatchdog`), and its Timeout, counted per invocation from when the process
takes it. A process killed for either is replaced at once (it is not failing: one invocation asked too much), and
only the invocation it held fails, with an Unhandled error naming the cause; what is queued waits for the
replacement. An on-demand function (`on_demand.py`) has several such processes, each tagged with its worker id.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Dict, Optional

from connector.contract.environment import HANDLER_ENV
from connector.contract.processes import MemoryWatchdog, describe_exit
from connector.contract.supervision import Backoff, Lifecycle, State, stop_process, watch_exit
from connector.core.credentials import Credentials
from connector.core.interpreters import Interpreter, runtime_name
from connector.core.invocations import FunctionQueue
from connector.core.lambda_site import RUNTIME_SCRIPT
from connector.core.logfiles import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, RotatingLogFile, pump

log = logging.getLogger("ggic.runtime")

STOP_GRACE_S = 5.0
TOKEN_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
# Variables that point a Python at the runtime's own installation; a Lambda on another Python must not inherit them.
_FOREIGN_PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")
# The PATH a Greengrass core gives a Lambda process (a group's Lambdas get no variable of the runtime's own).
LAMBDA_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


_GREENGRASS_WORKER_STATES = {State.STARTING: "Starting", State.FAILED_INIT: "FailedInitialization",
                              State.BACKOFF: "NotStarted", State.STOPPED: "Terminated"}


def worker_health(function_arn: str, worker_id: str, pid: Optional[int], state: State, busy: bool) -> Dict[str, object]:
    """A worker health information object, as the Greengrass health check API reports one."""
    worker_state = ("Working" if busy else "Waiting") if state == State.READY else \
        _GREENGRASS_WORKER_STATES.get(state, "NotStarted")
    return {"FuncArn": function_arn, "WorkerId": worker_id, "ProcessId": pid or 0, "WorkerState": worker_state}


@dataclass
class FunctionSpec:
    """What to run for one function and with which environment."""

    arn: str
    handler: str                       # `package.module.function` or `/path/file.py:function`
    log_path: Path
    encoding: str = "json"             # how the event reaches the handler: JSON-decoded or raw bytes
    environment: Dict[str, str] = field(default_factory=dict)
    working_dir: Optional[Path] = None
    is_connector: bool = False
    timeout_s: Optional[float] = None        # per invocation, queueing included
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUPS
    interpreter: Optional[Interpreter] = None  # its runtime's Python; None: the runtime's own, with its packages
    memory_kb: Optional[int] = None          # MemorySize: the RSS its process tree may use
    pinned: bool = True                      # long-lived; else on-demand (on_demand.py)
    own_environment: bool = True             # False: only the core's variables and `environment` (a group's Lambda)
    group_function: bool = False             # a group version's user Lambda (swapped by a deployment)

    @property
    def name(self) -> str:
        return self.arn.split(":function:", 1)[-1]

    @property
    def runtime(self) -> str:
        """The Lambda runtime it runs on, as AWS names it (python3.8); the runtime's own Python says so."""
        return self.interpreter.runtime if self.interpreter else f"{runtime_name(sys.version_info)} (ggic's own)"

    @property
    def python(self) -> str:
        return self.interpreter.path if self.interpreter else sys.executable


class FunctionProcess:
    """Owns one function's process: spawns it, reaps it, restarts it, stops it."""

    def __init__(self, spec: FunctionSpec, queue: FunctionQueue, core_environment: Dict[str, str],
                 lambda_site: Path, credentials: Optional[Credentials] = None,
                 watchdog: Optional[MemoryWatchdog] = None,
                 on_ended: Optional[Callable[["FunctionProcess", str], None]] = None,
                 log_file: Optional[RotatingLogFile] = None) -> None:
        """`watchdog` holds it to `spec.memory_kb`. With `on_ended` the process belongs to an on-demand function:
        it has a worker id of its own (token, invocations), and when it ends it is not restarted here:
        `on_ended(process, why)` is called once its own invocations are answered. `log_file`: a log shared
        with the function's other processes (its owner closes it)."""
        self.spec = spec
        self.queue = queue
        self.core_environment = core_environment
        self.credentials = credentials  # each spawn of the process gets a token of its own
        self.lambda_site = lambda_site  # the runtime loop and the core-side modules (lambda_site.py)
        self.init_error = ""
        self.restarts = 0
        self._process: Optional[subprocess.Popen] = None
        self.worker_id = ""
        self._lock = threading.Lock()
        self.lifecycle = Lifecycle(self._lock)  # its state, changed under self._lock
        self._stopping = False
        self._backoff = Backoff()
        self._log: Optional[RotatingLogFile] = log_file
        self._shared_log = log_file is not None
        self._pump: Optional[threading.Thread] = None
        self.watchdog = watchdog
        self.on_ended = on_ended
        self.pool_worker = str(uuid.uuid4()) if on_ended is not None else ""  # its token's and invocations' tag
        self.started_at = 0.0
        self._kill_reason = ""  # why the runtime killed it (memory, timeout): the Unhandled error's message

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._stopping = False
            self._spawn_locked()

    def _environment(self) -> Dict[str, str]:
        env = dict(os.environ) if self.spec.own_environment else {"PATH": LAMBDA_PATH, "PYTHONDONTWRITEBYTECODE": "1"}
        if self.spec.interpreter is not None:  # another Python: nothing of the runtime's own Python on its path
            for name in _FOREIGN_PYTHON_VARIABLES:
                env.pop(name, None)
        env.update(self.core_environment)
        env.update(self.spec.environment)
        if self.credentials is not None:  # a fresh token per process: a restart revokes the previous one
            env[TOKEN_VARIABLE] = self.credentials.issue_function(self.spec.arn, self.pool_worker)
        env.update({
            "MY_FUNCTION_ARN": self.spec.arn,
            HANDLER_ENV: self.spec.handler,
            "ENCODING_TYPE": self.spec.encoding,
            "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "utf-8",  # Python 2 writes non-ASCII log lines to the pipe instead of failing
        })
        return env

    def _spawn_locked(self) -> None:
        if self._log is None:
            self._log = RotatingLogFile(self.spec.log_path, self.spec.log_max_bytes, self.spec.log_backups)
        self._process = subprocess.Popen(
            [self.spec.python, str(self.lambda_site / RUNTIME_SCRIPT)],
            env=self._environment(), cwd=str(self.spec.working_dir or Path.cwd()),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)  # a terminal's Ctrl-C is for the runtime, which stops its functions itself
        self._pump = pump(self._process.stdout, self._log)
        self.worker_id = self.pool_worker or str(uuid.uuid4())
        self.started_at = time.monotonic()
        self._kill_reason = ""
        self._set_state_locked(State.STARTING)
        log.info("started %s on %s (%s, pid %d, worker %s), log %s", self.spec.arn, self.spec.runtime,
                 self.spec.python, self._process.pid, self.worker_id, self.spec.log_path)
        process = self._process
        if self.watchdog is not None and self.spec.memory_kb:
            self.watchdog.watch(process.pid, self.spec.memory_kb, lambda used: self._over_memory(process, used))
        watch_exit(process, lambda returncode: self._reaped(process, returncode), f"reap-{self.spec.name}")

    @property
    def state(self) -> State:
        return self.lifecycle.state

    def _set_state_locked(self, state: State) -> None:
        self.lifecycle.set_locked(state)

    def initialized(self, success: bool, response: str, worker: str = "") -> None:
        """The function's runtime loop reported (PUT .../initialized)."""
        with self._lock:
            if success:
                self._backoff.recovered()
                self.init_error = ""
                self._set_state_locked(State.READY)
            else:
                self.init_error = response
                self._set_state_locked(State.FAILED_INIT)
        if success:
            log.info("%s is ready", self.spec.arn)
        else:
            log.error("%s failed to initialize: %s", self.spec.arn, response)

    def wait_settled(self, timeout: float) -> State:
        """Wait until the function is READY or has failed its initialization (or the timeout passes)."""
        return self.lifecycle.wait_settled(timeout)

    def _reaped(self, process: subprocess.Popen, returncode: int) -> None:
        if self.watchdog is not None:
            self.watchdog.unwatch(process.pid)
        with self._lock:
            if self._stopping or process is not self._process:
                return
            how = describe_exit(returncode)
            was = self.state
            never_ready = was in (State.STARTING, State.FAILED_INIT)
            killed = self._kill_reason
            if was == State.STARTING:  # died before it could report: an initialization failure
                self.init_error = self.init_error or killed or f"the process ended during initialization ({how})"
            lost = self.queue.fail_in_flight(
                killed or f"function {self.spec.arn} ended unexpectedly ({how}) while handling this request",
                self.pool_worker if self.on_ended is not None else None)
            self.restarts += 1
            # Killed for one invocation's sake (memory, timeout), it is replaced at once; a crash backs off.
            delay = 0.0 if killed and not never_ready else self._backoff.failed()
            self._set_state_locked(State.FAILED_INIT if never_ready else State.BACKOFF)
            if self.on_ended is not None:
                self._stopping = True
                self._set_state_locked(State.STOPPED)
        if self.on_ended is not None:
            log.info("%s process %d ended (%s)%s; %d request(s) in flight answered with an Unhandled error",
                     self.spec.arn, process.pid, how, f": {killed}" if killed else "", lost)
            self.on_ended(self, killed or how)
            return
        log.error("%s ended (%s) in state %s%s; %d request(s) in flight answered with an Unhandled error; "
                  "restarting in %.0f s", self.spec.arn, how, was.value, f" ({killed})" if killed else "", lost, delay)
        timer = threading.Timer(delay, self._restart)
        timer.daemon = True
        timer.start()

    def _restart(self) -> None:
        with self._lock:
            if not self._stopping:
                self._spawn_locked()

    def kill_stuck(self, overdue: int, workers: Collection[str] = ()) -> None:
        """The process kept invocations past their timeout: it is stuck; kill it (the reaper restarts it)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        log.error("%s held %d invocation(s) past its %s s timeout; killing process %d", self.spec.arn, overdue,
                  f"{self.spec.timeout_s:g}", process.pid)
        self._kill(process, f"function {self.spec.arn} ran past its Timeout of {self.spec.timeout_s:g} s; its "
                            f"process was stopped and is being replaced")

    def _over_memory(self, process: subprocess.Popen, used_kb: int) -> None:
        log.warning("%s: worker consumed all allocated memory: %d KB used by process %d and its children, "
                    "MemorySize %d KB; killing it", self.spec.arn, used_kb, process.pid, self.spec.memory_kb)
        self._kill(process, f"function {self.spec.arn} used {used_kb} KB of memory, over its MemorySize of "
                            f"{self.spec.memory_kb} KB; its process was stopped and is being replaced")

    def _kill(self, process: subprocess.Popen, reason: str) -> None:
        """Kill the process (and the process group it leads: its children) for `reason`."""
        with self._lock:
            if process is not self._process or process.poll() is not None:
                return
            self._kill_reason = self._kill_reason or reason
        _kill_process_group(process)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            process = self._process
            self._set_state_locked(State.STOPPED)
        if process is not None:
            stop_process(process, STOP_GRACE_S)
            if self.spec.group_function:  # what a user Lambda started in its session goes with it
                _kill_process_group(process)
        if self.watchdog is not None and process is not None:
            self.watchdog.unwatch(process.pid)
        if self.credentials is not None:
            self.credentials.revoke_function(self.spec.arn, self.pool_worker)

    def close_log(self) -> None:
        """After `stop`: close the log file once the process's last output is in (a retired generation)."""
        if self._pump is not None:
            self._pump.join(STOP_GRACE_S)  # a child that outlives the process may hold the pipe a little longer
        if self._log is not None and not self._shared_log and (self._pump is None or not self._pump.is_alive()):
            self._log.close()

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    def supervisor_status(self) -> None:
        """A function process reports no inference workers (a connector in one is seen only as its process)."""
        return None

    def health(self) -> Dict[str, object]:
        return worker_health(self.spec.arn, self.worker_id, self.pid, self.state, self.queue.in_flight > 0)


def _kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything in the session it leads (it was started with start_new_session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
