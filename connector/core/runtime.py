"""The local Greengrass runtime behind `ggic run`: one IPC server plus the long-lived functions of a group.

It gives every function the environment a Greengrass core gives a Lambda, hosts each connector of the catalog
under its function's ARN (image classification: `arn:aws:lambda:<region>:aws:function:GG-ML-INF-image-
classification-<LocalInferenceServiceName>`, ML Feedback: `...:function:MLFeedback`), in the runtime's own process
(`native.py`, the default) or as a Lambda function process like a core (`--connector-hosting lambda`), and writes
`<state-dir>/env` so that other processes (`ggic env`, `ggic invoke`) can act as Lambdas of it. It knows the
connectors only through the catalog and the hosting contract (`connector.contract`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from connector.contract.catalog import connector_spec
from connector.contract.greengrass import ROUTER_FUNCTION_ARN, encode_client_context
from connector.contract.hosting import ConnectorSettings, HostServices, connector_environment
from connector.contract.status import SupervisorStatus
from connector.contract.supervision import State
from connector.core.credentials import Credentials
from connector.contract.processes import MemoryWatchdog
from connector.core.functions import TOKEN_VARIABLE, FunctionProcess, FunctionSpec
from connector.core.group_functions import BINARY, JSON, READ_WRITE, GroupFunction
from connector.core.interpreters import InterpreterNotFoundError, RuntimeNotSupportedError, resolve
from connector.core.invocations import DEFAULT_MAX_WORK_ITEMS, REQUEST_RESPONSE, Dispatcher, Invocation, unqualified_arn
from connector.core.http_limits import DEFAULT_MAX_CONNECTIONS, IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S
from connector.core.ipc_server import DEFAULT_MAX_BODY_BYTES, IPCServer
from connector.core.lambda_site import build_lambda_site
from connector.core.logfiles import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, RotatingLogFile
from connector.core.metrics import RuntimeMetrics, function_name
from connector.core.mqtt_bridge import DEFAULT_MAX_QUEUED, MqttBridge, default_client_id
from connector.core.native import NativeFunction
from connector.core.on_demand import DEFAULT_IDLE_S, DEFAULT_MAX_PROCESSES, OnDemandFunction
from connector.core.router import (
    CLOUD_ENDPOINT,
    Publish,
    Router,
    SubscriptionError,
    SubscriptionTable,
    hosting_problems,
)
from connector.core.state_lock import StateDirectoryLock

log = logging.getLogger("ggic.runtime")

# What greengrasssdk 1.6.1 and the ML SDK expect from a Greengrass 1.11 core.
GGC_MAX_INTERFACE_VERSION = "1.5"
SHADOW_FUNCTION_ARN = "arn:aws:lambda:::function:GGShadowService"
SECRETS_MANAGER_FUNCTION_ARN = "arn:aws:lambda:::function:GGSecretManager:1"
DEFAULT_ACCOUNT_ID = "000000000000"
CLIENT_FUNCTION_NAME = "ggic-client"
INITIALIZATION_TIMEOUT_S = 300.0
NATIVE, LAMBDA = "native", "lambda"  # how the runtime hosts its connectors (--connector-hosting)
CONNECTOR_HOSTINGS = (NATIVE, LAMBDA)
# Hosted functions: a connector in the runtime's process, or any function in a process of its own.
HostedFunction = Union[NativeFunction, FunctionProcess, OnDemandFunction]
RESOURCE_PATH_PREFIX = "GGIC_RESOURCE_PATH_"  # + a resource's id: where a function finds a resource it may access


class RuntimeStartError(RuntimeError):
    """The runtime could not come up (a port in use, a connector that failed to initialize, ...)."""


@dataclass
class RuntimeConfig:
    state_dir: Path
    region: str
    account_id: str = DEFAULT_ACCOUNT_ID
    host: str = "127.0.0.1"
    port: int = 8000
    greengrass_root: Optional[Path] = None
    max_work_items: int = DEFAULT_MAX_WORK_ITEMS
    max_request_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout_s: float = IDLE_TIMEOUT_S        # an IPC connection with no request in progress
    request_timeout_s: float = REQUEST_TIMEOUT_S  # from an IPC request's first line to its body's last byte
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUPS
    max_image_pixels: Optional[int] = None
    max_image_scans: Optional[int] = None
    engine: Optional[str] = None  # "mxnet", "onnxruntime" or "opencv" for every connector; None: the platform default
    workers: int | str = 1  # inference workers per connector (cores / workers engine threads each), or "auto"
    connector_hosting: str = NATIVE  # or LAMBDA: each connector in a function process, as a Greengrass core runs it
    connector_package: Optional[Path] = None  # LAMBDA: run the connectors from this unpacked `make lambda-zip`
    mqtt_broker: Optional[Tuple[str, int]] = None  # the `cloud` of the subscriptions (host, port)
    mqtt_client_id: Optional[str] = None           # default ggic-<thing or host name>
    mqtt_max_queued: int = DEFAULT_MAX_QUEUED      # messages for the cloud kept while the broker is away
    on_demand_idle_s: float = DEFAULT_IDLE_S       # an on-demand Lambda's process idle this long is stopped
    on_demand_max_processes: int = DEFAULT_MAX_PROCESSES  # processes of one on-demand Lambda at once

    @property
    def root(self) -> Path:
        return self.greengrass_root or self.state_dir / "greengrass"

    @property
    def user_log_dir(self) -> Path:
        return self.root / "ggc" / "var" / "log" / "user" / self.region

    @property
    def system_log(self) -> Path:
        return self.root / "ggc" / "var" / "log" / "system" / "runtime.log"

    @property
    def connector_settings(self) -> ConnectorSettings:
        return ConnectorSettings(model_cache=self.state_dir / "model-cache", engine=self.engine,
                                 workers=self.workers, max_image_pixels=self.max_image_pixels,
                                 max_image_scans=self.max_image_scans)


@dataclass
class ConnectorDeployment:
    """One connector of the connector definition, as the runtime hosts it."""

    connector_id: str
    connector_arn: str
    function_arn: str
    parameters: Dict[str, str] = field(default_factory=dict)


def lambda_function_spec(target: str, config: RuntimeConfig) -> FunctionSpec:
    """`--lambda PATH.py[:handler][@RUNTIME]` or `--lambda package.module[@RUNTIME]` → a function of this runtime.

    RUNTIME is a Lambda runtime name (python2.7, python3.8, ...) or an interpreter's path; without one the function
    runs on the runtime's own Python, with the packages installed beside ggic.
    """
    code, _, runtime = target.rpartition("@") if "@" in target and not Path(target).exists() else (target, "", "")
    interpreter = None
    if runtime:
        try:
            interpreter = resolve(runtime)
        except (InterpreterNotFoundError, RuntimeNotSupportedError) as exc:
            raise RuntimeStartError(f"--lambda {target}: {exc}") from None
    path_text, with_handler, handler_name = code.partition(".py:")
    path = Path(path_text + ".py") if with_handler else Path(code)
    if path.suffix == ".py":
        if not path.is_file():
            raise RuntimeStartError(f"--lambda {target}: no such file {path}")
        name, handler = path.stem, f"{path.resolve()}:{handler_name or 'function_handler'}"
        working_dir = path.resolve().parent
    else:
        name, handler, working_dir = code.rsplit(".", 1)[-1], f"{code}.function_handler", None
    name = re.sub(r"[^a-zA-Z0-9_-]", "-", name)
    arn = f"arn:aws:lambda:{config.region}:{config.account_id}:function:{name}"
    return FunctionSpec(arn=arn, handler=handler, working_dir=working_dir, interpreter=interpreter,
                        log_path=config.user_log_dir / config.account_id / f"{name}.log",
                        log_max_bytes=config.log_max_bytes, log_backups=config.log_backups)


def connector_function_spec(connector: ConnectorDeployment, config: RuntimeConfig) -> FunctionSpec:
    """The function of a connector: its catalog handler, binary encoding, its parameters (and, for a function
    process, the runtime's connector settings) as environment, its timeout as the catalog names it. A qualified ARN
    (`...:function:NAME:QUALIFIER`, a group deployment's generation) keeps the function's log file."""
    catalog = connector_spec(connector.connector_arn)
    name = connector.function_arn.split(":function:", 1)[1].split(":", 1)[0]
    environment = connector_environment(connector.parameters, config.connector_settings, connector.connector_arn,
                                        connector.connector_id)
    return FunctionSpec(arn=connector.function_arn, handler=catalog.handler, encoding="binary",
                        environment=environment, log_path=config.user_log_dir / "aws" / f"{name}.log",
                        working_dir=config.connector_package, is_connector=True,
                        timeout_s=catalog.function_timeout_s(connector.parameters),
                        log_max_bytes=config.log_max_bytes, log_backups=config.log_backups)


def resource_variable(resource_id: str) -> str:
    """`GGIC_RESOURCE_PATH_<ID>`: the variable that tells a function where a resource it may access lies."""
    return RESOURCE_PATH_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", resource_id).upper()


def group_function_spec(function: GroupFunction, config: RuntimeConfig) -> FunctionSpec:
    """A group's user Lambda as this runtime runs it: on its runtime's interpreter, its handler inside its package,
    with the core's variables and its own `Environment.Variables` only. RuntimeStartError names what cannot run
    here (an interpreter this machine lacks, an `Executable`, a resource path that is missing or not accessible)."""
    what = f"function {function.arn} (version {function.version})"
    if function.executable:
        raise RuntimeStartError(f"{what}: Executable {function.executable!r} cannot run here: ggic runs Python "
                                f"Lambdas (a handler module.function on a python runtime) only")
    if function.encoding not in (JSON, BINARY):
        raise RuntimeStartError(f"{what}: EncodingType {function.encoding!r} is neither json nor binary")
    try:
        interpreter = resolve(function.runtime)
    except (InterpreterNotFoundError, RuntimeNotSupportedError) as exc:
        raise RuntimeStartError(f"{what}: {exc}") from None
    if not Path(function.code_dir).is_dir():
        raise RuntimeStartError(f"{what}: its deployment package {function.code_dir} is missing")
    environment = dict(function.variables)
    for access in function.resource_access:
        mode, needs = (os.R_OK | os.W_OK, "read-write") if access.permission == READ_WRITE else (os.R_OK, "read")
        if not os.path.exists(access.path):
            raise RuntimeStartError(f"{what}: resource {access.resource_id} is at {access.path}, which does not exist")
        if not os.access(access.path, mode):
            raise RuntimeStartError(f"{what}: resource {access.resource_id} at {access.path} is not {needs} "
                                    f"accessible to this runtime")
        environment[resource_variable(access.resource_id)] = str(access.path)
    name = re.sub(r"[^a-zA-Z0-9_-]", "-", function.name)
    # Its process runs as MY_FUNCTION_ARN ...:function:NAME:VERSION (context.function_version is the version, as
    # in AWS Lambda); callers may name it by any qualifier or none.
    arn = unqualified_arn(function.arn) + f":{function.version}"
    return FunctionSpec(arn=arn, handler=function.handler, log_path=config.user_log_dir / config.account_id /
                        f"{name}.log", encoding=function.encoding, environment=environment,
                        working_dir=Path(function.code_dir), timeout_s=function.timeout_s, interpreter=interpreter,
                        memory_kb=function.memory_kb, pinned=function.pinned, own_environment=False,
                        group_function=True, log_max_bytes=config.log_max_bytes, log_backups=config.log_backups)


def function_kind(spec: FunctionSpec) -> str:
    """How messages name a function: connector function, (pinned or on-demand) Lambda function."""
    if spec.is_connector:
        return "connector function"
    return ("pinned" if spec.pinned else "on-demand") + " Lambda function"


class Runtime:
    """Starts the IPC server and the functions, reports readiness, stops everything on request."""

    dispatcher_class = Dispatcher  # deployments.GroupRuntime routes invocations between generations

    def __init__(self, config: RuntimeConfig, connectors: List[ConnectorDeployment],
                 lambdas: List[str], subscriptions: Sequence[Mapping[str, str]] = (),
                 functions: Sequence[GroupFunction] = ()) -> None:
        self.config = config
        self.credentials = Credentials()  # fresh tokens for every start: one per function and per client
        self.metrics = RuntimeMetrics(self.snapshot)
        self.dispatcher = self.dispatcher_class(on_finished=self.metrics.observe)
        self.connectors: Dict[str, ConnectorDeployment] = {c.function_arn: c for c in connectors}
        self.specs: List[FunctionSpec] = [connector_function_spec(c, config) for c in connectors]
        self.specs += [lambda_function_spec(target, config) for target in lambdas]
        self.specs += [group_function_spec(function, config) for function in functions]
        self.memory = MemoryWatchdog()  # holds group Lambdas to their MemorySize
        self.functions: Dict[str, HostedFunction] = {}
        self.server: Optional[IPCServer] = None
        self.lambda_site: Optional[Path] = None  # built at start: see lambda_site.py
        self._server_thread: Optional[threading.Thread] = None
        self._lock: Optional[StateDirectoryLock] = None  # held from start to stop: one runtime per state dir
        arns = [unqualified_arn(spec.arn) if spec.group_function else spec.arn for spec in self.specs]
        duplicates = sorted({arn for arn in arns if arns.count(arn) > 1})
        if duplicates:
            raise RuntimeStartError(f"two functions would have the same ARN: {', '.join(duplicates)}")
        self.router, self.bridge = self._routing(connectors, subscriptions)

    def subscription_table(self, connectors: List[ConnectorDeployment],
                           subscriptions: Sequence[Mapping[str, str]],
                           specs: Optional[Sequence[FunctionSpec]] = None) -> SubscriptionTable:
        """The subscriptions as a table this runtime can route with these connectors and its Lambdas; raises
        RuntimeStartError naming each subscription it cannot (a target it does not host, cloud without broker)."""
        try:
            table = SubscriptionTable.from_definition(subscriptions)
        except SubscriptionError as exc:
            raise RuntimeStartError(str(exc)) from None
        functions = [spec.arn for spec in (self.specs if specs is None else specs) if not spec.is_connector] + \
            [c.function_arn for c in connectors]
        errors, warnings = hosting_problems(table, functions, [c.connector_arn for c in connectors],
                                            self.config.mqtt_broker is not None)
        if errors:
            raise RuntimeStartError("the subscriptions cannot be routed by this runtime:\n  " + "\n  ".join(errors))
        for warning in warnings:
            log.warning("%s", warning)
        return table

    def _routing(self, connectors: List[ConnectorDeployment], subscriptions: Sequence[Mapping[str, str]]) \
            -> Tuple[Router, Optional[MqttBridge]]:
        """The router of the subscription table and, with a broker, the MQTT bridge that is its `cloud`."""
        table = self.subscription_table(connectors, subscriptions)
        router = Router(table, self.dispatcher, {c.connector_arn: c.function_arn for c in connectors}, self.metrics)
        if self.config.mqtt_broker is None:
            return router, None
        bridge = MqttBridge(self.config.mqtt_broker, self.config.mqtt_client_id or default_client_id(),
                            table.filters_from(CLOUD_ENDPOINT), router.publish_from_cloud, self.config.mqtt_max_queued)
        router.cloud = bridge
        self.metrics.watch_mqtt(bridge.state)
        return router, bridge

    @property
    def env_file(self) -> Path:
        return self.config.state_dir / "env"

    @property
    def state_file(self) -> Path:
        return self.config.state_dir / "runtime.json"

    @property
    def control_token_file(self) -> Path:
        """Owner-only: the token that issues client tokens (`ggic env`); no function is given it."""
        return self.config.state_dir / "control-token"

    def core_environment(self) -> Dict[str, str]:
        """The variables a Greengrass core sets for every Lambda (MY_FUNCTION_ARN and the token, AWS_CONTAINER_
        AUTHORIZATION_TOKEN, are set per function)."""
        assert self.server is not None
        return {
            "AWS_REGION": self.config.region,
            "GG_DAEMON_PORT": str(self.server.port),
            "GGC_MAX_INTERFACE_VERSION": GGC_MAX_INTERFACE_VERSION,
            "ROUTER_FUNCTION_ARN": ROUTER_FUNCTION_ARN,
            "SHADOW_FUNCTION_ARN": SHADOW_FUNCTION_ARN,
            "SECRETS_MANAGER_FUNCTION_ARN": SECRETS_MANAGER_FUNCTION_ARN,
        }

    def client_arn(self) -> str:
        return f"arn:aws:lambda:{self.config.region}:{self.config.account_id}:function:{CLIENT_FUNCTION_NAME}"

    def client_environment(self) -> Dict[str, str]:
        """The environment of a process that acts as a Lambda of this runtime (`ggic env`), on any Python: the
        core-side modules are on its PYTHONPATH. Without its token: `ggic env` asks the runtime for one of its own."""
        env = self.core_environment()
        env["MY_FUNCTION_ARN"] = self.client_arn()
        env["PYTHONPATH"] = str(self.lambda_site)
        return env

    def start(self) -> None:
        """Start serving. StateDirectoryInUseError (before anything is written) when another runtime holds the
        state directory; RuntimeStartError when this one cannot come up."""
        state_dir = self.config.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
        self._lock = StateDirectoryLock.acquire(state_dir)
        self.lambda_site = build_lambda_site(state_dir / "lambda-site")
        try:
            self.server = IPCServer((self.config.host, self.config.port), self.dispatcher, self.credentials,
                                    on_initialized=self._on_initialized, workers=self._workers,
                                    max_body_bytes=self.config.max_request_bytes, readiness=self.readiness,
                                    metrics=self.metrics, router=self.router,
                                    max_connections=self.config.max_connections, client_arn=self.client_arn,
                                    idle_timeout_s=self.config.idle_timeout_s,
                                    request_timeout_s=self.config.request_timeout_s)
        except OSError as exc:
            self._lock.release()
            raise RuntimeStartError(f"cannot listen on {self.config.host}:{self.config.port}: {exc}") from None
        self._lock.record(host=self.config.host, port=self.server.port)
        self._server_thread = threading.Thread(target=self.server.serve_forever, name="ipc-server", daemon=True)
        self._server_thread.start()
        log.info("Greengrass IPC server listening on %s:%d", self.config.host, self.server.port)

        if self.bridge is not None:  # before the functions: what they publish at start waits in its queue
            self.bridge.start()
        for spec in self.specs:
            queue = self.dispatcher.add_function(spec.arn, self.config.max_work_items, spec.timeout_s,
                                                 shed_load=spec.is_connector)
            self.functions[queue.function_arn] = self.host(spec, queue)
        for function in self.functions.values():
            function.start()
        self.dispatcher.start_sweeper(self._on_stuck)

        for function in self.functions.values():
            if not (function.spec.is_connector or function.spec.group_function):  # a group's Lambdas too
                continue
            state = function.wait_settled(INITIALIZATION_TIMEOUT_S)
            if state != State.READY:
                reason = function.init_error or f"not initialized after {INITIALIZATION_TIMEOUT_S:.0f} s"
                self.stop()
                raise RuntimeStartError(f"{function_kind(function.spec)} {function.spec.arn} failed to start: "
                                        f"{reason} (log: {function.spec.log_path})")
        self._write_state()
        log.info("runtime ready: %d function(s) on %s:%d; client environment in %s",
                 len(self.functions), self.config.host, self.server.port, self.env_file)

    def host(self, spec: FunctionSpec, queue) -> HostedFunction:
        """How a function runs: a connector natively in this process (unless --connector-hosting lambda), anything
        else in a process of its own, on its runtime's interpreter."""
        connector = self.connectors.get(spec.arn)
        if spec.group_function:
            queue.execution_timeout = True  # a Lambda's Timeout counts its run, not its wait in the queue
            if spec.pinned:
                return FunctionProcess(spec, queue, self.core_environment(), self.lambda_site, self.credentials,
                                       self.memory)
            shared_log = RotatingLogFile(spec.log_path, spec.log_max_bytes, spec.log_backups)
            return OnDemandFunction(
                spec, queue, lambda on_ended: FunctionProcess(spec, queue, self.core_environment(), self.lambda_site,
                                                              self.credentials, self.memory, on_ended, shared_log),
                self.config.on_demand_max_processes, self.config.on_demand_idle_s, shared_log)
        if connector is None or self.config.connector_hosting == LAMBDA:
            return FunctionProcess(spec, queue, self.core_environment(), self.lambda_site, self.credentials)
        entry_point = connector_spec(connector.connector_arn).hosted
        return NativeFunction(spec, queue, entry_point, lambda logger, capture: self._services(connector, logger,
                                                                                            capture))

    def _services(self, connector: ConnectorDeployment, logger: logging.Logger,
                  capture: Callable[[BinaryIO], None]) -> HostServices:
        """What a natively hosted connector gets from the core: its parameters and settings, its log, and the
        group's subscriptions and functions as a Lambda reaches them over IPC."""
        function_arn = connector.function_arn

        def publish(topic: str, payload: Any) -> None:
            if isinstance(payload, (dict, list)):  # as greengrasssdk's iot-data client sends them
                payload = json.dumps(payload)
            data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8")
            self.router.publish(Publish(function_arn, topic, data))

        def invoke(target_arn: str, payload: bytes, custom: Mapping[str, Any]) -> Tuple[bytes, str]:
            invocation = self.dispatcher.submit(target_arn, payload, encode_client_context(custom), REQUEST_RESPONSE)
            try:
                invocation.wait(None)
            finally:
                self.dispatcher.forget(invocation.id)
            return invocation.result or b"", invocation.function_error

        return HostServices(function_arn=function_arn, connector_arn=connector.connector_arn,
                            connector_id=connector.connector_id, region=self.config.region,
                            parameters=dict(connector.parameters), settings=self.config.connector_settings,
                            log=logger, capture_output=capture, publish=publish, invoke=invoke,
                            extra_environment={**self.core_environment(), "MY_FUNCTION_ARN": function_arn,
                                               TOKEN_VARIABLE: self.credentials.issue_function(function_arn)})

    def _function_for(self, function_arn: str) -> Optional[HostedFunction]:
        """The process a (possibly qualified) function ARN from the IPC server belongs to."""
        return self.functions.get(unqualified_arn(function_arn))

    def _on_initialized(self, function_arn: str, success: bool, response: str, worker: str = "") -> None:
        function = self._function_for(function_arn)
        if function is not None:
            function.initialized(success, response, worker)

    def _workers(self) -> Dict[str, dict]:
        return {arn: function.health() for arn, function in list(self.functions.items())}

    def _on_stuck(self, function_arn: str, overdue: List[Invocation]) -> None:
        function = self._function_for(function_arn)
        if function is not None:
            function.kill_stuck(len(overdue), {invocation.worker for invocation in overdue})

    # --- telling the truth -------------------------------------------------------------------------------------

    def snapshot(self) -> List[Dict[str, object]]:
        """Every function's state: what /health, /metrics and `ggic status` report (`supervisor`: a
        SupervisorStatus for a natively hosted connector with inference workers)."""
        entries = []
        for arn, function in list(self.functions.items()):
            supervisor = function.supervisor_status()
            problem = self._problem(function, supervisor)
            entries.append({
                "function_arn": arn, "connector": function.spec.is_connector, "runtime": self._runtime_of(function),
                "state": function.state.value,
                "pid": function.pid, "queued": len(function.queue), "in_flight": function.queue.in_flight,
                "restarts": function.restarts, "timeout_s": function.spec.timeout_s,
                "ready": problem is None, "problem": problem, "supervisor": supervisor,
                "log": str(function.spec.log_path),
            })
        return entries

    @staticmethod
    def _runtime_of(function: HostedFunction) -> str:
        return "ggic (native)" if isinstance(function, NativeFunction) else function.spec.runtime

    @staticmethod
    def _problem(function: HostedFunction, supervisor: Optional[SupervisorStatus]) -> Optional[str]:
        """Why the function cannot answer now, or None when it can (a connector: its workers answer too)."""
        if function.state != State.READY:
            detail = f": {function.init_error}" if function.init_error else ""
            kind = "connector" if isinstance(function, NativeFunction) else "function process"
            return f"{kind} {function.state.value}{detail}"
        return supervisor.problem() if supervisor is not None else None

    def readiness(self) -> Dict[str, object]:
        functions = self.snapshot()
        summary = self.metrics.summary()
        for entry in functions:
            entry["requests"] = summary.get(function_name(str(entry["function_arn"])), {})
            supervisor = entry["supervisor"]
            entry["supervisor"] = supervisor.to_json() if isinstance(supervisor, SupervisorStatus) else None
        # The broker is reported, not required: inference works without it, and its messages wait in the queue.
        return {"ready": all(entry["ready"] for entry in functions), "functions": functions,
                "uncollected_results": self.dispatcher.uncollected,
                "mqtt": self.bridge.state() if self.bridge is not None else None}

    def _write_state(self) -> None:
        _write_private(self.control_token_file, self.credentials.control_token + "\n")
        env_lines = "".join(f"export {name}={value}\n" for name, value in sorted(self.client_environment().items()))
        _write_private(self.env_file, env_lines)
        state = {
            "pid": os.getpid(),
            "host": self.config.host,
            "port": self.server.port if self.server else None,
            "region": self.config.region,
            "started": time.time(),
            "functions": {arn: {"log": str(f.spec.log_path), "connector": f.spec.is_connector,
                                "runtime": self._runtime_of(f), "python": f.spec.python,
                                "handler": f.spec.handler, "timeout_s": f.spec.timeout_s}
                          for arn, f in list(self.functions.items())},
            **self.extra_state(),
        }
        _write_private(self.state_file, json.dumps(state, indent=2))

    def extra_state(self) -> Dict[str, object]:
        """More for `<state-dir>/runtime.json` (a group runtime adds its group and deployment)."""
        return {}

    def stop(self) -> None:
        self.dispatcher.stop_sweeper()
        if self.server is not None:
            self.server.stopping = True
        for function in self.functions.values():
            function.stop()
        for function in self.functions.values():
            function.queue.fail_pending("the Greengrass runtime stopped before this request ran")
            function.queue.fail_in_flight("the Greengrass runtime stopped while this request ran")
        self.memory.stop()
        if self.bridge is not None:
            self.bridge.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self._lock is not None:  # only the holder's files are its own to remove
            for path in (self.env_file, self.state_file, self.control_token_file):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            self._lock.release()
            self._lock = None
        log.info("runtime stopped")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds the runtime's token), atomically."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
