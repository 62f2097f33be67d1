"""What every command shares: the AWS CLI's argument conventions (JSON or file://, fileb:// blobs,
--region), its exit status for a refused request, and CLI errors."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

EXIT_SERVICE_ERROR = 254  # what the AWS CLI returns when the service rejects a request


DEFAULT_REGION = "us-east-1"

log = logging.getLogger("ggic")


class CLIError(Exception):
    """A problem to report in one line on stderr, with a non-zero exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


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


def read_blob_argument(value: str, what: str = "--body") -> bytes:
    """`fileb://path` (AWS CLI), a plain path, or `-` for standard input."""
    if value == "-":
        return sys.stdin.buffer.read()
    path = value[len("fileb://"):] if value.startswith("fileb://") else value
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise CLIError(f"{what}: cannot read {path}: {exc}", 255) from None


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


def aws_region(args: argparse.Namespace, *arns: Optional[str]) -> str:
    """--region, else the standard AWS variables, else the first ARN's own region, else us-east-1."""
    return args.region or default_region() or arn_region(*arns) or DEFAULT_REGION


def cli_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("botocore").setLevel(logging.WARNING)


def bad_request(operation: str, exc: Any) -> int:
    """A BadRequestException the way the AWS CLI prints one (exit 254)."""
    print(f"An error occurred (BadRequestException) when calling the {operation} operation: {exc.message}",
          file=sys.stderr)
    print(json.dumps(exc.to_response(), indent=4), file=sys.stderr)
    return EXIT_SERVICE_ERROR


def pick(store: Any, id_or_name: str, label: str) -> Dict[str, Any]:
    """The stored record for an Id or a Name (`store.get`); when several share that Name, say on stderr which one
    was picked (the newest) and which others there are. CLIError when there is none."""
    try:
        record = store.get(id_or_name)
    except LookupError as exc:
        raise CLIError(str(exc)) from None
    information = record.get("Definition") or record.get("Group") or {}
    same_name = [] if information.get("Id") == id_or_name else store.named(id_or_name)
    if len(same_name) > 1:
        chosen = same_name[-1]
        others = ", ".join(f"{info['Id']} (created {info['CreationTimestamp']})" for info in same_name[:-1])
        print(f"warning: {len(same_name)} {label}s are named {id_or_name!r}: using the newest, {chosen['Id']} "
              f"(created {chosen['CreationTimestamp']}); the others: {others}. Give an Id to choose",
              file=sys.stderr)
    return record


def warn_duplicate_name(store: Any, name: Optional[str], label: str) -> None:
    """Before creating: a warning naming the existing ones' Ids when `name` is taken (the API allows it)."""
    if not name:
        return
    existing = store.named(name)
    if existing:
        ids = ", ".join(info["Id"] for info in existing)
        print(f"warning: a {label} named {name!r} already exists (Id {ids}); this one is created beside it, and "
              f"the name now resolves to the newest: use Ids to tell them apart", file=sys.stderr)


def arn_region(*arns: Optional[str]) -> Optional[str]:
    """The region of the first ARN that names one (not the documentation's placeholder `region`)."""
    for arn in arns:
        parts = (arn or "").split(":")
        if len(parts) > 3 and parts[3] and parts[3] != "region":
            return parts[3]
    return None
