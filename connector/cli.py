"""`ggic`: the command line of the local Greengrass runtime and the image classification connector.

Subcommands follow the AWS CLI's shapes where one exists (`create-connector-definition --initial-version JSON`,
`--body fileb://x.jpg`), so commands from the connector documentation work with `aws greengrass` replaced by `ggic`.
Every subcommand takes `--state-dir` (default `~/.ggic`): several runtimes can live side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .runtime.invocations import DEFAULT_MAX_WORK_ITEMS
from .runtime.ipc_server import DEFAULT_MAX_BODY_BYTES
from .runtime.logfiles import DEFAULT_MAX_BYTES as DEFAULT_LOG_MAX_BYTES
from .runtime.mqtt_bridge import DEFAULT_MAX_QUEUED as DEFAULT_MQTT_MAX_QUEUED

EXIT_SERVICE_ERROR = 254  # what the AWS CLI returns when the service rejects a request
DEFAULT_REGION = "us-east-1"

log = logging.getLogger("ggic")


class CLIError(Exception):
    """A problem to report in one line on stderr, with a non-zero exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# --- argument helpers -------------------------------------------------------------------------------------

def read_json_argument(value: str, what: str) -> Any:
    """Inline JSON or `file://path`, as the AWS CLI takes structured arguments."""
    text = value
    if value.startswith("file://"):
        try:
            text = Path(value[len("file://"):]).expanduser().read_text()
        except OSError as exc:
            raise CLIError(f"{what}: cannot read {value}: {exc}", 255) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CLIError(f"{what}: invalid JSON: {exc}", 255) from None


def read_blob_argument(value: str) -> bytes:
    """`fileb://path` (AWS CLI), a plain path, or `-` for standard input."""
    if value == "-":
        return sys.stdin.buffer.read()
    path = value[len("fileb://"):] if value.startswith("fileb://") else value
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise CLIError(f"--body: cannot read {path}: {exc}", 255) from None


def default_region() -> Optional[str]:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def read_labels(path: Path) -> List[str]:
    """Class names in index order: one per line, a JSON list, or a JSON object keyed "0", "1", ..."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return [str(data[key]) for key in sorted(data, key=int)]
        return [str(item) for item in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def definition_request(args: argparse.Namespace) -> Dict[str, Any]:
    """A Create*Definition request from `--initial-version`, `--name` and `--tags`, as the AWS CLI builds it."""
    request: Dict[str, Any] = {"InitialVersion": read_json_argument(args.initial_version, "--initial-version")}
    if args.name is not None:
        request["Name"] = args.name
    if args.tags is not None:
        request["tags"] = read_json_argument(args.tags, "--tags")
    return request


# --- subcommands ------------------------------------------------------------------------------------------

def _create_definition(args: argparse.Namespace, operation: str, validate, store_class, arns) -> int:
    """A Create*Definition command: validate the request (every problem at once, as the API's BadRequest), print
    the warnings, store it in the region of `--region`, the AWS variables or `arns(InitialVersion)`, print the
    AWS-shaped response."""
    from .parameters import BadRequestError

    try:
        request, warnings = validate(definition_request(args))
    except BadRequestError as exc:
        return _bad_request(operation, exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    store = store_class(args.state_dir, _region(args, *arns(request["InitialVersion"])))
    print(json.dumps(store.create(request.get("Name", ""), request["InitialVersion"], request.get("tags")), indent=4))
    return 0


def cmd_create_connector_definition(args: argparse.Namespace) -> int:
    from .definitions import ConnectorDefinitionStore
    from .parameters import validate_connector_definition

    return _create_definition(args, "CreateConnectorDefinition", validate_connector_definition,
                              ConnectorDefinitionStore,
                              lambda version: [c["ConnectorArn"] for c in version.get("Connectors", [])])


def _region(args: argparse.Namespace, *arns: Optional[str]) -> str:
    """--region, else the standard AWS variables, else the first ARN's own region, else us-east-1."""
    return args.region or default_region() or _arn_region(*arns) or DEFAULT_REGION


def runtime_config(args: argparse.Namespace, region: str):
    """The runtime's settings from `ggic run`'s options."""
    from .runtime.runtime import RuntimeConfig

    return RuntimeConfig(state_dir=args.state_dir, region=region, host=args.host, port=args.port,
                         greengrass_root=args.greengrass_root, max_work_items=args.max_queued_requests,
                         max_request_bytes=args.max_request_bytes, log_max_bytes=args.log_max_bytes,
                         max_image_pixels=args.max_image_pixels, engine=args.engine, workers=args.workers,
                         mqtt_broker=args.mqtt_broker, mqtt_client_id=args.mqtt_client_id,
                         mqtt_max_queued=args.mqtt_max_queued)


def cmd_run(args: argparse.Namespace) -> int:
    from .definitions import ConnectorDefinitionStore, DefinitionNotFoundError
    from .groups import connector_deployments
    from .runtime.runtime import Runtime, RuntimeStartError

    from .runtime.logfiles import system_log_handler

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
        try:
            record = store.get(args.connector_definition)
        except DefinitionNotFoundError as exc:
            raise CLIError(str(exc)) from None
        connectors = record["Version"].get("Connectors", [])
    if not connectors and not args.lambdas:
        raise CLIError("nothing to run: give --connector-definition and/or --lambda")
    subscriptions = _subscriptions(args)
    region = _region(args, *(connector["ConnectorArn"] for connector in connectors))
    _check_platforms(connectors, args.allow_platform_mismatch)
    deployments = connector_deployments(connectors, region)
    config = runtime_config(args, region)
    logging.getLogger().addHandler(system_log_handler(config.system_log, config.log_max_bytes))
    try:
        runtime = Runtime(config, deployments, args.lambdas or [], subscriptions)
    except RuntimeStartError as exc:
        raise CLIError(str(exc)) from None

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runtime.start()
    except RuntimeStartError as exc:
        raise CLIError(str(exc)) from None
    for deployment in deployments:
        log.info("connector %s serves %s", deployment.connector_id, deployment.function_arn)
    stop.wait()
    runtime.stop()
    return 0


def _subscriptions(args: argparse.Namespace) -> List[Dict[str, str]]:
    """The Subscriptions of `--subscription-definition` (none without it)."""
    from .definitions import DefinitionNotFoundError, SubscriptionDefinitionStore

    if not args.subscription_definition:
        return []
    try:
        record = SubscriptionDefinitionStore(args.state_dir, DEFAULT_REGION).get(args.subscription_definition)
    except DefinitionNotFoundError as exc:
        raise CLIError(str(exc)) from None
    return record["Version"].get("Subscriptions", [])


def _broker_address(text: str):
    """argparse type of --mqtt-broker."""
    from .runtime.mqtt_bridge import parse_broker_address

    try:
        return parse_broker_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_platforms(connectors: List[Dict[str, Any]], allow: bool) -> None:
    """Refuse, before anything starts, connectors built for another platform than this machine's."""
    from .parameters import connector_spec
    from .platforms import PlatformMismatchError, check_connector_platforms

    described = []
    for connector in connectors:
        spec = connector_spec(connector["ConnectorArn"])
        described.append((connector["Id"], spec.name, spec.platform))
    try:
        for warning in check_connector_platforms(described, allow=allow):
            log.warning("%s", warning)
    except PlatformMismatchError as exc:
        raise CLIError(str(exc)) from None


def cmd_status(args: argparse.Namespace) -> int:
    """Readiness, queues, workers and counters of the running runtime, for humans (or --json)."""
    import urllib.error
    import urllib.request

    state_file = args.state_dir / "runtime.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        raise CLIError(f"no runtime is running with state directory {args.state_dir} (no {state_file})") from None
    url = f"http://{state['host']}:{state['port']}/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            report = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: not ready, same report
        report = json.loads(exc.read())
    except OSError as exc:
        raise CLIError(f"the runtime at {url} does not answer: {exc}") from None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_status(report))
    return 0 if report.get("ready") else 3


def format_status(report: Dict[str, Any]) -> str:
    lines = [f"runtime: {'READY' if report.get('ready') else 'NOT READY'}"]
    for entry in report.get("functions", []):
        name = str(entry["function_arn"]).split(":function:", 1)[-1]
        requests = entry.get("requests") or {}
        errors = requests.get("errors") or {}
        refused = requests.get("refused") or {}
        mean = requests.get("mean_latency_s")
        lines.append(f"{name}: {'ready' if entry['ready'] else 'NOT READY: ' + str(entry['problem'])}")
        lines.append(f"  process {entry['pid']} ({entry.get('runtime')}) {entry['state']}, "
                     f"restarts {entry['restarts']}, queued {entry['queued']}, in flight {entry['in_flight']}")
        supervisor = entry.get("supervisor")
        if supervisor:
            workers = supervisor.get("workers") or []
            reasons = ", ".join(f"{k} {v}" for k, v in sorted((supervisor.get("restart_reasons") or {}).items()))
            listed = ", ".join(f"{worker.get('pid')} {worker.get('state')}" for worker in workers)
            rss_kb = sum(worker.get("rss_kb", 0) for worker in workers)
            layout = (supervisor.get("layout") or {}).get("summary")
            if layout:
                lines.append(f"  layout {layout}")
            lines.append(f"  inference worker{'s' if len(workers) > 1 else ''} {listed}, "
                         f"RSS {rss_kb / 1024:.0f} MiB of {supervisor['memory_limit_kb'] / 1024:.0f}"
                         f" MiB limit, restarts {supervisor.get('restarts', 0)}{' (' + reasons + ')' if reasons else ''}")
        lines.append(f"  answered {requests.get('ok', 0)} ok, {sum(errors.values())} errors"
                     f"{' (' + ', '.join(f'{k} {v}' for k, v in sorted(errors.items())) + ')' if errors else ''}"
                     f", refused {sum(refused.values())}"
                     f"{', mean latency %.1f ms' % (mean * 1000) if mean is not None else ''}")
    mqtt = report.get("mqtt")
    if mqtt:  # reported, not required: the runtime is ready without its broker
        lines.append(f"mqtt {mqtt['broker']} as {mqtt['client_id']}: "
                     f"{'connected' if mqtt['connected'] else 'NOT CONNECTED'}"
                     f"{'' if mqtt['connected'] or not mqtt.get('last_error') else ' (' + mqtt['last_error'] + ')'}, "
                     f"{mqtt['queued']} message(s) for the cloud waiting (at most {mqtt['max_queued']})")
    return "\n".join(lines)


def load_client_environment(state_dir: Path) -> Dict[str, str]:
    """The running runtime's client environment, from `<state-dir>/env`."""
    env_file = state_dir / "env"
    state_file = state_dir / "runtime.json"
    if not env_file.is_file():
        raise CLIError(f"no Greengrass runtime is running with state directory {state_dir}: start `ggic run` first")
    try:
        pid = json.loads(state_file.read_text())["pid"]
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError):
        raise CLIError(f"the runtime that wrote {env_file} is no longer running: start `ggic run` again") from None
    environment = {}
    for line in env_file.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        environment[name] = value
    return environment


def cmd_env(args: argparse.Namespace) -> int:
    for name, value in sorted(load_client_environment(args.state_dir).items()):
        print(f"export {name}={value}")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    os.environ.update(load_client_environment(args.state_dir))
    body = read_blob_argument(args.body)
    import greengrass_machine_learning_sdk as ml  # reads the environment at import: set it first

    client = ml.client("inference")
    try:
        response = client.invoke_inference_service(
            AlgoType=args.algo_type, ServiceName=args.service_name, ContentType=args.content_type, Body=body)
    except ml.GreengrassInferenceException as exc:
        raise CLIError(f"the inference service refused the request: {exc}") from None
    except ml.GreengrassDependencyException as exc:
        raise CLIError(f"the inference service could not be reached or failed: {exc}") from None
    text = response["Body"].read().decode("utf-8")
    if not args.top_k and not args.labels:
        print(text)
        return 0
    probabilities = [float(value) for value in text[1:-1].split(",")]
    labels = read_labels(args.labels) if args.labels else []
    ranked = sorted(range(len(probabilities)), key=probabilities.__getitem__, reverse=True)
    for index in ranked[: args.top_k or 5]:
        label = labels[index] if index < len(labels) else ""
        print(f"{probabilities[index]:.4f}  {index:>4}  {label}".rstrip())
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Is this device ready for the connector: system libraries, Python packages, GPU. Exit 1 on any FAIL."""
    from .doctor import format_report, run_doctor

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    report = run_doctor(args.platform, args.library_path)
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


# --- models and group deployment: fetch-model, resource definitions, groups, deployments ---------------------

def _cli_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("botocore").setLevel(logging.WARNING)


def _bad_request(operation: str, exc: Any) -> int:
    """A BadRequestException the way the AWS CLI prints one (exit 254)."""
    print(f"An error occurred (BadRequestException) when calling the {operation} operation: {exc.message}",
          file=sys.stderr)
    print(json.dumps(exc.to_response(), indent=4), file=sys.stderr)
    return EXIT_SERVICE_ERROR


def _arn_region(*arns: Optional[str]) -> Optional[str]:
    """The region of the first ARN that names one (not the documentation's placeholder `region`)."""
    for arn in arns:
        parts = (arn or "").split(":")
        if len(parts) > 3 and parts[3] and parts[3] != "region":
            return parts[3]
    return None


def cmd_fetch_model(args: argparse.Namespace) -> int:
    """What a Greengrass ML resource with a SageMaker source did: the job's model, verified, at --destination."""
    from .fetch_model import FetchModelError, fetch_model, progress_for

    _cli_logging(args.verbose)
    progress = progress_for(sys.stderr)
    try:
        result = fetch_model(args.training_job_arn, args.destination, region=args.region, progress=progress)
    except FetchModelError as exc:
        raise CLIError(f"fetch-model: {exc}") from None
    finally:
        progress.close()
    print(result.summary())
    return 0


def cmd_create_resource_definition(args: argparse.Namespace) -> int:
    from .definitions import ResourceDefinitionStore
    from .groups import SAGEMAKER_RESOURCE, validate_resource_definition

    return _create_definition(
        args, "CreateResourceDefinition", validate_resource_definition, ResourceDefinitionStore,
        lambda version: [r["ResourceDataContainer"][SAGEMAKER_RESOURCE]["SageMakerJobArn"]
                         for r in version["Resources"]])


def cmd_create_subscription_definition(args: argparse.Namespace) -> int:
    from .definitions import SubscriptionDefinitionStore
    from .subscriptions import subscription_arns, validate_subscription_definition

    return _create_definition(args, "CreateSubscriptionDefinition",
                              lambda request: (validate_subscription_definition(request), []),
                              SubscriptionDefinitionStore,
                              lambda version: subscription_arns(version["Subscriptions"]))


def _group_version_argument(args: argparse.Namespace) -> Dict[str, str]:
    """create-group-version's --*-definition-version-arn options as a group version."""
    keys = {"connector": "ConnectorDefinitionVersionArn", "resource": "ResourceDefinitionVersionArn",
            "function": "FunctionDefinitionVersionArn", "subscription": "SubscriptionDefinitionVersionArn",
            "core": "CoreDefinitionVersionArn", "device": "DeviceDefinitionVersionArn",
            "logger": "LoggerDefinitionVersionArn"}
    return {key: getattr(args, f"{kind}_definition_version_arn") for kind, key in keys.items()
            if getattr(args, f"{kind}_definition_version_arn") is not None}


def _check_group_version(args: argparse.Namespace, version: Any, operation: str, where: str) -> Optional[int]:
    """Resolve a group version (BadRequest when it names what is not stored); warn when it cannot be deployed."""
    from .groups import deployment_problems, resolve_group_version
    from .parameters import BadRequestError

    try:
        contents, warnings = resolve_group_version(args.state_dir, version, where)
    except BadRequestError as exc:
        return _bad_request(operation, exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for detail in deployment_problems(contents):
        print(f"warning: this group version cannot be deployed as it is: [{detail['DetailedErrorCode']}] "
              f"{detail['DetailedErrorMessage']}", file=sys.stderr)
    return None


def cmd_create_group(args: argparse.Namespace) -> int:
    from .groups import GROUP_SCHEMA, GroupStore
    from .parameters import BadRequestError, request_problems

    request: Dict[str, Any] = {"Name": args.name}
    if args.initial_version is not None:
        request["InitialVersion"] = read_json_argument(args.initial_version, "--initial-version")
    if args.tags is not None:
        request["tags"] = read_json_argument(args.tags, "--tags")
    details = request_problems(GROUP_SCHEMA, request)
    if details:
        return _bad_request("CreateGroup", BadRequestError(details, f"Invalid group: {len(details)} problem(s) found"))
    version = request.get("InitialVersion")
    if version is not None:
        status = _check_group_version(args, version, "CreateGroup", "InitialVersion")
        if status is not None:
            return status
    region = _region(args, *(version or {}).values())
    print(json.dumps(GroupStore(args.state_dir, region).create(args.name, version, request.get("tags")), indent=4))
    return 0


def cmd_create_group_version(args: argparse.Namespace) -> int:
    from .groups import GroupNotFoundError, GroupStore

    store = GroupStore(args.state_dir, DEFAULT_REGION)
    try:
        group_id = store.get(args.group_id)["Group"]["Id"]
    except GroupNotFoundError as exc:
        raise CLIError(str(exc)) from None
    version = _group_version_argument(args)
    status = _check_group_version(args, version, "CreateGroupVersion", "group version")
    if status is not None:
        return status
    print(json.dumps(store.create_version(group_id, version), indent=4))
    return 0


def _serving_runtime(state_dir: Path, group_id: str) -> Optional[int]:
    """The pid of the `ggic run --group` that serves this group from this state directory, if one runs."""
    try:
        state = json.loads((state_dir / "runtime.json").read_text())
        pid = int(state["pid"])
        if (state.get("group") or {}).get("Id") != group_id:
            return None
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def cmd_create_deployment(args: argparse.Namespace) -> int:
    """Check the group version, fetch its ML resources, hand it to the runtime serving the group."""
    import time

    from .fetch_model import FetchModelError, fetch_model, progress_for
    from .groups import (FAILURE, IN_PROGRESS, SUCCESS, GroupNotFoundError, GroupStore, deployment_problems,
                         resolve_group_version)
    from .parameters import INVALID_REQUEST, BadRequestError

    _cli_logging(args.verbose)
    store = GroupStore(args.state_dir, DEFAULT_REGION)
    try:
        record = store.get(args.group_id)
        group_id = record["Group"]["Id"]
        version_id = args.group_version_id
        if args.deployment_type in ("ResetDeployment", "ForceResetDeployment"):
            return _bad_request("CreateDeployment", BadRequestError([{
                "DetailedErrorCode": INVALID_REQUEST,
                "DetailedErrorMessage": f"DeploymentType {args.deployment_type} is not supported by ggic: stop "
                                        f"`ggic run --group {group_id}` to stop serving the group"}],
                "Unsupported deployment type"))
        if args.deployment_type == "Redeployment":
            if not args.deployment_id:
                return _bad_request("CreateDeployment", BadRequestError([{
                    "DetailedErrorCode": INVALID_REQUEST,
                    "DetailedErrorMessage": "DeploymentType Redeployment needs --deployment-id: the deployment to "
                                            "redo"}], "Missing DeploymentId"))
            version_id = store.deployment(group_id, args.deployment_id)["GroupVersionId"]
        version = store.version(record, version_id)
    except GroupNotFoundError as exc:
        raise CLIError(str(exc)) from None
    try:
        contents, warnings = resolve_group_version(args.state_dir, version["Definition"])
        problems = deployment_problems(contents)
        if problems:
            raise BadRequestError(problems, f"Group version {version['Version']} cannot be deployed: "
                                            f"{len(problems)} problem(s) found")
    except BadRequestError as exc:
        return _bad_request("CreateDeployment", exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)

    deployment = store.create_deployment(group_id, version["Version"], args.deployment_type)
    deployment_id = deployment["DeploymentId"]
    print(json.dumps({"DeploymentArn": deployment["DeploymentArn"], "DeploymentId": deployment_id}, indent=4))
    sys.stdout.flush()
    for resource_id, data in sorted(contents.ml_resources.items()):
        log.info("ML resource %s: the model of %s into %s", resource_id, data["SageMakerJobArn"],
                 data["DestinationPath"])
        progress = progress_for(sys.stderr)
        try:
            result = fetch_model(data["SageMakerJobArn"], Path(data["DestinationPath"]), region=args.region,
                                 progress=progress)
        except FetchModelError as exc:
            message = f"ML resource {resource_id!r}: {exc}"
            store.update_deployment(group_id, deployment_id, FAILURE, message)
            raise CLIError(f"deployment {deployment_id} failed: {message}") from None
        finally:
            progress.close()
        for line in result.summary().splitlines():
            log.info("ML resource %s: %s", resource_id, line)
    store.update_deployment(group_id, deployment_id, IN_PROGRESS)

    if _serving_runtime(args.state_dir, group_id) is None:
        print(f"ggic: no runtime serves group {group_id} from {args.state_dir}: `ggic run --group {group_id}` "
              f"will run this deployment", file=sys.stderr)
        return 0
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.wait_timeout
    while time.monotonic() < deadline:
        current = store.deployment(group_id, deployment_id)
        if current["DeploymentStatus"] == SUCCESS:
            print(f"ggic: deployment {deployment_id} is serving", file=sys.stderr)
            return 0
        if current["DeploymentStatus"] == FAILURE:
            raise CLIError(f"deployment {deployment_id} failed: {current['ErrorMessage']}")
        if _serving_runtime(args.state_dir, group_id) is None:
            raise CLIError(f"the runtime serving group {group_id} stopped before deployment {deployment_id} "
                           f"was applied; `ggic run --group {group_id}` will run it")
        time.sleep(0.1)
    raise CLIError(f"deployment {deployment_id} was not applied within {args.wait_timeout:g} s; see "
                   f"`ggic get-deployment-status --group-id {group_id} --deployment-id {deployment_id}`")


def cmd_get_deployment_status(args: argparse.Namespace) -> int:
    from .groups import GroupNotFoundError, GroupStore

    store = GroupStore(args.state_dir, DEFAULT_REGION)
    try:
        group_id = store.get(args.group_id)["Group"]["Id"]
        deployment = store.deployment(group_id, args.deployment_id)
    except GroupNotFoundError as exc:
        raise CLIError(str(exc)) from None
    print(json.dumps({key: deployment[key] for key in ("DeploymentStatus", "DeploymentType", "ErrorDetails",
                                                       "ErrorMessage", "UpdatedAt")}, indent=4))
    return 0


def _run_group(args: argparse.Namespace) -> int:
    """`ggic run --group`: serve the group's current deployment and apply later ones as they come."""
    from .groups import GroupNotFoundError, GroupStore, LocalDeployments
    from .parameters import BadRequestError
    from .runtime.deployments import start_group_runtime
    from .runtime.logfiles import system_log_handler
    from .runtime.runtime import RuntimeStartError

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    store = GroupStore(args.state_dir, DEFAULT_REGION)
    try:
        record = store.get(args.group)
        group_id = record["Group"]["Id"]
        region = _region(args, record["Group"]["Arn"])
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
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runtime = start_group_runtime(config, source, args.lambdas or [])
    except (RuntimeStartError, GroupNotFoundError, BadRequestError) as exc:
        raise CLIError(str(exc)) from None
    log.info("group %s: serving deployment %s (group version %s)", group_id, current["DeploymentId"],
             current["GroupVersionId"])
    stop.wait()
    runtime.stop()
    return 0


# --- parser -----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=lambda p: Path(p).expanduser(),
                        default=Path(os.environ.get("GGIC_STATE_DIR", "~/.ggic")).expanduser(),
                        help="where definitions, the runtime's environment and logs live (default ~/.ggic)")
    parser = argparse.ArgumentParser(prog="ggic", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create-connector-definition", parents=[common],
                                 help="validate and store a connector definition (AWS CLI shape)")
    create.add_argument("--name")
    create.add_argument("--initial-version", required=True, help="JSON or file://path")
    create.add_argument("--tags", help="JSON or file://path")
    create.add_argument("--region")
    create.set_defaults(func=cmd_create_connector_definition)

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
    run.add_argument("--engine", choices=("mxnet", "onnxruntime"),
                     help="inference engine of the connectors (default mxnet; onnxruntime needs the onnx extra)")
    from .supervisor import parse_workers  # the --workers option's type: a number or auto
    run.add_argument("--workers", type=parse_workers, default=1, metavar="N|auto",
                     help="inference workers per connector, each with cores/workers engine threads; "
                          "LocalInferenceServiceMemoryLimitKB is shared between them (default 1: the fastest answer "
                          "to one caller; 'auto': as many as the cores and the limit allow, the most requests/s "
                          "for concurrent callers)")
    run.add_argument("--max-image-pixels", type=int,
                     help="refuse images whose header claims more pixels, before decoding (default 8192x8192)")
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
    run.add_argument("--allow-platform-mismatch", action="store_true",
                     help="run connectors built for another platform than this machine's (testing only; "
                          "also GGIC_ALLOW_PLATFORM_MISMATCH=1)")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", parents=[common],
                                 help="is the running runtime ready; its queues, workers and counters")
    status.add_argument("--json", action="store_true", help="the /health report as JSON")
    status.set_defaults(func=cmd_status)

    env = commands.add_parser("env", parents=[common],
                              help="print `export` lines to act as a Lambda of the running runtime")
    env.set_defaults(func=cmd_env)

    invoke = commands.add_parser("invoke", parents=[common], help="one inference through the ML SDK")
    invoke.add_argument("--service-name", required=True)
    invoke.add_argument("--content-type", default="image/jpeg")
    invoke.add_argument("--body", required=True, help="fileb://image.jpg, a path, or - for stdin")
    invoke.add_argument("--algo-type", default="image-classification")
    invoke.add_argument("--labels", type=Path, help="class names: one per line, or JSON")
    invoke.add_argument("--top-k", type=int, help="print the K most probable classes")
    invoke.set_defaults(func=cmd_invoke)

    doctor = commands.add_parser("doctor", parents=[common],
                                 help="check this device: system libraries (symbol versions), MXNet, OpenCV, GPU")
    doctor.add_argument("--platform", choices=["x86_64", "armv7l", "aarch64-jtx2"],
                        help="the connector platform to check for (default: this machine's)")
    doctor.add_argument("--json", action="store_true", help="the checks as JSON")
    doctor.add_argument("--library-path", action="append", type=Path, metavar="DIR",
                        help="look for system libraries only in DIR (repeatable; e.g. a device's sysroot)")
    doctor.set_defaults(func=cmd_doctor)

    fetch = commands.add_parser("fetch-model", parents=[common],
                                help="download, verify and atomically place a SageMaker training job's model")
    fetch.add_argument("--training-job-arn", required=True, help="arn:aws:sagemaker:<region>:<account>:training-job/<name>")
    fetch.add_argument("--destination", required=True, type=Path, help="the model directory (replaced as a whole)")
    fetch.add_argument("--region", help="SageMaker and S3 region (default: the ARN's)")
    fetch.add_argument("--verbose", action="store_true")
    fetch.set_defaults(func=cmd_fetch_model)

    resources = commands.add_parser("create-resource-definition", parents=[common],
                                    help="validate and store ML resources with a SageMaker source (AWS CLI shape)")
    resources.add_argument("--name")
    resources.add_argument("--initial-version", required=True, help="JSON or file://path")
    resources.add_argument("--tags", help="JSON or file://path")
    resources.add_argument("--region")
    resources.set_defaults(func=cmd_create_resource_definition)

    subscriptions = commands.add_parser("create-subscription-definition", parents=[common],
                                        help="validate and store subscriptions: who publishes what to whom "
                                             "(AWS CLI shape)")
    subscriptions.add_argument("--name")
    subscriptions.add_argument("--initial-version", required=True, help="JSON or file://path")
    subscriptions.add_argument("--tags", help="JSON or file://path")
    subscriptions.add_argument("--region")
    subscriptions.set_defaults(func=cmd_create_subscription_definition)

    group = commands.add_parser("create-group", parents=[common], help="a group binding definition versions")
    group.add_argument("--name", required=True)
    group.add_argument("--initial-version", help="JSON or file://path: {\"ConnectorDefinitionVersionArn\": ...}")
    group.add_argument("--tags", help="JSON or file://path")
    group.add_argument("--region")
    group.set_defaults(func=cmd_create_group)

    group_version = commands.add_parser("create-group-version", parents=[common], help="a new version of a group")
    group_version.add_argument("--group-id", required=True, metavar="ID|NAME")
    for kind in ("connector", "resource", "function", "subscription", "core", "device", "logger"):
        group_version.add_argument(f"--{kind}-definition-version-arn")
    group_version.set_defaults(func=cmd_create_group_version)

    deploy = commands.add_parser("create-deployment", parents=[common],
                                 help="check a group version, fetch its models, swap it into the running runtime")
    deploy.add_argument("--group-id", required=True, metavar="ID|NAME")
    deploy.add_argument("--group-version-id", help="default: the group's latest version")
    deploy.add_argument("--deployment-type", required=True,
                        choices=["NewDeployment", "Redeployment", "ResetDeployment", "ForceResetDeployment"],
                        help="NewDeployment, or Redeployment with --deployment-id (the reset types are refused)")
    deploy.add_argument("--deployment-id", help="Redeployment: the deployment to redo")
    deploy.add_argument("--region", help="SageMaker and S3 region (default: each training job ARN's)")
    deploy.add_argument("--no-wait", action="store_true",
                        help="return once the models are in place, without waiting for the runtime to switch")
    deploy.add_argument("--wait-timeout", type=float, default=600.0,
                        help="seconds to wait for the runtime to switch (default 600)")
    deploy.add_argument("--verbose", action="store_true")
    deploy.set_defaults(func=cmd_create_deployment)

    deployment_status = commands.add_parser("get-deployment-status", parents=[common],
                                            help="Building, InProgress, Success or Failure, and why")
    deployment_status.add_argument("--group-id", required=True, metavar="ID|NAME")
    deployment_status.add_argument("--deployment-id", required=True)
    deployment_status.set_defaults(func=cmd_get_deployment_status)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"ggic: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
