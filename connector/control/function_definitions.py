"""Function definitions (`ggic create-function-definition`, `create-function-definition-version`) checked against
the stored Lambda functions, and a group version's functions resolved into what the runtime runs (`GroupFunction`).

Every problem is reported at once, as the Greengrass API's BadRequestException. Error codes (`DetailedErrorCode`):

- ``InvalidRequest``: the request does not have the API's shape (schemas/create-function-definition.schema.json).
- ``DuplicateFunctionId``: two functions share an Id.
- ``FunctionNotFound``: a FunctionArn that names no stored function, version or alias (or names `$LATEST`).
- ``InvalidFunctionConfiguration``: what the API refuses although the shape is right (MemorySize of a NoContainer
  function).
- ``ResourceNotFound`` (at deployment): a ResourceAccessPolicy naming no resource of the group version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from connector.contract.problems import BadRequestError, detail, request_problems
from connector.control.lambda_functions import ARN_PATTERN, LambdaError, LambdaFunctionStore
from connector.core.group_functions import JSON, READ_ONLY, GroupFunction, ResourceAccess

FUNCTION_DEFINITION_SCHEMA = "create-function-definition.schema.json"
FUNCTION_DEFINITION_VERSION_SCHEMA = "create-function-definition-version.schema.json"

DUPLICATE_FUNCTION_ID = "DuplicateFunctionId"
FUNCTION_NOT_FOUND = "FunctionNotFound"
INVALID_FUNCTION_CONFIGURATION = "InvalidFunctionConfiguration"
RESOURCE_NOT_FOUND = "ResourceNotFound"
NO_CONTAINER = "NoContainer"
DEFAULT_TIMEOUT_S = 3  # the Greengrass API's default Timeout


class FunctionResolutionError(LookupError):
    """A group version's function cannot be deployed as it is now (its alias gone, a resource it needs missing)."""


def _object(value: Any) -> Mapping[str, Any]:
    """`value` when it is an object, else an empty one (the schema reports what is not)."""
    return value if isinstance(value, dict) else {}


def _execution(configuration: Mapping[str, Any]) -> Mapping[str, Any]:
    return _object(_object(configuration.get("Environment")).get("Execution"))


def _isolation(configuration: Mapping[str, Any], default: Mapping[str, Any]) -> Optional[str]:
    return _execution(configuration).get("IsolationMode") or _object(default.get("Execution")).get("IsolationMode")


def version_problems(version: Any, lambdas: LambdaFunctionStore, where: str) -> Tuple[List[dict], List[str]]:
    """(details, warnings) for a FunctionDefinitionVersion whose shape is already valid."""
    details: List[dict] = []
    warnings: List[str] = []
    if not isinstance(version, dict):
        return details, warnings
    default = version.get("DefaultConfig")
    default = default if isinstance(default, dict) else {}
    if _object(default.get("Execution")).get("RunAs"):
        warnings.append(f"{where}.DefaultConfig.Execution.RunAs: ggic runs every function as the user running "
                        f"`ggic run`; RunAs is stored, not applied")
    ids: Dict[str, int] = {}
    functions = version.get("Functions")
    for index, function in enumerate(functions if isinstance(functions, list) else []):
        if not isinstance(function, dict) or not isinstance(function.get("Id"), str) \
                or not isinstance(function.get("FunctionArn"), str):
            continue  # the schema reports it
        subject = f"{where}.Functions[{index}] (Id {function['Id']!r})"
        if function["Id"] in ids:
            details.append(detail(DUPLICATE_FUNCTION_ID, f"{subject}: Id {function['Id']!r} is already used by "
                                                         f"{where}.Functions[{ids[function['Id']]}]"))
        ids.setdefault(function["Id"], index)
        arn = ARN_PATTERN.match(function["FunctionArn"])
        if arn and arn.group(4):  # an unqualified or malformed ARN: the schema reports it
            try:
                lambdas.resolve(function["FunctionArn"])
            except LambdaError as exc:
                details.append(detail(FUNCTION_NOT_FOUND, f"{subject}: {exc}"))
        configuration = function.get("FunctionConfiguration")
        if not isinstance(configuration, dict):
            continue
        if _isolation(configuration, default) == NO_CONTAINER and "MemorySize" in configuration:
            details.append(detail(INVALID_FUNCTION_CONFIGURATION, f"{subject}: MemorySize cannot be set for a "
                                                                  f"NoContainer function (it has no container to "
                                                                  f"limit); remove it or use GreengrassContainer"))
        if _execution(configuration).get("RunAs"):
            warnings.append(f"{subject}: Environment.Execution.RunAs: ggic runs every function as the user running "
                            f"`ggic run`; RunAs is stored, not applied")
    return details, warnings


def validate_function_definition(request: Any, lambdas: LambdaFunctionStore) -> Tuple[dict, List[str]]:
    """A CreateFunctionDefinition request, checked; (request, warnings) or BadRequestError with every problem."""
    details = request_problems(FUNCTION_DEFINITION_SCHEMA, request)
    more, warnings = version_problems(request.get("InitialVersion") if isinstance(request, dict) else None,
                                      lambdas, "InitialVersion")
    details += more
    if details:
        raise BadRequestError(details, f"Invalid function definition: {len(details)} problem"
                                       f"{'s' if len(details) != 1 else ''} found")
    return request, warnings


def validate_function_definition_version(version: Any, lambdas: LambdaFunctionStore) -> Tuple[dict, List[str]]:
    """A CreateFunctionDefinitionVersion body ({Functions, DefaultConfig}), checked the same way."""
    details = request_problems(FUNCTION_DEFINITION_VERSION_SCHEMA, version)
    more, warnings = version_problems(version, lambdas, "version")
    details += more
    if details:
        raise BadRequestError(details, f"Invalid function definition version: {len(details)} problem"
                                       f"{'s' if len(details) != 1 else ''} found")
    return version, warnings


def resolved_versions(state_dir: Path, version: Mapping[str, Any]) -> Dict[str, str]:
    """FunctionArn → the published version it names now, for each function of a definition version that resolves:
    what a deployment records when it is created, so that it runs those versions however its aliases move later."""
    lambdas = LambdaFunctionStore(state_dir)
    versions = {}
    for function in version.get("Functions") or []:
        try:
            versions[function["FunctionArn"]] = lambdas.resolve(function["FunctionArn"]).version
        except LambdaError:
            continue  # deployment_problems reports it
    return versions


def group_functions(state_dir: Path, version: Mapping[str, Any], resource_paths: Mapping[str, Path],
                    versions: Optional[Mapping[str, str]] = None) -> List[GroupFunction]:
    """A function definition version's functions as the runtime runs them: each qualifier resolved to a published
    version (the one `versions` recorded when the deployment was created, else the one it names now), DefaultConfig
    applied, each ResourceAccessPolicy resolved to where its resource lies (`resource_paths`: Id → path).
    Raises FunctionResolutionError naming the first function that cannot be deployed, and why."""
    lambdas = LambdaFunctionStore(state_dir)
    default = version.get("DefaultConfig") or {}
    resolved = []
    for function in version.get("Functions") or []:
        arn = function["FunctionArn"]
        subject = f"function {function['Id']!r} ({arn})"
        recorded = (versions or {}).get(arn)
        try:
            found = lambdas.resolve(f"{arn.rsplit(':', 1)[0]}:{recorded}" if recorded else arn)
        except LambdaError as exc:
            raise FunctionResolutionError(f"{subject}: {exc}") from None
        configuration = function.get("FunctionConfiguration") or {}
        environment = configuration.get("Environment") or {}
        access = []
        for policy in environment.get("ResourceAccessPolicies") or []:
            path = resource_paths.get(policy["ResourceId"])
            if path is None:
                known = ", ".join(sorted(resource_paths)) or "none"
                raise FunctionResolutionError(f"{subject}: ResourceAccessPolicies names resource "
                                              f"{policy['ResourceId']!r}, which the group version does not have "
                                              f"(its resources: {known})")
            access.append(ResourceAccess(policy["ResourceId"], Path(path), policy.get("Permission", READ_ONLY)))
        no_container = _isolation(configuration, default) == NO_CONTAINER
        memory_kb = configuration.get("MemorySize")
        resolved.append(GroupFunction(
            arn=function["FunctionArn"], version=found.version, code_dir=found.code_dir,
            runtime=configuration.get("FunctionRuntimeOverride") or found.configuration["Runtime"],
            handler=found.configuration["Handler"], pinned=bool(configuration.get("Pinned", False)),
            memory_kb=None if no_container else memory_kb,  # no MemorySize: no limit
            timeout_s=float(configuration.get("Timeout", DEFAULT_TIMEOUT_S)),
            encoding=configuration.get("EncodingType", JSON),
            variables=dict(environment.get("Variables") or {}), resource_access=access,
            access_sysfs=bool(environment.get("AccessSysfs", False)),
            executable=configuration.get("Executable"), exec_args=configuration.get("ExecArgs")))
    return resolved


def deployment_problems(state_dir: Path, version: Mapping[str, Any], resource_paths: Mapping[str, Path]) \
        -> List[dict]:
    """Why a group version's functions cannot be deployed now: every problem, as BadRequest details."""
    details = []
    lambdas = LambdaFunctionStore(state_dir)
    for index, function in enumerate(version.get("Functions") or []):
        subject = f"Function {function['Id']!r}"
        try:
            lambdas.resolve(function["FunctionArn"])
        except LambdaError as exc:
            details.append(detail(FUNCTION_NOT_FOUND, f"{subject}: {exc}"))
        policies = ((function.get("FunctionConfiguration") or {}).get("Environment") or {}) \
            .get("ResourceAccessPolicies") or []
        for policy in policies:
            if policy["ResourceId"] not in resource_paths:
                details.append(detail(RESOURCE_NOT_FOUND, (
                    f"{subject}: ResourceAccessPolicies names resource {policy['ResourceId']!r}, which the group "
                    f"version does not have (its resources: {', '.join(sorted(resource_paths)) or 'none'})")))
    return details
