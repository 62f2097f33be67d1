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


# --- subcommands ------------------------------------------------------------------------------------------

def cmd_create_connector_definition(args: argparse.Namespace) -> int:
    from .definitions import ConnectorDefinitionStore
    from .parameters import BadRequestError, validate_connector_definition

    request: Dict[str, Any] = {"InitialVersion": read_json_argument(args.initial_version, "--initial-version")}
    if args.name is not None:
        request["Name"] = args.name
    if args.tags is not None:
        request["tags"] = read_json_argument(args.tags, "--tags")
    try:
        request, warnings = validate_connector_definition(request)
    except BadRequestError as exc:
        print("An error occurred (BadRequestException) when calling the CreateConnectorDefinition operation: "
              f"{exc.message}", file=sys.stderr)
        print(json.dumps(exc.to_response(), indent=4), file=sys.stderr)
        return EXIT_SERVICE_ERROR
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    region = _region(args, request["InitialVersion"].get("Connectors", []))
    store = ConnectorDefinitionStore(args.state_dir, region)
    response = store.create(request.get("Name", ""), request["InitialVersion"], request.get("tags"))
    print(json.dumps(response, indent=4))
    return 0


def _region(args: argparse.Namespace, connectors: List[Dict[str, Any]]) -> str:
    """--region, else the standard AWS variables, else the connectors' own region, else us-east-1."""
    explicit = args.region or default_region()
    if explicit:
        return explicit
    for connector in connectors:
        region = connector["ConnectorArn"].split(":")[3]
        if region and region != "region":  # the documentation's placeholder
            return region
    return DEFAULT_REGION


def cmd_run(args: argparse.Namespace) -> int:
    from .definitions import ConnectorDefinitionStore, DefinitionNotFoundError
    from .parameters import connector_spec
    from .runtime.runtime import ConnectorDeployment, Runtime, RuntimeConfig, RuntimeStartError

    from .runtime.logfiles import system_log_handler

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
    region = _region(args, connectors)
    deployments = []
    for connector in connectors:
        spec = connector_spec(connector["ConnectorArn"])
        parameters = connector.get("Parameters", {})
        deployments.append(ConnectorDeployment(
            connector_id=connector["Id"], connector_arn=connector["ConnectorArn"],
            function_arn=spec.function_arn(parameters["LocalInferenceServiceName"], region),
            parameters=parameters))
    config = RuntimeConfig(state_dir=args.state_dir, region=region, host=args.host, port=args.port,
                           greengrass_root=args.greengrass_root, max_work_items=args.max_queued_requests,
                           max_request_bytes=args.max_request_bytes, log_max_bytes=args.log_max_bytes,
                           max_image_pixels=args.max_image_pixels)
    logging.getLogger().addHandler(system_log_handler(config.system_log, config.log_max_bytes))
    try:
        runtime = Runtime(config, deployments, args.lambdas or [])
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
        lines.append(f"  process {entry['pid']} {entry['state']}, restarts {entry['restarts']}, "
                     f"queued {entry['queued']}, in flight {entry['in_flight']}")
        supervisor = entry.get("supervisor")
        if supervisor:
            worker = supervisor.get("worker") or {}
            reasons = ", ".join(f"{k} {v}" for k, v in sorted((supervisor.get("restart_reasons") or {}).items()))
            lines.append(f"  inference worker {worker.get('pid')} {worker.get('state')}, "
                         f"RSS {worker.get('rss_kb', 0) / 1024:.0f} MiB of {supervisor['memory_limit_kb'] / 1024:.0f}"
                         f" MiB limit, restarts {supervisor.get('restarts', 0)}{' (' + reasons + ')' if reasons else ''}")
        lines.append(f"  answered {requests.get('ok', 0)} ok, {sum(errors.values())} errors"
                     f"{' (' + ', '.join(f'{k} {v}' for k, v in sorted(errors.items())) + ')' if errors else ''}"
                     f", refused {sum(refused.values())}"
                     f"{', mean latency %.1f ms' % (mean * 1000) if mean is not None else ''}")
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
    run.add_argument("--lambda", dest="lambdas", action="append", metavar="PATH_OR_MODULE",
                     help="a long-lived user Lambda: path/to/file.py[:handler] or package.module (repeatable)")
    run.add_argument("--region")
    run.add_argument("--host", default="127.0.0.1", help="IPC address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="IPC port, 0 for any free one (default 8000)")
    run.add_argument("--greengrass-root", type=Path, help="log root (default <state-dir>/greengrass)")
    run.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                     help="refuse invocations with a larger body before reading it (default 32 MiB)")
    run.add_argument("--max-image-pixels", type=int,
                     help="refuse images whose header claims more pixels, before decoding (default 8192x8192)")
    run.add_argument("--max-queued-requests", type=int, default=DEFAULT_MAX_WORK_ITEMS,
                     help="per function; beyond it callers get a busy error (maxWorkItemCount, default 1024)")
    run.add_argument("--log-max-bytes", type=int, default=DEFAULT_LOG_MAX_BYTES,
                     help="rotate each log file past this size (default 5 MiB, 3 old files kept)")
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
