"""Validation of connector parameters (ML Image Classification, ML Feedback) and of CreateConnectorDefinition
requests.

Greengrass checked connector parameters in the cloud when a definition was created, so a bad value never reached a
core.  We keep that contract with the JSON Schemas under ``schemas/`` as the one source of the rules: the request
path (`validate_connector_definition`) and the connector's start-up path (`ImageClassificationParameters.
from_environment`) run them through the same code and report *every* problem at once, so a user fixes a definition
in one round trip instead of one error per attempt.

Error codes (``DetailedErrorCode``), one detail per problem:

- ``InvalidRequest``: the request does not have the CreateConnectorDefinition shape (request schema).
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

import copy
import difflib
import functools
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry, Resource

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

INVALID_REQUEST = "InvalidRequest"
INVALID_CONNECTOR_ARN = "InvalidConnectorArn"
MISSING_REQUIRED_PARAMETER = "MissingRequiredParameter"
UNKNOWN_PARAMETER = "UnknownParameter"
INVALID_PARAMETER_VALUE = "InvalidParameterValue"
DUPLICATE_CONNECTOR_ID = "DuplicateConnectorId"
DUPLICATE_CONNECTOR = "DuplicateConnector"
DUPLICATE_SERVICE_NAME = "DuplicateServiceName"
UNKNOWN_FEEDBACK_CONFIG_ID = "UnknownFeedbackConfigId"

#: Set by our runtime when it hosts the connector; a real Greengrass core does not set it.
CONNECTOR_ARN_ENV = "GGIC_CONNECTOR_ARN"
#: Also set only by our runtime; names the connector in error messages.
CONNECTOR_ID_ENV = "GGIC_CONNECTOR_ID"

REQUEST_SCHEMA = "create-connector-definition.schema.json"
CATALOG_FILE = "connectors.json"

JOB_ARN_PARAMETER = "MLModelSageMakerJobArn"
SERVICE_NAME_PARAMETER = "LocalInferenceServiceName"
GPU_PARAMETER = "GPUAcceleration"
FEEDBACK_PARAMETER = "MLFeedbackConnectorConfigId"
FEEDBACK_MAP_PARAMETER = "FeedbackConfigurationMap"
FEEDBACK_CONNECTOR = "MLFeedback"

# Without an ARN (a real Greengrass group) we can only guess the connector from the parameters themselves.
_DEFAULT_CONNECTOR = ("ImageClassificationx86-64", 2)
_DEFAULT_GPU_CONNECTOR = ("ImageClassificationAarch64JTX2", 2)

# The documented job-ARN pattern with ':' where SageMaker puts '/': the spelling of the documentation's examples.
_COLON_JOB_ARN = re.compile(
    r"(arn:aws:sagemaker:[a-zA-Z0-9-]+:[0-9]+:training-job):([a-zA-Z0-9][a-zA-Z0-9-]+)")
# Lenient on partition so a name can be read from any real ARN, but only for training jobs.
_ANY_JOB_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:sagemaker:[a-zA-Z0-9-]+:[0-9]+:training-job[/:]([a-zA-Z0-9][a-zA-Z0-9-]*)")

_MAX_SHOWN_CHARS = 80


class SchemaNotFoundError(FileNotFoundError):
    """The schemas directory is neither in the source tree nor installed under sys.prefix."""


class InvalidTrainingJobArnError(ValueError):
    """A string that is not a SageMaker training-job ARN in either the slash or the colon spelling."""


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


def _detail(code: str, message: str) -> dict:
    return {"DetailedErrorCode": code, "DetailedErrorMessage": message}


# --- schema loading -----------------------------------------------------------------------------------------

def _locate_schema_dir(candidates: Iterable[Path]) -> Path:
    """First candidate holding the catalog: the source tree when run from a checkout, else the installed copy."""
    tried = []
    for candidate in candidates:
        if (candidate / CATALOG_FILE).is_file():
            return candidate
        tried.append(str(candidate))
    raise SchemaNotFoundError(f"No {CATALOG_FILE} found in any schema directory: {', '.join(tried)}")


@functools.lru_cache(maxsize=None)
def schema_dir() -> Path:
    """The directory the schemas and the connector catalog are read from."""
    return _locate_schema_dir([
        Path(__file__).resolve().parent.parent / "schemas",
        Path(sys.prefix) / "share" / "ggic" / "schemas",
    ])


@functools.lru_cache(maxsize=None)
def _load_json(name: str) -> Any:
    with open(schema_dir() / name, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def _registry() -> Registry:
    """All schema files, keyed by their $id, so relative $refs to the shared definitions resolve offline."""
    resources = []
    for path in sorted(schema_dir().glob("*.schema.json")):
        contents = _load_json(path.name)
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


_ECMA_DOT = "[^\\n\\r\\u2028\\u2029]"


@functools.lru_cache(maxsize=None)
def _ecma_regex(pattern: str) -> re.Pattern:
    """Compile a JSON Schema (ECMA-262) pattern so Python matches what ECMA would.

    Python's ``$`` also matches just before a trailing newline and its ``.`` matches ``\\r``, so ``'10\\n'`` would
    pass ``^(?:[1-9][0-9]*)$`` under plain ``re.search``.  Outside character classes ``$`` becomes ``\\Z`` and
    ``.`` excludes ECMA's line terminators.
    """
    out = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        elif char == ".":
            char = _ECMA_DOT
        out.append(char)
        i += 1
    return re.compile("".join(out))


def _ecma_pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


@functools.lru_cache(maxsize=None)
def _validator(schema_file: str) -> Draft202012Validator:
    return _Validator(_load_json(schema_file), registry=_registry())


# --- connector catalog --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _CatalogEntry:
    name: str
    version: int
    platform: str
    display_name: str
    schema_file: str
    function_name_template: str
    arn_pattern: str
    handler: str


@functools.lru_cache(maxsize=None)
def _catalog() -> tuple[_CatalogEntry, ...]:
    return tuple(
        _CatalogEntry(name=c["name"], version=int(c["version"]), platform=c["platform"],
                      display_name=c["displayName"], schema_file=c["schema"],
                      function_name_template=c["functionNameTemplate"], arn_pattern=c["arnPattern"],
                      handler=c["handler"])
        for c in _load_json(CATALOG_FILE)["connectors"])


def _catalog_entry(name: str, version: int) -> _CatalogEntry:
    return next(e for e in _catalog() if (e.name, e.version) == (name, version))


def supported_connector_names() -> list[str]:
    """Names of the supported connectors, in catalog order, each once."""
    return list(dict.fromkeys(e.name for e in _catalog()))


def _match_arn(arn: str) -> Optional[tuple[_CatalogEntry, str]]:
    for entry in _catalog():
        match = _ecma_regex(entry.arn_pattern).search(arn)
        if match:
            return entry, match.group(1)
    return None


@dataclass(frozen=True)
class ConnectorSpec:
    """A connector ARN of the catalog resolved: which connector, version, platform, parameter schema and handler."""

    name: str
    version: int
    platform: str
    region: str
    arn: str
    schema_file: str
    display_name: str
    function_name_template: str
    handler: str

    @property
    def is_feedback(self) -> bool:
        return self.name == FEEDBACK_CONNECTOR

    def function_name(self, parameters: Mapping[str, str]) -> str:
        """Name of the Lambda function Greengrass runs for this connector instance (image classification:
        ``GG-ML-INF-image-classification-<LocalInferenceServiceName>``; ML Feedback: ``MLFeedback``)."""
        return self.function_name_template.format_map(parameters)

    def function_arn(self, parameters: Mapping[str, str], region: Optional[str] = None) -> str:
        """ARN of that function; connector functions live under the account ``aws``."""
        return f"arn:aws:lambda:{region or self.region}:aws:function:{self.function_name(parameters)}"


def _unknown_arn_message(subject: Optional[str], arn: Any, kind: str = "a supported") -> str:
    names = ", ".join(f"{name} (versions {', '.join(str(e.version) for e in _catalog() if e.name == name)})"
                      for name in supported_connector_names()
                      if kind == "a supported" or name != FEEDBACK_CONNECTOR)
    prefix = f"{subject}: " if subject else ""
    return (f"{prefix}ConnectorArn {_show(arn)} is not {kind} connector ARN; "
            f"supported: {names}, written arn:aws:greengrass:<region>::/connectors/<Name>/versions/<n>")


def connector_spec(arn: str) -> ConnectorSpec:
    """Resolve a connector ARN; raise BadRequestError (InvalidConnectorArn) for anything outside the catalog."""
    found = _match_arn(arn) if isinstance(arn, str) else None
    if found is None:
        raise BadRequestError([_detail(INVALID_CONNECTOR_ARN, _unknown_arn_message(None, arn))])
    entry, region = found
    return ConnectorSpec(name=entry.name, version=entry.version, platform=entry.platform, region=region, arn=arn,
                         schema_file=entry.schema_file, display_name=entry.display_name,
                         function_name_template=entry.function_name_template, handler=entry.handler)


# --- training-job ARNs --------------------------------------------------------------------------------------

def normalise_training_job_arn(arn: str) -> tuple[str, bool]:
    """Turn the documentation's ``training-job:<name>`` spelling into SageMaker's ``training-job/<name>``.

    Returns the (possibly rewritten) ARN and whether it was rewritten.  Only a value that matches the documented
    pattern apart from that colon is touched; anything else is returned unchanged for validation to judge.
    """
    if isinstance(arn, str):
        match = _COLON_JOB_ARN.fullmatch(arn)
        if match:
            return f"{match.group(1)}/{match.group(2)}", True
    return arn, False


def training_job_name(arn: str) -> str:
    """The job name DescribeTrainingJob wants, from an ARN in either spelling."""
    match = _ANY_JOB_ARN.fullmatch(arn) if isinstance(arn, str) else None
    if match is None:
        raise InvalidTrainingJobArnError(f"Not a SageMaker training-job ARN: {_show(arn)}")
    return match.group(1)


# --- turning jsonschema errors into one problem each ------------------------------------------------------

_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null",
               list: "array", dict: "object"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
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
        return f"must be of type {expected}, not {_json_type(error.instance)}"
    if kind == "enum":
        return "is not one of " + ", ".join(repr(v) for v in expected)
    if kind == "minLength":
        return f"is shorter than {expected} characters"
    if kind == "maxLength":
        return f"is longer than {expected} characters ({len(error.instance)})"
    return error.message


@dataclass(frozen=True)
class _Problem:
    path: tuple  # where the offending value is (for a missing one, where it should be)
    kind: str  # "missing", "unknown" or "value"
    value: Any
    rule: str


def _problems(validator: Draft202012Validator, instance: Any) -> list[_Problem]:
    """Every problem once: jsonschema reports all missing names per `required` and all extras together."""
    found: dict[tuple, _Problem] = {}

    def add(problem: _Problem) -> None:
        found.setdefault((problem.path, problem.kind, problem.rule), problem)

    for error in validator.iter_errors(instance):
        base = tuple(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    add(_Problem(base + (name,), "missing", None, "is required"))
        elif error.validator == "additionalProperties" and error.validator_value is False \
                and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            for name, value in error.instance.items():
                if name not in allowed:
                    add(_Problem(base + (name,), "unknown", value, "is not allowed"))
        else:
            add(_Problem(base, "value", error.instance, _rule(error)))
    return list(found.values())


def _request_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request body"


# --- per-connector parameter checks -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _all_parameter_names() -> frozenset:
    return frozenset(n for e in _catalog() for n in _validator(e.schema_file).schema["properties"])


def _unknown_hint(name: str, entry: _CatalogEntry, allowed: Iterable[str]) -> str:
    if name == GPU_PARAMETER:
        return f"; {GPU_PARAMETER} exists only on ImageClassificationAarch64JTX2"
    if name in _all_parameter_names():
        return f"; it was added in a later version of {entry.name}"
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _value_hint(error_value: Any, schema: Mapping) -> str:
    enum = schema.get("enum")
    if enum and isinstance(error_value, str):
        for option in enum:
            if option.lower() == error_value.strip().lower():
                return f" (values are case-sensitive: did you mean {option!r}?)"
    return ""


@dataclass(frozen=True)
class _Checked:
    parameters: dict
    details: list
    warnings: list
    invalid: frozenset  # parameters that are missing, unknown or invalid


def _check_parameters(subject: str, entry: _CatalogEntry, parameters: Mapping[str, Any]) -> _Checked:
    """Normalise, then validate one connector's Parameters against its schema; never stops at the first error."""
    params = dict(parameters)
    warnings: list[str] = []
    original = params.get(JOB_ARN_PARAMETER)
    fixed, changed = normalise_training_job_arn(original)
    if changed:
        params[JOB_ARN_PARAMETER] = fixed
        warnings.append(
            f"{subject}: normalised {JOB_ARN_PARAMETER} {original!r} to the real SageMaker ARN form {fixed!r} "
            f"(SageMaker writes training-job/<name>; the documentation's examples use a colon)")

    validator = _validator(entry.schema_file)
    properties = validator.schema["properties"]
    order = {name: i for i, name in enumerate(properties)}
    where = f"{entry.name} version {entry.version}"
    ranked = []
    invalid = set()
    for problem in _problems(validator, params):
        name = problem.path[0] if problem.path else None
        if name is None:  # the Parameters value itself is not an object
            ranked.append(((-1, ""), _detail(INVALID_REQUEST, f"{subject}: Parameters {problem.rule}")))
            continue
        invalid.add(name)
        if problem.kind == "missing":
            detail = _detail(MISSING_REQUIRED_PARAMETER,
                             f"{subject}: required parameter {name} of {where} is missing")
        elif problem.kind == "unknown":
            detail = _detail(UNKNOWN_PARAMETER,
                             f"{subject}: parameter {name} is not a parameter of {where}"
                             + _unknown_hint(name, entry, properties))
        else:
            definition = properties.get(name, {})
            if "$ref" in definition:
                resolver = _registry().resolver(base_uri=validator.schema["$id"])
                definition = resolver.lookup(definition["$ref"]).contents
            detail = _detail(INVALID_PARAMETER_VALUE,
                             f"{subject}: parameter {name} value {_show(problem.value)} {problem.rule}"
                             + _value_hint(problem.value, definition))
        ranked.append(((order.get(name, len(order)), name), detail))
    feedback_map = params.get(FEEDBACK_MAP_PARAMETER)
    if entry.name == FEEDBACK_CONNECTOR and isinstance(feedback_map, str) and FEEDBACK_MAP_PARAMETER not in invalid:
        # The parameter is a JSON string: its contents have a schema of their own, checked here as well so that a
        # bad map is refused with the definition, not found when the connector starts on the device.
        from .feedback.configuration import configuration_problems

        for problem in configuration_problems(feedback_map):
            invalid.add(FEEDBACK_MAP_PARAMETER)
            ranked.append(((order.get(FEEDBACK_MAP_PARAMETER, 0), FEEDBACK_MAP_PARAMETER),
                           _detail(INVALID_PARAMETER_VALUE,
                                   f"{subject}: {problem}")))
    ranked.sort(key=lambda item: item[0])

    path = params.get("MLModelDestinationPath")
    if isinstance(path, str) and path and not path.startswith("/"):
        warnings.append(f"{subject}: MLModelDestinationPath {path!r} is not an absolute path; the connector "
                        f"looks for the model at the ML resource's absolute destination path")
    return _Checked(params, [d for _, d in ranked], warnings, frozenset(invalid))


def validate_parameters(connector_id: str, arn: str, parameters: Mapping[str, Any]) -> list[dict]:
    """Error details for one connector's Parameters (empty when valid).

    The colon spelling of the training-job ARN is normalised first, exactly as for a whole definition, so it is
    not reported here; use `validate_connector_definition` to get the normalised values and warnings.
    """
    subject = f"Connector {connector_id!r}"
    found = _match_arn(arn) if isinstance(arn, str) else None
    if found is None:
        return [_detail(INVALID_CONNECTOR_ARN, _unknown_arn_message(subject, arn))]
    if not isinstance(parameters, Mapping):
        return [_detail(INVALID_REQUEST,
                        f"{subject}: Parameters must be an object of strings, not {_json_type(parameters)}")]
    return _check_parameters(subject, found[0], parameters).details


# --- whole requests ---------------------------------------------------------------------------------------

def validate_connector_definition(request: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Validate a CreateConnectorDefinition request; return (normalised request, warnings).

    Raises BadRequestError listing every problem in the whole request.  The input is not modified; the returned
    copy carries the normalised training-job ARNs.
    """
    if not isinstance(request, Mapping):
        raise BadRequestError([_detail(INVALID_REQUEST,
                                       f"The request body must be a JSON object, not {_json_type(request)}")])
    normalised = copy.deepcopy(dict(request))
    shape_problems = _problems(_validator(REQUEST_SCHEMA), normalised)
    details: list[dict] = []
    warnings: list[str] = []
    checked: set[int] = set()

    version = normalised.get("InitialVersion")
    connectors = version.get("Connectors") if isinstance(version, dict) else None
    connectors = connectors if isinstance(connectors, list) else []
    if isinstance(version, dict) and connectors == [] and "Connectors" in version:
        warnings.append("InitialVersion.Connectors is empty: the definition deploys no connector")

    ids: dict[str, int] = {}
    by_name: dict[str, tuple[str, int]] = {}
    services: dict[str, str] = {}
    platforms: dict[str, str] = {}
    feedback_ids: Optional[tuple[str, Optional[set]]] = None  # (its label, its config ids when the map is valid)
    wants_feedback: list[tuple[str, str]] = []                # (subject, MLFeedbackConnectorConfigId)
    for index, connector in enumerate(connectors):
        if not isinstance(connector, dict):
            continue  # the request schema reports it
        connector_id = connector.get("Id")
        label = connector_id if isinstance(connector_id, str) else f"#{index}"
        # Point at the entry by position too when its Id does not identify it.
        subject = f"Connector {label!r}" + (f" (#{index})" if label in ids else "")
        if isinstance(connector_id, str):
            if connector_id in ids:
                details.append(_detail(DUPLICATE_CONNECTOR_ID,
                                       f"Connector Id {connector_id!r} is used by connectors #{ids[connector_id]} "
                                       f"and #{index}; Ids must be unique within a connector definition version"))
            else:
                ids[connector_id] = index

        arn = connector.get("ConnectorArn")
        if not isinstance(arn, str):
            continue  # missing or not a string: the request schema reports it
        found = _match_arn(arn)
        if found is None:
            details.append(_detail(INVALID_CONNECTOR_ARN, _unknown_arn_message(subject, arn)))
            continue
        entry, region = found
        if region == "region":
            warnings.append(f"{subject}: ConnectorArn uses the documentation's placeholder region 'region'; "
                            f"put the group's AWS Region there (for example us-west-2)")
        if entry.platform != "any":
            platforms.setdefault(entry.platform, label)

        if entry.name in by_name:
            other_label, other_version = by_name[entry.name]
            details.append(_detail(
                DUPLICATE_CONNECTOR,
                f"{subject}: {entry.name} version {entry.version} is already in this definition as connector "
                f"{other_label!r} (version {other_version}); a Greengrass group may hold only one version of "
                f"a connector"))
        else:
            by_name[entry.name] = (label, entry.version)

        parameters = connector.get("Parameters", {})
        if not isinstance(parameters, dict):
            continue  # the request schema reports it
        checked.add(index)
        result = _check_parameters(subject, entry, parameters)
        if "Parameters" in connector:
            connector["Parameters"] = result.parameters
        details.extend(result.details)
        warnings.extend(result.warnings)

        service = result.parameters.get(SERVICE_NAME_PARAMETER)
        if isinstance(service, str) and SERVICE_NAME_PARAMETER not in result.invalid:
            if service in services:
                details.append(_detail(
                    DUPLICATE_SERVICE_NAME,
                    f"{subject}: {SERVICE_NAME_PARAMETER} {service!r} is already used by connector "
                    f"{services[service]!r}; both would be the Lambda function "
                    f"{entry.function_name_template.format_map(result.parameters)}"))
            else:
                services[service] = label

        config_id = result.parameters.get(FEEDBACK_PARAMETER)
        if isinstance(config_id, str) and config_id and FEEDBACK_PARAMETER not in result.invalid:
            wants_feedback.append((subject, config_id))
        if entry.name == FEEDBACK_CONNECTOR:
            valid_map = FEEDBACK_MAP_PARAMETER not in result.invalid
            feedback_ids = (label, set(json.loads(result.parameters[FEEDBACK_MAP_PARAMETER])) if valid_map else None)
    details.extend(_feedback_reference_problems(wants_feedback, feedback_ids))

    if len(platforms) > 1:
        warnings.append("The definition mixes connectors for different platforms ("
                        + ", ".join(f"{p} in {label!r}" for p, label in platforms.items())
                        + "); a group's core runs on one platform")

    shape_details = []
    for problem in shape_problems:
        path = problem.path
        # A non-string parameter value of a connector checked above was already reported, more precisely.
        if len(path) >= 5 and path[:2] == ("InitialVersion", "Connectors") and path[3] == "Parameters" \
                and path[2] in checked:
            continue
        shape_details.append(_detail(INVALID_REQUEST, _request_problem_text(problem)))

    all_details = shape_details + details
    if all_details:
        raise BadRequestError(all_details)
    # Warnings are returned, not logged: the caller (CLI, API handler) decides how to show them.
    return normalised, warnings


def _feedback_reference_problems(wants_feedback: list[tuple[str, str]],
                                 feedback: Optional[tuple[str, Optional[set]]]) -> list[dict]:
    """A version 2 image classification connector hands its samples to the group's ML Feedback connector under its
    MLFeedbackConnectorConfigId: that connector must be in the definition and define the id."""
    details = []
    for subject, config_id in wants_feedback:
        if feedback is None:
            details.append(_detail(UNKNOWN_FEEDBACK_CONFIG_ID, (
                f"{subject}: {FEEDBACK_PARAMETER} {config_id!r} needs the ML Feedback connector "
                f"(arn:aws:greengrass:<region>::/connectors/{FEEDBACK_CONNECTOR}/versions/1) in the same definition, "
                f"with {config_id!r} in its {FEEDBACK_MAP_PARAMETER}; this definition has none")))
            continue
        label, ids = feedback
        if ids is not None and config_id not in ids:  # an invalid map is reported on its own
            details.append(_detail(UNKNOWN_FEEDBACK_CONFIG_ID, (
                f"{subject}: {FEEDBACK_PARAMETER} {config_id!r} is not defined in the {FEEDBACK_MAP_PARAMETER} "
                f"of ML Feedback connector {label!r} (it defines: {', '.join(sorted(ids)) or 'nothing'})")))
    return details


def request_problems(schema_file: str, request: Any) -> list[dict]:
    """InvalidRequest details, one per way `request` departs from a request schema of `schemas/` (the group,
    resource-definition and group-version requests use it; same wording as CreateConnectorDefinition's)."""
    return [_detail(INVALID_REQUEST, _request_problem_text(problem))
            for problem in _problems(_validator(schema_file), request)]


def _request_problem_text(problem) -> str:
    where = _request_path(problem.path)
    if problem.kind == "missing":
        return f"Request field {where} is required but missing"
    if problem.kind == "unknown":
        return f"Request field {where} is not allowed (value {_show(problem.value)})"
    return f"Request field {where} value {_show(problem.value)} {problem.rule}"


# --- the connector's own view: parameters delivered as environment variables ----------------------------

@dataclass(frozen=True)
class ImageClassificationParameters:
    """Validated, typed connector configuration as the running connector uses it."""

    model_destination_path: str
    model_resource_id: str
    sagemaker_job_arn: str
    service_name: str
    timeout_seconds: int
    memory_limit_kb: int
    gpu_acceleration: str = "CPU"
    feedback_config_id: Optional[str] = None
    connector_arn: Optional[str] = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "ImageClassificationParameters":
        """Read the parameters Greengrass passes as same-named environment variables, validating them.

        The connector ARN comes from ``GGIC_CONNECTOR_ARN`` when our runtime hosts the connector; a real core
        does not set it, so then the x86-64 version 2 schema applies, or the JTX2 version 2 schema when
        GPUAcceleration is set.  An empty MLFeedbackConnectorConfigId means no feedback and becomes None.
        Raises ConfigurationError listing every problem (also kept as ``error_details`` on the exception).
        """
        arn = environ.get(CONNECTOR_ARN_ENV) or None
        if arn is not None:
            found = _match_arn(arn)
            if found is None or found[0].name == FEEDBACK_CONNECTOR:
                message = _unknown_arn_message(f"Environment variable {CONNECTOR_ARN_ENV}", arn,
                                               "an ML Image Classification")
                error = ConfigurationError(message)
                error.error_details = [_detail(INVALID_CONNECTOR_ARN, message)]
                raise error
            entry = found[0]
        else:
            entry = _catalog_entry(*(_DEFAULT_GPU_CONNECTOR if GPU_PARAMETER in environ else _DEFAULT_CONNECTOR))

        names = list(_validator(entry.schema_file).schema["properties"])
        ignored = sorted(n for n in _all_parameter_names() - set(names) if n in environ)
        if ignored:
            logger.warning("Ignoring environment variables %s: not parameters of %s version %d",
                           ", ".join(ignored), entry.name, entry.version)
        connector_id = environ.get(CONNECTOR_ID_ENV)
        subject = (f"Connector {connector_id!r} ({entry.name} version {entry.version}, environment)" if connector_id
                   else f"Connector {entry.name} version {entry.version} (environment)")
        result = _check_parameters(subject, entry, {n: environ[n] for n in names if n in environ})
        for warning in result.warnings:
            logger.warning("%s", warning)
        if result.details:
            count = len(result.details)
            message = (f"Invalid connector configuration: {count} problem{'s' if count != 1 else ''}\n"
                       + "\n".join(f"  - [{d['DetailedErrorCode']}] {d['DetailedErrorMessage']}"
                                   for d in result.details))
            error = ConfigurationError(message)
            error.error_details = result.details
            raise error

        params = result.parameters
        return cls(
            model_destination_path=params["MLModelDestinationPath"],
            model_resource_id=params["MLModelResourceId"],
            sagemaker_job_arn=params[JOB_ARN_PARAMETER],
            service_name=params[SERVICE_NAME_PARAMETER],
            timeout_seconds=int(params["LocalInferenceServiceTimeoutSeconds"]),
            memory_limit_kb=int(params["LocalInferenceServiceMemoryLimitKB"]),
            gpu_acceleration=params.get(GPU_PARAMETER, "CPU"),
            feedback_config_id=params.get(FEEDBACK_PARAMETER) or None,
            connector_arn=arn,
        )
