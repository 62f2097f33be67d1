"""`ggic run`: the local Greengrass runtime in the foreground, from a connector definition or a group."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

from connector.contract.environment import ENGINE_ENV
from connector.control.cli.arguments import DEFAULT_REGION, CLIError, aws_region, default_region, pick
from connector.core.invocations import DEFAULT_MAX_WORK_ITEMS
from connector.core.http_limits import DEFAULT_MAX_CONNECTIONS, IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S
from connector.core.ipc_server import DEFAULT_MAX_BODY_BYTES
from connector.core.logfiles import DEFAULT_MAX_BYTES as DEFAULT_LOG_MAX_BYTES
from connector.core.mqtt_bridge import DEFAULT_MAX_QUEUED as DEFAULT_MQTT_MAX_QUEUED
from connector.core.on_demand import DEFAULT_IDLE_S as DEFAULT_ON_DEMAND_IDLE_S
from connector.core.on_demand import DEFAULT_MAX_PROCESSES as DEFAULT_ON_DEMAND_MAX_PROCESSES

log = logging.getLogger("ggic")


def runtime_config(args: argparse.Namespace, region: str):
    """The runtime's settings from `ggic run`'s options."""
    from connector.core.runtime import RuntimeConfig

    return RuntimeConfig(state_dir=args.state_dir, region=region, host=args.host, port=args.port,
                         greengrass_root=args.greengrass_root, max_work_items=args.max_queued_requests,
                         max_request_bytes=args.max_request_bytes, log_max_bytes=args.log_max_bytes,
                         max_connections=args.max_connections, idle_timeout_s=args.ipc_idle_timeout,
                         request_timeout_s=args.ipc_request_timeout,
                         max_image_pixels=args.max_image_pixels, max_image_scans=args.max_image_scans,
                         engine=args.engine, workers=args.workers,
                         mqtt_broker=args.mqtt_broker, mqtt_client_id=args.mqtt_client_id,
                         mqtt_max_queued=args.mqtt_max_queued, connector_hosting=args.connector_hosting,
                         connector_package=args.connector_package, on_demand_idle_s=args.on_demand_idle,
                         on_demand_max_processes=args.on_demand_max_processes)


def cmd_run(args: argparse.Namespace) -> int:
    from connector.control.definition_store import ConnectorDefinitionStore
    from connector.control.groups import connector_deployments
    from connector.core.logfiles import system_log_handler
    from connector.core.runtime import Runtime, RuntimeStartError
    from connector.core.state_lock import StateDirectoryInUseError

    _check_engine(args.engine)
    if args.group:
        if args.connector_definition:
            raise CLIError("give --group or --connector-definition, not both: a group names its connectors")
        if args.subscription_definition:
            raise CLIError("give --group or --subscription-definition, not both: a group's subscriptions are its "
                           "group version's SubscriptionDefinitionVersionArn")
        return _run_group(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    connectors: List[Dict[str, Any]] = []
    if args.connector_definition:
        store = ConnectorDefinitionStore(args.state_dir, default_region() or DEFAULT_REGION)
        record = pick(store, args.connector_definition, store.label)
        connectors = record["Version"].get("Connectors", [])
    if not connectors and not args.lambdas:
        raise CLIError("nothing to run: give --connector-definition and/or --lambda")
    subscriptions = _subscriptions(args)
    region = aws_region(args, *(connector["ConnectorArn"] for connector in connectors))
    _check_platforms(connectors, args.allow_platform_mismatch)
    deployments = connector_deployments(connectors, region)
    config = runtime_config(args, region)
    logging.getLogger().addHandler(system_log_handler(config.system_log, config.log_max_bytes))
    try:
        runtime = Runtime(config, deployments, args.lambdas or [], subscriptions)
    except RuntimeStartError as exc:
        raise CLIError(str(exc)) from None

    signals = StopSignals()
    try:
        runtime.start()
    except StartInterrupted as exc:
        return _stop_interrupted(runtime, exc)
    except (RuntimeStartError, StateDirectoryInUseError) as exc:
        raise CLIError(str(exc)) from None
    signals.started()
    for deployment in deployments:
        log.info("connector %s serves %s", deployment.connector_id, deployment.function_arn)
    signals.wait()
    runtime.stop()
    return 0


class StartInterrupted(Exception):
    """SIGINT (Ctrl-C) or SIGTERM arrived while the runtime was starting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM: during start-up they interrupt it (`StartInterrupted`, raised once, where the main
    thread waits), so a Ctrl-C while a model loads stops at once and quietly; once started, they ask the runtime to
    stop (`wait` returns)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._starting = True
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self._stop.set()
        if self._starting:
            self._starting = False
            raise StartInterrupted(signum)

    def started(self) -> None:
        self._starting = False

    def wait(self) -> None:
        self._stop.wait()


def _stop_interrupted(runtime: Optional[Any], interrupt: StartInterrupted) -> int:
    """Stop what had started (unless the caller did), say so in one line, and exit as a shell reports the signal
    (128 + its number)."""
    log.info("interrupted by %s while starting", interrupt)
    if runtime is not None:
        runtime.stop()
    return 128 + interrupt.signum


def _subscriptions(args: argparse.Namespace) -> List[Dict[str, str]]:
    """The Subscriptions of `--subscription-definition` (none without it)."""
    from connector.control.definition_store import SubscriptionDefinitionStore

    if not args.subscription_definition:
        return []
    store = SubscriptionDefinitionStore(args.state_dir, DEFAULT_REGION)
    record = pick(store, args.subscription_definition, store.label)
    return record["Version"].get("Subscriptions", [])


def _broker_address(text: str):
    """argparse type of --mqtt-broker."""
    from connector.core.mqtt_bridge import parse_broker_address

    try:
        return parse_broker_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_engine(engine: Optional[str]) -> None:
    """Refuse, before anything starts, an engine that cannot run on this machine (`--engine` or GGIC_ENGINE): the
    workers would each fail to load with the same reason."""
    if not engine:
        return
    from connector.image_classification.engines import EngineUnavailableError, choose_engine

    try:
        choose_engine(engine)
    except EngineUnavailableError as exc:
        raise CLIError(str(exc)) from None


def _check_platforms(connectors: List[Dict[str, Any]], allow: bool) -> None:
    """Refuse, before anything starts, connectors built for another platform than this machine's."""
    from connector.contract.catalog import connector_spec
    from connector.devices.platforms import PlatformMismatchError, check_connector_platforms

    described = []
    for connector in connectors:
        spec = connector_spec(connector["ConnectorArn"])
        described.append((connector["Id"], spec.name, spec.platform))
    try:
        for warning in check_connector_platforms(described, allow=allow):
            log.warning("%s", warning)
    except PlatformMismatchError as exc:
        raise CLIError(str(exc)) from None


def _run_group(args: argparse.Namespace) -> int:
    """`ggic run --group`: serve the group's current deployment and apply later ones as they come."""
    from connector.contract.problems import BadRequestError
    from connector.control.groups import GroupNotFoundError, GroupStore, LocalDeployments
    from connector.core.deployments import start_group_runtime
    from connector.core.logfiles import system_log_handler
    from connector.core.runtime import RuntimeStartError
    from connector.core.state_lock import StateDirectoryInUseError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    store = GroupStore(args.state_dir, DEFAULT_REGION)
    record = pick(store, args.group, "group")
    try:
        group_id = record["Group"]["Id"]
        region = aws_region(args, record["Group"]["Arn"])
        # Every deployment's connectors pass the platform check, the later ones too (a failure fails that one).
        source = LocalDeployments(store, group_id, region,
                                  check=lambda connectors: _check_platforms(connectors, args.allow_platform_mismatch))
        current = source.current()
        if current is None:
            raise CLIError(f"group {group_id} has no deployment to run: `ggic create-deployment --group-id "
                           f"{group_id} --deployment-type NewDeployment` first")
    except (GroupNotFoundError, BadRequestError) as exc:
        raise CLIError(str(exc)) from None
    config = runtime_config(args, region)
    logging.getLogger().addHandler(system_log_handler(config.system_log, config.log_max_bytes))
    signals = StopSignals()
    try:
        runtime = start_group_runtime(config, source, args.lambdas or [])  # stops what it started if interrupted
    except StartInterrupted as exc:
        return _stop_interrupted(None, exc)
    except (RuntimeStartError, StateDirectoryInUseError, GroupNotFoundError, BadRequestError) as exc:
        raise CLIError(str(exc)) from None
    signals.started()
    log.info("group %s: serving deployment %s (group version %s)", group_id, current["DeploymentId"],
             current["GroupVersionId"])
    signals.wait()
    runtime.stop()
    return 0


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", parents=[common], help="run the local Greengrass runtime in the foreground")
    run.add_argument("--connector-definition", metavar="ID|NAME")
    run.add_argument("--group", metavar="ID|NAME",
                     help="serve the group's deployed version and apply its new deployments without a gap")
    run.add_argument("--lambda", dest="lambdas", action="append", metavar="CODE[@RUNTIME]",
                     help="a long-lived user Lambda: path/to/file.py[:handler] or package.module, optionally on a "
                          "runtime: @python2.7, @python3.7, @python3.8, ... or @/path/to/python (default: ggic's own "
                          "Python and its packages); repeatable")
    run.add_argument("--region")
    run.add_argument("--host", default="127.0.0.1", help="IPC address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="IPC port, 0 for any free one (default 8000)")
    run.add_argument("--greengrass-root", type=Path, help="log root (default <state-dir>/greengrass)")
    run.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                     help="refuse invocations with a larger body before reading it (default 32 MiB)")
    run.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                     help="IPC connections at once; beyond it the longest-idle one is closed, or the newcomer gets "
                          "503 when all are busy (default 256)")
    run.add_argument("--ipc-idle-timeout", type=float, default=IDLE_TIMEOUT_S, metavar="S",
                     help="close an IPC connection that has no request in progress after S seconds (default 120)")
    run.add_argument("--ipc-request-timeout", type=float, default=REQUEST_TIMEOUT_S, metavar="S",
                     help="an IPC request's head and body must arrive within S seconds of its first line "
                          "(default 30)")
    run.add_argument("--engine", choices=("mxnet", "onnxruntime", "opencv"), default=os.environ.get(ENGINE_ENV) or None,
                     help="inference engine of the connectors (default: GGIC_ENGINE, else this platform's: mxnet on "
                          "x86_64, onnxruntime where it imports and else opencv on ARM; docs/engines.md)")
    from connector.image_classification.supervisor import parse_workers
    run.add_argument("--workers", type=parse_workers, default=1, metavar="N|auto",
                     help="inference workers per connector, each with cores/workers engine threads; "
                          "LocalInferenceServiceMemoryLimitKB is shared between them (default 1: the fastest answer "
                          "to one caller; 'auto': as many as the cores and the limit allow, the most requests/s "
                          "for concurrent callers)")
    run.add_argument("--connector-hosting", choices=("native", "lambda"), default="native",
                     help="native (default): the connectors run in the runtime's process, each request handed "
                          "straight to the connector; lambda: each in a Lambda function process of its own, taking "
                          "one request at a time, as a Greengrass core runs it")
    run.add_argument("--connector-package", type=Path, metavar="DIR",
                     help="with --connector-hosting lambda: run the connectors from this unpacked Lambda deployment "
                          "package (make lambda-zip), as a core runs it")
    run.add_argument("--max-image-pixels", type=int,
                     help="refuse images whose header claims more pixels, before decoding (default: what "
                          "LocalInferenceServiceMemoryLimitKB leaves beside the model's measured need, at most "
                          "8192x8192; docs/bounded-inputs.md)")
    run.add_argument("--max-image-scans", type=int,
                     help="refuse JPEGs with more scans, before decoding (default 100; photos have about 10)")
    run.add_argument("--max-queued-requests", type=int, default=DEFAULT_MAX_WORK_ITEMS,
                     help="per function; beyond it callers get a busy error (maxWorkItemCount, default 1024)")
    run.add_argument("--log-max-bytes", type=int, default=DEFAULT_LOG_MAX_BYTES,
                     help="rotate each log file past this size (default 5 MiB, 3 old files kept)")
    run.add_argument("--subscription-definition", metavar="ID|NAME",
                     help="route iot-data publishes through this subscription definition's subscriptions")
    run.add_argument("--mqtt-broker", type=_broker_address, metavar="HOST:PORT",
                     help="the MQTT broker that is the subscriptions' `cloud` (needed when one names cloud)")
    run.add_argument("--mqtt-client-id", help="client id at the broker (default ggic-<thing or host name>)")
    run.add_argument("--mqtt-max-queued", type=int, default=DEFAULT_MQTT_MAX_QUEUED,
                     help="messages for the cloud kept while the broker is away; beyond, they are dropped "
                          f"(default {DEFAULT_MQTT_MAX_QUEUED})")
    run.add_argument("--on-demand-idle", type=float, default=DEFAULT_ON_DEMAND_IDLE_S, metavar="S",
                     help="a group's on-demand Lambda: stop a process idle this long "
                          f"(default {DEFAULT_ON_DEMAND_IDLE_S:g} s)")
    run.add_argument("--on-demand-max-processes", type=int, default=DEFAULT_ON_DEMAND_MAX_PROCESSES, metavar="N",
                     help="a group's on-demand Lambda: processes at once, at most (a core's maxConcurrentLimit, "
                          f"default {DEFAULT_ON_DEMAND_MAX_PROCESSES})")
    run.add_argument("--allow-platform-mismatch", action="store_true",
                     help="run connectors built for another platform than this machine's (testing only; "
                          "also GGIC_ALLOW_PLATFORM_MISMATCH=1)")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=cmd_run)
