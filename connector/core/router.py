"""Routing of published messages through a group's subscription table, as a Greengrass core's router does.

greengrasssdk's `iot-data` client publishes by posting an `Event` invocation to `GGRouter` with the topic (`subject`)
and the publisher (`source`) in the client context. The router delivers the payload to the target of every
subscription whose Source is the publisher and whose Subject (an MQTT topic filter) matches the topic: a local
function (as an `Event` invocation whose client context carries `subject` and `source`, so the handler reads the
topic from `context.client_context.custom["subject"]`), or `cloud` (the MQTT bridge). A publish that matches no
subscription is dropped, as on a core.

Subscription endpoints (Source and Target): a Lambda function ARN (qualified or not: every qualifier of a local
function reaches the same process), a connector ARN (its messages come from, and go to, the function hosting it),
or `cloud`. The local shadow service and devices are not supported by this runtime.

queueFullPolicy: `BestEffort` (and "") delivers to every target with room and drops, with a WARNING and a metric,
for a target whose queue is full; `AllOrError` first checks that every target has room and otherwise refuses the
whole publish (the IPC call answers 429 and the SDK raises).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple

from connector.contract.greengrass import ALL_OR_ERROR, BEST_EFFORT, QUEUE_FULL_POLICIES, encode_client_context
from connector.core.invocations import EVENT, Dispatcher, FunctionNotFoundError, QueueFullError, unqualified_arn

log = logging.getLogger("ggic.router")

CLOUD = "cloud"
SHADOW_SERVICE = "GGShadowService"
# MQTT 3.1.1: topic names and filters are UTF-8 strings of at most 65535 bytes, without U+0000.
MAX_TOPIC_BYTES = 65535
# How often a recurring drop (a full queue, a broker away) is logged at WARNING; in between it is counted only.
DROP_WARNING_INTERVAL_S = 10.0

LAMBDA, CONNECTOR = "lambda", "connector"
_LAMBDA_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]*:[0-9a-zA-Z]*:function:([a-zA-Z0-9_-]+)(?::[a-zA-Z0-9$_-]+)?$")
_CONNECTOR_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:greengrass:[a-zA-Z0-9-]*::/connectors/([a-zA-Z0-9_-]+)/versions/([0-9]+)$")
_THING_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iot:[^:]*:[^:]*:thing/")
# The core's own functions: addresses of the core, not subscription endpoints.
_SYSTEM_FUNCTIONS = ("GGRouter", SHADOW_SERVICE, "GGSecretManager")


class EndpointError(ValueError):
    """A subscription Source or Target that is not a Lambda function ARN, a connector ARN or `cloud`."""


class UnsupportedEndpointError(EndpointError):
    """A valid Greengrass endpoint this runtime does not provide (the local shadow service, devices)."""


class PublishRejectedError(ValueError):
    """A publish the router cannot take as sent (not base64 JSON, no subject, ...): the IPC call answers 400."""


class PublishRefusedError(RuntimeError):
    """An AllOrError publish with a matching target that cannot take it now: the IPC call answers 429."""


# --- MQTT topics -------------------------------------------------------------------------------------------

def topic_filter_problem(topic_filter: str) -> Optional[str]:
    """Why `topic_filter` is not a valid MQTT 3.1.1 topic filter, or None when it is (spec 4.7)."""
    problem = _topic_string_problem(topic_filter)
    if problem:
        return problem
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one (as in 'a/#')"
        if "+" in level and level != "+":
            return "'+' must be a whole level (as in 'a/+/c')"
    return None


def topic_name_problem(topic: str) -> Optional[str]:
    """Why `topic` cannot be published to (a topic name has no wildcards), or None when it can."""
    problem = _topic_string_problem(topic)
    if problem:
        return problem
    if "+" in topic or "#" in topic:
        return "a topic name to publish to cannot contain the wildcards '+' or '#'"
    return None


def _topic_string_problem(text: str) -> Optional[str]:
    if not text:
        return "it is empty"
    if "\x00" in text:
        return "it contains the null character U+0000"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return f"it is longer than {MAX_TOPIC_BYTES} bytes"
    return None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` matches `topic_filter` under MQTT 3.1.1 rules: `+` matches one whole level, `#` the rest
    including the parent level ('a/#' matches 'a'), and a topic starting with '$' is not matched by a filter
    starting with a wildcard."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def filter_covers(general: str, specific: str) -> bool:
    """Whether every topic matching `specific` also matches `general` (both valid filters)."""
    general_levels = general.split("/")
    specific_levels = specific.split("/")
    for index, level in enumerate(general_levels):
        other = specific_levels[index] if index < len(specific_levels) else None
        if index == 0 and level in ("+", "#") and other is not None and other.startswith("$"):
            return False  # a leading wildcard never matches a '$' topic
        if level == "#":
            return True
        if other is None or other == "#" or (level != "+" and level != other):
            return False
    return len(general_levels) == len(specific_levels)


def minimal_filters(filters: Iterable[str]) -> List[str]:
    """The filters without those another one covers: subscribing to overlapping filters would make a broker
    deliver one message several times."""
    unique = list(dict.fromkeys(filters))
    return [candidate for candidate in unique
            if not any(other != candidate and filter_covers(other, candidate) for other in unique)]


# --- subscriptions -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """A subscription's Source or Target: `kind` is "lambda", "connector" or "cloud"; `address` the unqualified
    function ARN, the connector ARN, or "cloud"."""

    kind: str
    address: str

    @property
    def label(self) -> str:
        """A short name for logs and metric labels: the function name, `Connector/version`, or `cloud`."""
        if self.kind == LAMBDA:
            return self.address.split(":function:", 1)[-1]
        match = _CONNECTOR_ARN.match(self.address)
        return f"{match.group(1)}/{match.group(2)}" if match else self.address


CLOUD_ENDPOINT = Endpoint(CLOUD, CLOUD)


def parse_endpoint(text: str) -> Endpoint:
    """A subscription Source or Target; EndpointError says why one is refused."""
    if text == CLOUD:
        return CLOUD_ENDPOINT
    if text == SHADOW_SERVICE:
        raise UnsupportedEndpointError("the local shadow service (GGShadowService) is not supported by this runtime")
    if _THING_ARN.match(text):
        raise UnsupportedEndpointError("devices (thing ARNs) are not supported by this runtime")
    match = _LAMBDA_ARN.match(text)
    if match:
        if match.group(1) in _SYSTEM_FUNCTIONS:
            raise UnsupportedEndpointError(f"the core's system function {match.group(1)} is not supported by this "
                                           f"runtime as a subscription endpoint")
        return Endpoint(LAMBDA, unqualified_arn(text))
    if _CONNECTOR_ARN.match(text):
        return Endpoint(CONNECTOR, text)
    raise EndpointError("it is not a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>), "
                        "a connector ARN (arn:aws:greengrass:<region>::/connectors/<name>/versions/<n>) or 'cloud'")


class SubscriptionError(ValueError):
    """A subscription of a definition that cannot be routed."""


@dataclass(frozen=True)
class SubscriptionProblem:
    """One reason a subscription cannot be routed: `field` is "Source", "Target", "Subject" or "" (the whole)."""

    field: str
    message: str
    unsupported: bool = False  # valid for Greengrass, not provided by this runtime


def subscription_problems(entry: Mapping[str, str]) -> List[SubscriptionProblem]:
    """Every problem of one `{"Id", "Source", "Subject", "Target"}` (string fields; the schema checks shapes)."""
    problems = []
    endpoints = []
    for key in ("Source", "Target"):
        try:
            endpoints.append(parse_endpoint(entry[key]))
        except EndpointError as exc:
            problems.append(SubscriptionProblem(key, f"{key} {entry[key]!r}: {exc}",
                                                isinstance(exc, UnsupportedEndpointError)))
    problem = topic_filter_problem(entry["Subject"])
    if problem:
        problems.append(SubscriptionProblem("Subject", f"Subject {entry['Subject']!r} is not a valid MQTT topic "
                                                       f"filter: {problem}"))
    if endpoints == [CLOUD_ENDPOINT, CLOUD_ENDPOINT]:
        problems.append(SubscriptionProblem("", "Source and Target are both 'cloud': a subscription routes messages "
                                                "to or from the core"))
    return problems


@dataclass(frozen=True)
class Subscription:
    id: str
    source: Endpoint
    subject: str
    target: Endpoint

    @classmethod
    def from_entry(cls, entry: Mapping[str, str]) -> "Subscription":
        """One `{"Id", "Source", "Subject", "Target"}` of a subscription definition version."""
        problems = subscription_problems(entry)
        if problems:
            raise SubscriptionError(f"subscription {entry.get('Id')!r}: " + "; ".join(p.message for p in problems))
        return cls(entry["Id"], parse_endpoint(entry["Source"]), entry["Subject"], parse_endpoint(entry["Target"]))

    def describe(self) -> str:
        return f"subscription {self.id!r} ({self.source.label} -> {self.target.label} on {self.subject!r})"


class SubscriptionTable:
    """The subscriptions of one definition version, looked up by publisher and topic."""

    def __init__(self, subscriptions: Iterable[Subscription] = ()) -> None:
        self.subscriptions: Tuple[Subscription, ...] = tuple(subscriptions)

    @classmethod
    def from_definition(cls, entries: Iterable[Mapping[str, str]]) -> "SubscriptionTable":
        """From a definition version's `Subscriptions`; raises SubscriptionError on the first one refused."""
        return cls(Subscription.from_entry(entry) for entry in entries)

    def targets(self, source: Endpoint, topic: str) -> List[Endpoint]:
        """Every target a message from `source` on `topic` goes to, each once, in definition order."""
        found: Dict[Endpoint, None] = {}
        for subscription in self.subscriptions:
            if subscription.source == source and topic_matches(subscription.subject, topic):
                found.setdefault(subscription.target)
        return list(found)

    def filters_from(self, source: Endpoint) -> List[str]:
        """The topic filters to subscribe to for messages from `source` (the cloud), overlaps removed."""
        return minimal_filters(s.subject for s in self.subscriptions if s.source == source)


# --- routing -----------------------------------------------------------------------------------------------

class CloudLink(Protocol):
    """The cloud side (mqtt_bridge.MqttBridge): takes messages for the broker, queueing them while disconnected."""

    def has_room(self) -> bool: ...

    def publish(self, topic: str, payload: bytes) -> bool: ...


class RoutingMetrics(Protocol):
    def routed(self, source: str, target: str) -> None: ...

    def dropped(self, source: str, target: str, reason: str) -> None: ...

    def unmatched(self, source: str) -> None: ...


@dataclass(frozen=True)
class Publish:
    """One message as a publisher sent it to GGRouter."""

    source: str
    subject: str
    payload: bytes
    queue_full_policy: str = ""


def parse_publish(client_context: str, payload: bytes) -> Publish:
    """A GGRouter invocation (client context base64 JSON `{"custom": {"source", "subject", "queueFullPolicy"}}`)
    → a Publish; PublishRejectedError says what is wrong with it."""
    try:
        decoded = json.loads(base64.b64decode(client_context or "", validate=True) or b"null")
    except (binascii.Error, ValueError):
        raise PublishRejectedError("a publish to GGRouter needs X-Amz-Client-Context: base64 of JSON "
                                   "{\"custom\": {\"subject\": <topic>, \"source\": <your function ARN>}}; "
                                   "this one is not base64 JSON") from None
    custom = decoded.get("custom") if isinstance(decoded, dict) else None
    if not isinstance(custom, dict):
        raise PublishRejectedError("a publish to GGRouter needs a client context {\"custom\": {\"subject\": "
                                   "<topic>, \"source\": <your function ARN>}}; it has no \"custom\" object")
    subject, source = custom.get("subject"), custom.get("source")
    if not isinstance(subject, str) or not subject:
        raise PublishRejectedError("a publish to GGRouter needs the topic as \"subject\" in the client context's "
                                   "\"custom\" object; it has none")
    problem = topic_name_problem(subject)
    if problem:
        raise PublishRejectedError(f"cannot publish to topic {subject!r}: {problem}")
    if not isinstance(source, str) or not source:
        raise PublishRejectedError("a publish to GGRouter needs the publisher's function ARN as \"source\" in the "
                                   "client context's \"custom\" object (greengrasssdk sends MY_FUNCTION_ARN)")
    policy = custom.get("queueFullPolicy") or ""
    if policy not in QUEUE_FULL_POLICIES:
        raise PublishRejectedError(f"queueFullPolicy {policy!r} is not one of "
                                   f"{', '.join(map(repr, QUEUE_FULL_POLICIES))}")
    return Publish(source, subject, payload, policy)


def delivery_context(topic: str, source: str) -> str:
    """The client context a subscription target gets: what a core puts there for a routed message."""
    return encode_client_context({"subject": topic, "source": source})


class _DropWarnings:
    """WARNING for the first drop to a target, then at most once per DROP_WARNING_INTERVAL_S (with the count of
    drops in between): a broker away for an hour must not write a line per message."""

    def __init__(self) -> None:
        self._last: Dict[str, Tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (0.0, 0))
            if last and now - last < DROP_WARNING_INTERVAL_S:
                self._last[key] = (last, suppressed + 1)
                log.debug("%s", message)
                return
            self._last[key] = (now, 0)
        more = f" ({suppressed} more dropped since the last warning)" if suppressed else ""
        log.warning("%s%s", message, more)


class Router:
    """Delivers publishes (from functions through GGRouter, or from the cloud) to their subscriptions' targets."""

    def __init__(self, table: SubscriptionTable, dispatcher: Dispatcher, connector_functions: Mapping[str, str],
                 metrics: Optional[RoutingMetrics] = None, cloud: Optional[CloudLink] = None) -> None:
        """`connector_functions`: connector ARN → the ARN of the function hosting it."""
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.cloud = cloud
        self._lock = threading.Lock()  # one publish at a time: an AllOrError check holds until it is delivered
        self._warnings = _DropWarnings()
        self._set(table, connector_functions)

    def _set(self, table: SubscriptionTable, connector_functions: Mapping[str, str]) -> None:
        self.table = table
        self._function_of = {arn: unqualified_arn(function) for arn, function in connector_functions.items()}
        self._connector_of = {function: arn for arn, function in self._function_of.items()}

    def replace(self, table: SubscriptionTable, connector_functions: Mapping[str, str]) -> None:
        """A new deployment's subscriptions and connectors: publishes after this call are routed by them (each
        attribute is swapped in one assignment; the lock only waits for a delivery in progress)."""
        with self._lock:
            self._set(table, connector_functions)

    def source_of(self, function_arn: str) -> Endpoint:
        """Who a publishing function is in the subscription table: its connector when it hosts one."""
        unqualified = unqualified_arn(function_arn)
        connector = self._connector_of.get(unqualified)
        return Endpoint(CONNECTOR, connector) if connector else Endpoint(LAMBDA, unqualified)

    def function_of(self, endpoint: Endpoint) -> Optional[str]:
        """The function ARN a local target is delivered to (None for a connector this runtime does not host)."""
        return self._function_of.get(endpoint.address) if endpoint.kind == CONNECTOR else endpoint.address

    def publish(self, message: Publish) -> int:
        """Route a function's publish; returns how many targets took it. Raises PublishRejectedError for a source
        that is not a function, PublishRefusedError when an AllOrError publish cannot reach every target."""
        if not _LAMBDA_ARN.match(message.source):
            raise PublishRejectedError(f"the publish's source {message.source!r} is not a function ARN")
        return self._route(self.source_of(message.source), message)

    def publish_from_cloud(self, topic: str, payload: bytes) -> int:
        """Route a message the MQTT bridge received from the broker."""
        return self._route(CLOUD_ENDPOINT, Publish(CLOUD, topic, payload, BEST_EFFORT))

    def _route(self, source: Endpoint, message: Publish) -> int:
        targets = self.table.targets(source, message.subject)
        if not targets:
            log.debug("no subscription matches a message from %s on %r: dropped", source.label, message.subject)
            if self.metrics is not None:
                self.metrics.unmatched(source.label)
            return 0
        context = delivery_context(message.subject, source.address)
        with self._lock:
            if message.queue_full_policy == ALL_OR_ERROR:
                full = [why for why in map(self._no_room, targets) if why]
                if full:
                    for target in targets:
                        self._count_drop(source, target, "refused")
                    raise PublishRefusedError(
                        f"the message on {message.subject!r} was not published (queueFullPolicy AllOrError): "
                        f"{'; '.join(full)}")
            return sum(self._deliver(source, target, message, context) for target in targets)

    def _no_room(self, target: Endpoint) -> Optional[str]:
        """Why `target` cannot take a message now, or None."""
        if target.kind == CLOUD:
            if self.cloud is not None and not self.cloud.has_room():
                return "the queue of messages for the cloud (MQTT broker) is full"
            return None
        function_arn = self.function_of(target)
        try:
            queue = self.dispatcher.queue(function_arn or target.address)
        except FunctionNotFoundError:
            return f"target {target.label} is not running in this runtime"
        if len(queue) >= queue.max_items:
            return f"the queue of target {target.label} is full ({queue.max_items} requests waiting)"
        return None

    def _deliver(self, source: Endpoint, target: Endpoint, message: Publish, context: str) -> bool:
        if target.kind == CLOUD:
            if self.cloud is None:  # Runtime refuses to start like this; kept safe for other callers
                return self._drop(source, target, message, "no-broker", "no MQTT broker is configured")
            if not self.cloud.publish(message.subject, message.payload):
                return self._drop(source, target, message, "queue-full",
                                  "the queue of messages for the cloud (MQTT broker) is full")
        else:
            try:
                self.dispatcher.submit(self.function_of(target) or target.address, message.payload, context, EVENT)
            except QueueFullError as exc:
                return self._drop(source, target, message, "queue-full", str(exc))
            except FunctionNotFoundError as exc:
                return self._drop(source, target, message, "not-running", str(exc))
        if self.metrics is not None:
            self.metrics.routed(source.label, target.label)
        return True

    def _drop(self, source: Endpoint, target: Endpoint, message: Publish, reason: str, why: str) -> bool:
        self._count_drop(source, target, reason)
        self._warnings.warn(f"{target.label}/{reason}", f"dropped a message from {source.label} on "
                                                        f"{message.subject!r} for {target.label}: {why}")
        return False

    def _count_drop(self, source: Endpoint, target: Endpoint, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.dropped(source.label, target.label, reason)


def hosting_problems(table: SubscriptionTable, functions: Sequence[str], connectors: Iterable[str],
                     have_broker: bool) -> Tuple[List[str], List[str]]:
    """(errors, warnings) for running `table` with these functions (ARNs) and connector ARNs: a target this
    runtime does not host, or `cloud` without a broker, is an error; a source it does not host is a warning (a
    process acting as a Lambda through `ggic env` may publish as any function)."""
    hosted = {unqualified_arn(arn) for arn in functions}
    connector_arns = set(connectors)
    errors: List[str] = []
    warnings: List[str] = []
    for subscription in table.subscriptions:
        for role, endpoint in (("Source", subscription.source), ("Target", subscription.target)):
            if endpoint.kind == CLOUD:
                if not have_broker:
                    errors.append(f"{subscription.describe()} names 'cloud' as its {role}, and no MQTT broker is "
                                  f"configured: give `--mqtt-broker HOST:PORT`")
                continue
            known = connector_arns if endpoint.kind == CONNECTOR else hosted
            if endpoint.address in known:
                continue
            what = "connector definition" if endpoint.kind == CONNECTOR else "--lambda functions"
            text = f"{subscription.describe()}: {role} {endpoint.address} is not in this runtime's {what}"
            if role == "Target":
                errors.append(text)
            elif endpoint.kind == CONNECTOR:
                warnings.append(f"{text}: the subscription never matches")
            else:
                warnings.append(f"{text}: only a process acting as that function (`ggic env`) can publish as it")
    return list(dict.fromkeys(errors)), warnings

