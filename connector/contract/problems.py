"""Problems, the way the Greengrass API reports them: a BadRequestException with one `DetailedErrorCode` and
`DetailedErrorMessage` per problem, every problem of a request at once, so a user fixes it in one round trip.

Error codes (``DetailedErrorCode``), one detail per problem:

- ``InvalidRequest``: the request does not have the shape of its request schema.
- ``InvalidConnectorArn``: the ARN is not one of the six ML Image Classification connector ARNs or ML Feedback's.
- ``MissingRequiredParameter`` / ``UnknownParameter`` / ``InvalidParameterValue``: per-parameter problems.
- ``DuplicateConnectorId``: two connectors share an Id (Ids are unique within a definition version).
- ``DuplicateConnector``: the same connector (any version) appears twice; a group holds one version of a connector.
- ``DuplicateServiceName``: two connectors share a LocalInferenceServiceName, so they would be the same Lambda
  function (``GG-ML-INF-image-classification-<name>``).
- ``UnknownFeedbackConfigId``: a version 2 image classification connector's ``MLFeedbackConnectorConfigId`` is not
  a key of the ``FeedbackConfigurationMap`` of the definition's ML Feedback connector (or there is none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from jsonschema import Draft202012Validator, ValidationError

from connector.contract.schemas import validator

INVALID_REQUEST = "InvalidRequest"
INVALID_CONNECTOR_ARN = "InvalidConnectorArn"
MISSING_REQUIRED_PARAMETER = "MissingRequiredParameter"
UNKNOWN_PARAMETER = "UnknownParameter"
INVALID_PARAMETER_VALUE = "InvalidParameterValue"
DUPLICATE_CONNECTOR_ID = "DuplicateConnectorId"
DUPLICATE_CONNECTOR = "DuplicateConnector"
DUPLICATE_SERVICE_NAME = "DuplicateServiceName"
UNKNOWN_FEEDBACK_CONFIG_ID = "UnknownFeedbackConfigId"

_MAX_SHOWN_CHARS = 80


class BadRequestError(Exception):
    """Mirror of the Greengrass API's BadRequestException, carrying every problem found, not just the first."""

    def __init__(self, error_details: Iterable[Mapping[str, str]], message: Optional[str] = None) -> None:
        self.error_details: list[dict] = [dict(d) for d in error_details]
        count = len(self.error_details)
        self.message: str = message or (
            f"Invalid connector definition: {count} problem{'s' if count != 1 else ''} found")
        super().__init__(self.message)

    def to_response(self) -> dict:
        """Body of the HTTP 400 answer, shaped like the Greengrass API's BadRequestException."""
        return {"Message": self.message, "ErrorDetails": [dict(d) for d in self.error_details]}

    def __str__(self) -> str:
        lines = [self.message]
        lines += [f"  - [{d['DetailedErrorCode']}] {d['DetailedErrorMessage']}" for d in self.error_details]
        return "\n".join(lines)


def detail(code: str, message: str) -> dict:
    return {"DetailedErrorCode": code, "DetailedErrorMessage": message}

JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null",
               list: "array", dict: "object"}


def json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def show(value: Any) -> str:
    """repr of a value, cut short so a huge value cannot flood a message."""
    if isinstance(value, str) and len(value) > _MAX_SHOWN_CHARS:
        return f"{value[:_MAX_SHOWN_CHARS]!r}... ({len(value)} characters)"
    text = repr(value)
    if len(text) > _MAX_SHOWN_CHARS + 2:
        return text[:_MAX_SHOWN_CHARS] + "..."
    return text


def _rule(error: ValidationError) -> str:
    kind, expected = error.validator, error.validator_value
    if kind == "pattern":
        return f"does not match pattern {expected}"
    if kind == "type":
        return f"must be of type {expected}, not {json_type(error.instance)}"
    if kind == "enum":
        return "is not one of " + ", ".join(repr(v) for v in expected)
    if kind == "minLength":
        return f"is shorter than {expected} characters"
    if kind == "maxLength":
        return f"is longer than {expected} characters ({len(error.instance)})"
    return error.message


@dataclass(frozen=True)
class Problem:
    path: tuple  # where the offending value is (for a missing one, where it should be)
    kind: str  # "missing", "unknown" or "value"
    value: Any
    rule: str


def find_problems(validator: Draft202012Validator, instance: Any) -> list[Problem]:
    """Every problem once: jsonschema reports all missing names per `required` and all extras together."""
    found: dict[tuple, Problem] = {}

    def add(problem: Problem) -> None:
        found.setdefault((problem.path, problem.kind, problem.rule), problem)

    for error in validator.iter_errors(instance):
        base = tuple(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    add(Problem(base + (name,), "missing", None, "is required"))
        elif error.validator == "additionalProperties" and error.validator_value is False \
                and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            for name, value in error.instance.items():
                if name not in allowed:
                    add(Problem(base + (name,), "unknown", value, "is not allowed"))
        else:
            add(Problem(base, "value", error.instance, _rule(error)))
    return list(found.values())


def request_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request body"




def request_problems(schema_file: str, request: Any) -> list[dict]:
    """InvalidRequest details, one per way `request` departs from a request schema of `schemas/` (the group,
    resource-definition and group-version requests use it; same wording as CreateConnectorDefinition's)."""
    return [detail(INVALID_REQUEST, request_problem_text(problem))
            for problem in find_problems(validator(schema_file), request)]


def request_problem_text(problem: Problem) -> str:
    where = request_path(problem.path)
    if problem.kind == "missing":
        return f"Request field {where} is required but missing"
    if problem.kind == "unknown":
        return f"Request field {where} is not allowed (value {show(problem.value)})"
    return f"Request field {where} value {show(problem.value)} {problem.rule}"
