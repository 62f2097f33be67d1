"""The connector catalog (`schemas/connectors.json`): which connectors exist, their ARNs, parameter schemas,
Lambda function names and entry points, and the check of one connector's parameters against its schema.

The core reads it to name and host a connector's function, the control plane to validate definitions, and a
connector to check the parameters it is started with; none of them imports another for it.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from connector.contract.problems import (
    INVALID_CONNECTOR_ARN,
    INVALID_PARAMETER_VALUE,
    INVALID_REQUEST,
    MISSING_REQUIRED_PARAMETER,
    UNKNOWN_PARAMETER,
    BadRequestError,
    detail,
    find_problems,
    show,
)
from connector.contract.schemas import CATALOG_FILE, ecma_regex, load_json, registry, validator

REQUEST_SCHEMA = "create-connector-definition.schema.json"
JOB_ARN_PARAMETER = "MLModelSageMakerJobArn"
SERVICE_NAME_PARAMETER = "LocalInferenceServiceName"
GPU_PARAMETER = "GPUAcceleration"
FEEDBACK_PARAMETER = "MLFeedbackConnectorConfigId"
FEEDBACK_MAP_PARAMETER = "FeedbackConfigurationMap"
FEEDBACK_CONNECTOR = "MLFeedback"


# The documented job-ARN pattern with ':' where SageMaker puts '/': the spelling of the documentation's examples.
_COLON_JOB_ARN = re.compile(
    r"(arn:aws:sagemaker:[a-zA-Z0-9-]+:[0-9]+:training-job):([a-zA-Z0-9][a-zA-Z0-9-]+)")
# Lenient on partition so a name can be read from any real ARN, but only for training jobs.
_ANY_JOB_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:sagemaker:[a-zA-Z0-9-]+:[0-9]+:training-job[/:]([a-zA-Z0-9][a-zA-Z0-9-]*)")


class InvalidTrainingJobArnError(ValueError):
    """A string that is not a SageMaker training-job ARN in either the slash or the colon spelling."""


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    version: int
    platform: str
    display_name: str
    schema_file: str
    function_name_template: str
    arn_pattern: str
    handler: str                        # the Lambda handler, as a Greengrass core runs the connector
    hosted: str                         # `module:function` making it a HostedConnector (contract/hosting.py)
    timeout_parameter: Optional[str]    # the parameter that is the function's timeout in seconds, if any


@functools.lru_cache(maxsize=None)
def catalog() -> tuple[CatalogEntry, ...]:
    return tuple(
        CatalogEntry(name=c["name"], version=int(c["version"]), platform=c["platform"],
                     display_name=c["displayName"], schema_file=c["schema"],
                     function_name_template=c["functionNameTemplate"], arn_pattern=c["arnPattern"],
                     handler=c["handler"], hosted=c["hosted"], timeout_parameter=c.get("timeoutParameter"))
        for c in load_json(CATALOG_FILE)["connectors"])


def catalog_entry(name: str, version: int) -> CatalogEntry:
    return next(e for e in catalog() if (e.name, e.version) == (name, version))


def supported_connector_names() -> list[str]:
    """Names of the supported connectors, in catalog order, each once."""
    return list(dict.fromkeys(e.name for e in catalog()))


def match_arn(arn: str) -> Optional[tuple[CatalogEntry, str]]:
    for entry in catalog():
        match = ecma_regex(entry.arn_pattern).search(arn)
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
    hosted: str
    timeout_parameter: Optional[str]

    @property
    def is_feedback(self) -> bool:
        return self.name == FEEDBACK_CONNECTOR

    def function_name(self, parameters: Mapping[str, str]) -> str:
        """Name of the Lambda function Greengrass runs for this connector instance (image classification:
        ``GG-ML-INF-image-classification-<LocalInferenceServiceName>``; ML Feedback: ``MLFeedback``)."""
        return self.function_name_template.format_map(parameters)

    def function_timeout_s(self, parameters: Mapping[str, str]) -> Optional[float]:
        """The function's timeout (queueing counts) from the parameter the catalog names, or None."""
        value = str(parameters.get(self.timeout_parameter, "")) if self.timeout_parameter else ""
        return float(value) if value.isdigit() else None

    def function_arn(self, parameters: Mapping[str, str], region: Optional[str] = None) -> str:
        """ARN of that function; connector functions live under the account ``aws``."""
        return f"arn:aws:lambda:{region or self.region}:aws:function:{self.function_name(parameters)}"


def unknown_arn_message(subject: Optional[str], arn: Any, kind: str = "a supported") -> str:
    names = ", ".join(f"{name} (versions {', '.join(str(e.version) for e in catalog() if e.name == name)})"
                      for name in supported_connector_names()
                      if kind == "a supported" or name != FEEDBACK_CONNECTOR)
    prefix = f"{subject}: " if subject else ""
    return (f"{prefix}ConnectorArn {show(arn)} is not {kind} connector ARN; "
            f"supported: {names}, written arn:aws:greengrass:<region>::/connectors/<Name>/versions/<n>")


def connector_spec(arn: str) -> ConnectorSpec:
    """Resolve a connector ARN; raise BadRequestError (InvalidConnectorArn) for anything outside the catalog."""
    found = match_arn(arn) if isinstance(arn, str) else None
    if found is None:
        raise BadRequestError([detail(INVALID_CONNECTOR_ARN, unknown_arn_message(None, arn))])
    entry, region = found
    return ConnectorSpec(name=entry.name, version=entry.version, platform=entry.platform, region=region, arn=arn,
                         schema_file=entry.schema_file, display_name=entry.display_name,
                         function_name_template=entry.function_name_template, handler=entry.handler,
                         hosted=entry.hosted, timeout_parameter=entry.timeout_parameter)


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
        raise InvalidTrainingJobArnError(f"Not a SageMaker training-job ARN: {show(arn)}")
    return match.group(1)


# --- per-connector parameter checks -----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def all_parameter_names() -> frozenset:
    return frozenset(n for e in catalog() for n in validator(e.schema_file).schema["properties"])


def _unknown_hint(name: str, entry: CatalogEntry, allowed: Iterable[str]) -> str:
    if name == GPU_PARAMETER:
        return f"; {GPU_PARAMETER} exists only on ImageClassificationAarch64JTX2"
    if name in all_parameter_names():
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
class CheckedParameters:
    parameters: dict
    details: list
    warnings: list
    invalid: frozenset  # parameters that are missing, unknown or invalid


def check_parameters(subject: str, entry: CatalogEntry, parameters: Mapping[str, Any]) -> CheckedParameters:
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

    schema = validator(entry.schema_file)
    properties = schema.schema["properties"]
    order = {name: i for i, name in enumerate(properties)}
    where = f"{entry.name} version {entry.version}"
    ranked = []
    invalid = set()
    for problem in find_problems(schema, params):
        name = problem.path[0] if problem.path else None
        if name is None:  # the Parameters value itself is not an object
            ranked.append(((-1, ""), detail(INVALID_REQUEST, f"{subject}: Parameters {problem.rule}")))
            continue
        invalid.add(name)
        if problem.kind == "missing":
            found = detail(MISSING_REQUIRED_PARAMETER,
                           f"{subject}: required parameter {name} of {where} is missing")
        elif problem.kind == "unknown":
            found = detail(UNKNOWN_PARAMETER,
                           f"{subject}: parameter {name} is not a parameter of {where}"
                           + _unknown_hint(name, entry, properties))
        else:
            definition = properties.get(name, {})
            if "$ref" in definition:
                resolver = registry().resolver(base_uri=schema.schema["$id"])
                definition = resolver.lookup(definition["$ref"]).contents
            found = detail(INVALID_PARAMETER_VALUE,
                           f"{subject}: parameter {name} value {show(problem.value)} {problem.rule}"
                           + _value_hint(problem.value, definition))
        ranked.append(((order.get(name, len(order)), name), found))
    ranked.sort(key=lambda item: item[0])

    path = params.get("MLModelDestinationPath")
    if isinstance(path, str) and path and not path.startswith("/"):
        warnings.append(f"{subject}: MLModelDestinationPath {path!r} is not an absolute path; the connector "
                        f"looks for the model at the ML resource's absolute destination path")
    return CheckedParameters(params, [d for _, d in ranked], warnings, frozenset(invalid))
