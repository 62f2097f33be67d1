"""`status`, `env`, `invoke`, `list-functions --running`: talking to a running runtime, as its health endpoint or as
one of its Lambdas."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from connector.contract.status import SupervisorStatus
from connector.control.cli.arguments import CLIError, read_blob_argument, read_labels
from connector.control.cli.output import emit

# What the image classification connector takes, by file name extension (when the first bytes do not say).
EXTENSION_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".jfif": "image/jpeg",
                   ".png": "image/png"}


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
        if entry.get("supervisor"):
            supervisor = SupervisorStatus.from_json(entry["supervisor"])
            workers = supervisor.workers
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(supervisor.restart_reasons.items()))
            listed = ", ".join(f"{worker.pid} {worker.state}" for worker in workers)
            layout = supervisor.layout.get("summary")
            if layout:
                lines.append(f"  layout {layout}")
            lines.append(f"  inference worker{'s' if len(workers) > 1 else ''} {listed}, "
                         f"RSS {supervisor.rss_kb / 1024:.0f} MiB of {supervisor.memory_limit_kb / 1024:.0f}"
                         f" MiB limit, restarts {supervisor.restarts}{' (' + reasons + ')' if reasons else ''}")
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


CLIENTS_PATH = "/2016-11-01/ggic/clients"
TOKEN_VARIABLE = "AWS_CONTAINER_AUTHORIZATION_TOKEN"


def load_client_environment(state_dir: Path) -> Dict[str, str]:
    """The running runtime's client environment, from `<state-dir>/env`, with a token of this client's own."""
    env_file = state_dir / "env"
    state_file = state_dir / "runtime.json"
    if not env_file.is_file():
        raise CLIError(f"no Greengrass runtime is running with state directory {state_dir}: start `ggic run` first")
    try:
        state = json.loads(state_file.read_text())
        os.kill(state["pid"], 0)
    except (OSError, ValueError, KeyError):
        raise CLIError(f"the runtime that wrote {env_file} is no longer running: start `ggic run` again") from None
    environment = {}
    for line in env_file.read_text().splitlines():
        if line.startswith("export "):  # not str.removeprefix: ggic runs on Python 3.8
            line = line[len("export "):]
        name, _, value = line.partition("=")
        environment[name] = value
    environment[TOKEN_VARIABLE] = issue_client_token(state_dir, state)
    return environment


def issue_client_token(state_dir: Path, state: Dict[str, Any]) -> str:
    """Ask the runtime for a token of this client's own, with the control token only the state directory holds."""
    control_file = state_dir / "control-token"
    try:
        control = control_file.read_text().strip()
    except OSError as exc:
        raise CLIError(f"cannot read the runtime's control token {control_file}: {exc}") from None
    host = state.get("host") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    connection = http.client.HTTPConnection(host, int(state["port"]), timeout=10)
    try:
        connection.request("POST", CLIENTS_PATH, body=b"", headers={"Authorization": control})
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise CLIError(f"the runtime at {host}:{state['port']} did not issue a client token: {exc}") from None
    finally:
        connection.close()
    if response.status != 201:
        raise CLIError(f"the runtime refused to issue a client token ({response.status}): "
                       f"{body.decode('utf-8', 'replace')}")
    return str(json.loads(body)["Token"])


def cmd_env(args: argparse.Namespace) -> int:
    for name, value in sorted(load_client_environment(args.state_dir).items()):
        print(f"export {name}={value}")
    return 0


def infer_content_type(body: bytes, source: str) -> str:
    """The ContentType of an image given without --content-type: its first bytes (the connector's own format
    sniffing), then the extension of `source` (`fileb://x.png`, a path, or `-`). CLIError when neither tells a
    JPEG or a PNG."""
    from connector.image_classification.imaging import JPEG, PNG, sniff_format

    found = sniff_format(body)
    if found in ("JPEG", "PNG"):
        return JPEG if found == "JPEG" else PNG
    name = source[len("fileb://"):] if source.startswith("fileb://") else source
    if found is not None:
        raise CLIError(f"--body {name} is a {found} image: the image classification connector takes JPEG or PNG "
                       f"(convert it, or give --content-type to send it anyway)")
    by_extension = EXTENSION_TYPES.get(Path(name).suffix.lower()) if name != "-" else None
    if by_extension is None:
        start = body[:8].hex(" ") if body else "nothing: it is empty"
        raise CLIError(f"cannot tell the content type of --body {name}: its first bytes ({start}) are not a JPEG's "
                       f"or a PNG's and its name does not end in .jpg, .jpeg or .png; give --content-type "
                       f"image/jpeg or image/png")
    return by_extension


def _labels(path: Path) -> List[str]:
    try:
        return read_labels(path)
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise CLIError(f"--labels {path}: cannot read class names from it: {exc}") from None


def cmd_invoke(args: argparse.Namespace) -> int:
    os.environ.update(load_client_environment(args.state_dir))
    body = read_blob_argument(args.body)
    content_type = args.content_type or infer_content_type(body, args.body)
    labels = _labels(args.labels) if args.labels else None  # a bad file is reported before the inference runs
    import greengrass_machine_learning_sdk as ml  # reads the environment at import: set it first

    client = ml.client("inference")
    try:
        response = client.invoke_inference_service(
            AlgoType=args.algo_type, ServiceName=args.service_name, ContentType=content_type, Body=body)
    except ml.GreengrassInferenceException as exc:
        raise CLIError(f"the inference service refused the request: {exc}") from None
    except ml.GreengrassDependencyException as exc:
        raise CLIError(f"the inference service could not be reached or failed: {exc}") from None
    text = response["Body"].read().decode("utf-8")
    if not args.top_k and labels is None:
        print(text)
        return 0
    probabilities = [float(value) for value in text[1:-1].split(",")]
    if labels is not None and len(labels) != len(probabilities):
        raise CLIError(f"--labels {args.labels} names {len(labels)} classes, but the model answered "
                       f"{len(probabilities)}: give the labels file of the model that {args.service_name} serves")
    ranked = sorted(range(len(probabilities)), key=probabilities.__getitem__, reverse=True)
    for index in ranked[: args.top_k or 5]:
        label = labels[index] if labels else ""
        print(f"{probabilities[index]:.4f}  {index:>4}  {label}".rstrip())
    return 0


def running_functions(state_dir: Path) -> Optional[List[Dict[str, Any]]]:
    """The functions of the runtime that holds `state_dir`, in `aws lambda list-functions`' shape; None when no
    runtime runs there."""
    try:
        state = json.loads((state_dir / "runtime.json").read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    functions = []
    for arn, entry in sorted(state.get("functions", {}).items()):
        function = {"FunctionName": arn.split(":function:", 1)[-1].split(":", 1)[0], "FunctionArn": arn,
                    "Runtime": entry.get("runtime")}
        if entry.get("handler"):
            function["Handler"] = entry["handler"]
        if entry.get("timeout_s") is not None:
            function["Timeout"] = entry["timeout_s"]
        functions.append(function)
    return functions


def cmd_list_running_functions(args: argparse.Namespace) -> int:
    """`ggic list-functions --running`: the running runtime's functions, in ListFunctions' shape."""
    functions = running_functions(args.state_dir)
    if functions is None:
        print(f"ggic: no runtime is running with state directory {args.state_dir}: no functions",
              file=sys.stderr)
        functions = []
    emit(args, "ListFunctions", {"Functions": functions})
    return 0


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    status = commands.add_parser("status", parents=[common],
                                 help="is the running runtime ready; its queues, workers and counters")
    status.add_argument("--json", action="store_true", help="the /health report as JSON")
    status.set_defaults(func=cmd_status)

    env = commands.add_parser("env", parents=[common],
                              help="print `export` lines to act as a Lambda of the running runtime")
    env.set_defaults(func=cmd_env)

    invoke = commands.add_parser("invoke", parents=[common], help="one inference through the ML SDK")
    invoke.add_argument("--service-name", required=True)
    invoke.add_argument("--content-type", help="image/jpeg or image/png (default: told by the body's first bytes, "
                                               "then its file name's extension)")
    invoke.add_argument("--body", required=True, help="fileb://image.jpg, a path, or - for stdin")
    invoke.add_argument("--algo-type", default="image-classification")
    invoke.add_argument("--labels", type=Path, help="class names: one per line, or JSON")
    invoke.add_argument("--top-k", type=int, help="print the K most probable classes")
    invoke.set_defaults(func=cmd_invoke)
