"""CreateConnectorDefinition, validated: every connector's parameters against its schema in the catalog, plus what
only the whole definition can tell (duplicate Ids, connectors and service names, feedback config ids that the
definition's ML Feedback connector does not define). Every problem is reported at once (`contract.problems`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Mapping, Optional

from connector.contract.catalog import (
    FEEDBACK_CONNECTOR,
    FEEDBACK_MAP_PARAMETER,
    FEEDBACK_PARAMETER,
    REQUEST_SCHEMA,
    SERVICE_NAME_PARAMETER,
    CatalogEntry,
    CheckedParameters,
    check_parameters,
    match_arn,
    unknown_arn_message,
)
from connector.contract.problems import (
    DUPLICATE_CONNECTOR,
    DUPLICATE_CONNECTOR_ID,
    DUPLICATE_SERVICE_NAME,
    INVALID_CONNECTOR_ARN,
    INVALID_PARAMETER_VALUE,
    INVALID_REQUEST,
    UNKNOWN_FEEDBACK_CONFIG_ID,
    BadRequestError,
    detail,
    find_problems,
    json_type,
    request_problem_text,
)
from connector.contract.schemas import validator
from connector.feedback.configuration import configuration_problems


def _check_connector(subject: str, entry: CatalogEntry, parameters: Mapping[str, Any]) -> CheckedParameters:
    """The catalog's check of one connector's parameters, and for ML Feedback the contents of its
    FeedbackConfigurationMap (a JSON string with a schema of its own): a bad map is refused with the definition, not
    found when the connector starts on the device."""
    checked = check_parameters(subject, entry, parameters)
    feedback_map = checked.parameters.get(FEEDBACK_MAP_PARAMETER)
    if entry.name != FEEDBACK_CONNECTOR or not isinstance(feedback_map, str) \
            or FEEDBACK_MAP_PARAMETER in checked.invalid:
        return checked
    problems = [detail(INVALID_PARAMETER_VALUE, f"{subject}: {problem}")
                for problem in configuration_problems(feedback_map)]
    if not problems:
        return checked
    return dataclasses.replace(checked, details=checked.details + problems,
                               invalid=checked.invalid | {FEEDBACK_MAP_PARAMETER})


def validate_parameters(connector_id: str, arn: str, parameters: Mapping[str, Any]) -> list[dict]:
    """Error details for one connector's Parameters (empty when valid).

    The colon spelling of the training-job ARN is normalised first, exactly as for a whole definition, so it is
    not reported here; use `validate_connector_definition` to get the normalised values and warnings.
    """
    subject = f"Connector {connector_id!r}"
    found = match_arn(arn) if isinstance(arn, str) else None
    if found is None:
        return [detail(INVALID_CONNECTOR_ARN, unknown_arn_message(subject, arn))]
    if not isinstance(parameters, Mapping):
        return [detail(INVALID_REQUEST,
                        f"{subject}: Parameters must be an object of strings, not {json_type(parameters)}")]
    return _check_connector(subject, found[0], parameters).details


def validate_connector_definition(request: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Validate a CreateConnectorDefinition request; return (normalised request, warnings).

    Raises BadRequestError listing every problem in the whole request.  The input is not modified; the returned
    copy carries the normalised training-job ARNs.
    """
    if not isinstance(request, Mapping):
        raise BadRequestError([detail(INVALID_REQUEST,
                                       f"The request body must be a JSON object, not {json_type(request)}")])
    normalised = copy.deepcopy(dict(request))
    shape_problems = find_problems(validator(REQUEST_SCHEMA), normalised)
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
                details.append(detail(DUPLICATE_CONNECTOR_ID,
                                       f"Connector Id {connector_id!r} is used by connectors #{ids[connector_id]} "
                                       f"and #{index}; Ids must be unique within a connector definition version"))
            else:
                ids[connector_id] = index

        arn = connector.get("ConnectorArn")
        if not isinstance(arn, str):
            continue  # missing or not a string: the request schema reports it
        found = match_arn(arn)
        if found is None:
            details.append(detail(INVALID_CONNECTOR_ARN, unknown_arn_message(subject, arn)))
            continue
        entry, region = found
        if region == "region":
            warnings.append(f"{subject}: ConnectorArn uses the documentation's placeholder region 'region'; "
                            f"put the group's AWS Region there (for example us-west-2)")
        if entry.platform != "any":
            platforms.setdefault(entry.platform, label)

        if entry.name in by_name:
            other_label, other_version = by_name[entry.name]
            details.append(detail(
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
        result = _check_connector(subject, entry, parameters)
        if "Parameters" in connector:
            connector["Parameters"] = result.parameters
        details.extend(result.details)
        warnings.extend(result.warnings)

        service = result.parameters.get(SERVICE_NAME_PARAMETER)
        if isinstance(service, str) and SERVICE_NAME_PARAMETER not in result.invalid:
            if service in services:
                details.append(detail(
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
        shape_details.append(detail(INVALID_REQUEST, request_problem_text(problem)))

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
            details.append(detail(UNKNOWN_FEEDBACK_CONFIG_ID, (
                f"{subject}: {FEEDBACK_PARAMETER} {config_id!r} needs the ML Feedback connector "
                f"(arn:aws:greengrass:<region>::/connectors/{FEEDBACK_CONNECTOR}/versions/1) in the same definition, "
                f"with {config_id!r} in its {FEEDBACK_MAP_PARAMETER}; this definition has none")))
            continue
        label, ids = feedback
        if ids is not None and config_id not in ids:  # an invalid map is reported on its own
            details.append(detail(UNKNOWN_FEEDBACK_CONFIG_ID, (
                f"{subject}: {FEEDBACK_PARAMETER} {config_id!r} is not defined in the {FEEDBACK_MAP_PARAMETER} "
                f"of ML Feedback connector {label!r} (it defines: {', '.join(sorted(ids)) or 'nothing'})")))
    return details
