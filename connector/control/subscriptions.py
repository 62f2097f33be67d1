"""Validation of CreateSubscriptionDefinition requests (`ggic create-subscription-definition`).

As with connector definitions, every problem is reported at once, in the Greengrass API's BadRequestException
shape. The request shape comes from `schemas/create-subscription-definition.schema.json`; what a schema cannot say
clearly is checked here with the same rules the router applies (connector/core/router.py), so a definition that
is accepted can be routed.

Error codes (``DetailedErrorCode``), one detail per problem:

- ``InvalidRequest``: the request does not have the CreateSubscriptionDefinition shape (request schema).
- ``DuplicateSubscriptionId``: two subscriptions share an Id.
- ``InvalidTopicFilter``: a Subject that is not an MQTT topic filter ('#' not last, '+' inside a level, ...).
- ``InvalidSubscriptionEndpoint``: a Source or Target that is not a Lambda function ARN, a connector ARN or cloud.
- ``UnsupportedSubscriptionEndpoint``: the local shadow service or a device: valid on Greengrass, not provided here.
- ``InvalidSubscription``: a subscription from cloud to cloud.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

from connector.core.router import subscription_problems
from connector.contract.problems import BadRequestError, detail, request_problems

SUBSCRIPTION_DEFINITION_SCHEMA = "create-subscription-definition.schema.json"

DUPLICATE_SUBSCRIPTION_ID = "DuplicateSubscriptionId"
INVALID_TOPIC_FILTER = "InvalidTopicFilter"
INVALID_SUBSCRIPTION_ENDPOINT = "InvalidSubscriptionEndpoint"
UNSUPPORTED_SUBSCRIPTION_ENDPOINT = "UnsupportedSubscriptionEndpoint"
INVALID_SUBSCRIPTION = "InvalidSubscription"

_FIELDS = ("Id", "Source", "Subject", "Target")


def validate_subscription_definition(request: Any) -> Dict[str, Any]:
    """The request, checked; raises BadRequestError listing every problem."""
    details = request_problems(SUBSCRIPTION_DEFINITION_SCHEMA, request)
    version = request.get("InitialVersion") if isinstance(request, dict) else None
    entries = version.get("Subscriptions") if isinstance(version, dict) else None
    seen: Dict[str, int] = {}
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        # Entries of the wrong shape were reported by the schema; check what can be checked of the others.
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in _FIELDS):
            continue
        where = f"InitialVersion.Subscriptions[{index}] (Id {entry['Id']!r})"
        if entry["Id"] in seen:
            details.append(detail(DUPLICATE_SUBSCRIPTION_ID, f"{where}: Id {entry['Id']!r} is already used by "
                                                              f"InitialVersion.Subscriptions[{seen[entry['Id']]}]"))
        seen.setdefault(entry["Id"], index)
        details += [detail(_code(problem.field, problem.unsupported), f"{where}: {problem.message}")
                    for problem in subscription_problems(entry)]
    if details:
        raise BadRequestError(details, f"Invalid subscription definition: {len(details)} problem"
                                       f"{'s' if len(details) != 1 else ''} found")
    return request


def _code(field: str, unsupported: bool) -> str:
    if field == "Subject":
        return INVALID_TOPIC_FILTER
    if field in ("Source", "Target"):
        return UNSUPPORTED_SUBSCRIPTION_ENDPOINT if unsupported else INVALID_SUBSCRIPTION_ENDPOINT
    return INVALID_SUBSCRIPTION


def subscription_arns(subscriptions: List[Mapping[str, str]]) -> List[str]:
    """Every Source and Target that is an ARN (for guessing the definition's region)."""
    return [entry[key] for entry in subscriptions for key in ("Source", "Target") if entry[key].startswith("arn:")]
