"""Subscriptions without a runtime: MQTT topic matching, subscription definitions, and the router over a real
Dispatcher (the end-to-end path is tests/test_publishing.py)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from bench.harness import ggic
from connector.contract.problems import BadRequestError
from connector.control import cli
from connector.control.cli.arguments import EXIT_SERVICE_ERROR
from connector.control.subscriptions import validate_subscription_definition
from connector.core.invocations import Dispatcher
from connector.core.metrics import RuntimeMetrics
from connector.core.router import (
    CLOUD_ENDPOINT,
    CONNECTOR,
    LAMBDA,
    Endpoint,
    EndpointError,
    Publish,
    PublishRefusedError,
    PublishRejectedError,
    Router,
    SubscriptionError,
    SubscriptionTable,
    UnsupportedEndpointError,
    filter_covers,
    hosting_problems,
    minimal_filters,
    parse_endpoint,
    parse_publish,
    topic_filter_problem,
    topic_matches,
    topic_name_problem,
)

ARN = "arn:aws:lambda:us-west-2:000000000000:function:"
PUBLISHER, RECORDER, OTHER = ARN + "publisher", ARN + "recorder", ARN + "other"
CONNECTOR_ARN = "arn:aws:greengrass:us-west-2::/connectors/MLFeedback/versions/1"
CONNECTOR_FUNCTION = "arn:aws:lambda:us-west-2:aws:function:MLFeedback"


# --- topic matching ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic_filter, topic, matches", [
    # The examples of the MQTT 3.1.1 specification, 4.7.1
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),  # '#' matches the parent level too
    ("#", "sport/tennis", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),  # an empty level is a level
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    # 4.7.2: a leading wildcard does not match a topic starting with '$'
    ("#", "$SYS/broker/load", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("a/#", "a/$b", True),  # only the first level is special
    # literal levels: exact, case-sensitive, no prefix matching
    ("a/b", "a/b", True),
    ("a/b", "a/B", False),
    ("a/b", "a/b/", False),
    ("a/b", "a", False),
    ("a/b/c", "a/b", False),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("+/b", "ab", False),
    ("#", "/", True),
])
def test_topic_matches(topic_filter, topic, matches):
    assert topic_filter_problem(topic_filter) is None
    assert topic_name_problem(topic) is None
    assert topic_matches(topic_filter, topic) is matches


levels = st.sampled_from(["a", "b", ""])
topics = st.lists(levels, min_size=1, max_size=4).map("/".join)
filters = st.tuples(st.lists(st.sampled_from(["a", "b", "", "+"]), min_size=1, max_size=4),
                    st.booleans()).map(lambda t: "/".join(t[0] + (["#"] if t[1] else [])))


@given(filters, topics)
def test_topic_matching_agrees_with_paho(topic_filter, topic):
    assert topic_matches(topic_filter, topic) is topic_matches_sub(topic_filter, topic)


@pytest.mark.parametrize("topic_filter", ["#", "+", "a/#", "+/+/#", "/", "a//b", "$SYS/#", "a/+/c", "ü/ø"])
def test_valid_topic_filters(topic_filter):
    assert topic_filter_problem(topic_filter) is None


@pytest.mark.parametrize("topic_filter, reason", [
    ("", "empty"),
    ("a#", "'#' must be a whole level and the last one"),
    ("a/#/b", "'#' must be a whole level and the last one"),
    ("#/a", "'#' must be a whole level and the last one"),
    ("a/b#", "'#' must be a whole level and the last one"),
    ("a+", "'+' must be a whole level"),
    ("a/b+/c", "'+' must be a whole level"),
    ("++", "'+' must be a whole level"),
    ("a\x00b", "null character"),
    ("x" * 65536, "longer than 65535 bytes"),
])
def test_invalid_topic_filters(topic_filter, reason):
    assert reason in topic_filter_problem(topic_filter)


def test_topic_names_have_no_wildcards():
    assert "wildcards" in topic_name_problem("a/+/b")
    assert "wildcards" in topic_name_problem("a/#")
    assert topic_name_problem("a/b") is None


@pytest.mark.parametrize("general, specific, covers", [
    ("a/#", "a/b", True), ("a/#", "a", True), ("a/#", "a/+/#", True), ("#", "a/b/c", True),
    ("+/b", "a/b", True), ("a/+", "a/#", False), ("a/b", "a/+", False), ("a/+", "a", False),
    ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True), ("a/b", "a/b", True),
])
def test_filter_covers(general, specific, covers):
    assert filter_covers(general, specific) is covers


@st.composite
def covering_case(draw):
    """(general, specific, topic): a filter, a topic it matches and a filter that covers it, each built from the
    last, so every example exercises the property (no example is discarded by a condition)."""
    levels = draw(st.lists(st.sampled_from(["a", "b", "c", "+"]), min_size=1, max_size=4))
    topic = "/".join(draw(st.sampled_from(["a", "b", "x"])) if level == "+" else level for level in levels)
    general = ["+" if draw(st.booleans()) else level for level in levels]
    cut = draw(st.integers(0, len(levels)))
    if cut < len(levels):  # from here on, any levels: '#'
        general = general[:cut] + ["#"]
    return "/".join(general), "/".join(levels), topic


@given(covering_case())
def test_a_covering_filter_matches_every_topic_the_covered_one_matches(case):
    general, specific, topic = case
    assert topic_matches(specific, topic)
    assert filter_covers(general, specific)
    assert topic_matches(general, topic) and topic_matches_sub(general, topic)


def test_minimal_filters_drop_covered_and_repeated_ones():
    assert minimal_filters(["a/b", "a/#", "a/+/c", "a/b", "$SYS/x", "b"]) == ["a/#", "$SYS/x", "b"]
    assert minimal_filters(["a/+", "a/b/c"]) == ["a/+", "a/b/c"]
    assert minimal_filters(["#", "x/y", "+"]) == ["#"]


# --- endpoints and subscriptions ---------------------------------------------------------------------------------

def test_endpoints():
    assert parse_endpoint("cloud") == CLOUD_ENDPOINT
    assert parse_endpoint(PUBLISHER + ":$LATEST") == Endpoint(LAMBDA, PUBLISHER)
    assert parse_endpoint(PUBLISHER + ":prod") == Endpoint(LAMBDA, PUBLISHER)
    assert parse_endpoint(CONNECTOR_ARN) == Endpoint(CONNECTOR, CONNECTOR_ARN)
    assert parse_endpoint(CONNECTOR_ARN).label == "MLFeedback/1"
    assert parse_endpoint(PUBLISHER).label == "publisher"


@pytest.mark.parametrize("text, error, reason", [
    ("GGShadowService", UnsupportedEndpointError, "local shadow service"),
    ("arn:aws:iot:us-west-2:123456789012:thing/MyDevice", UnsupportedEndpointError, "devices"),
    ("arn:aws:lambda:::function:GGRouter", UnsupportedEndpointError, "system function GGRouter"),
    ("Cloud", EndpointError, "not a Lambda function ARN"),
    ("arn:aws:s3:::bucket", EndpointError, "not a Lambda function ARN"),
    ("arn:aws:greengrass:us-west-2::/connectors/ML Feedback/versions/1", EndpointError, "connector ARN"),
])
def test_refused_endpoints(text, error, reason):
    with pytest.raises(error, match=reason):
        parse_endpoint(text)


def test_a_subscription_table_finds_each_target_once():
    table = SubscriptionTable.from_definition([
        {"Id": "1", "Source": PUBLISHER, "Subject": "a/#", "Target": RECORDER},
        {"Id": "2", "Source": PUBLISHER + ":1", "Subject": "a/b", "Target": RECORDER + ":$LATEST"},
        {"Id": "3", "Source": PUBLISHER, "Subject": "a/+", "Target": "cloud"},
        {"Id": "4", "Source": "cloud", "Subject": "in/+", "Target": RECORDER},
        {"Id": "5", "Source": "cloud", "Subject": "in/x", "Target": OTHER},
    ])
    publisher = Endpoint(LAMBDA, PUBLISHER)
    assert table.targets(publisher, "a/b") == [Endpoint(LAMBDA, RECORDER), CLOUD_ENDPOINT]
    assert table.targets(publisher, "a") == [Endpoint(LAMBDA, RECORDER)]
    assert table.targets(publisher, "b") == []
    assert table.targets(Endpoint(LAMBDA, RECORDER), "a/b") == []
    assert table.filters_from(CLOUD_ENDPOINT) == ["in/+"]
    assert table.targets(CLOUD_ENDPOINT, "in/x") == [Endpoint(LAMBDA, RECORDER), Endpoint(LAMBDA, OTHER)]


def test_a_table_refuses_what_it_cannot_route():
    with pytest.raises(SubscriptionError, match="subscription 'x': .*both 'cloud'"):
        SubscriptionTable.from_definition([{"Id": "x", "Source": "cloud", "Subject": "a", "Target": "cloud"}])
    with pytest.raises(SubscriptionError, match="Subject 'a/#/b' is not a valid MQTT topic filter"):
        SubscriptionTable.from_definition([{"Id": "y", "Source": PUBLISHER, "Subject": "a/#/b", "Target": "cloud"}])


def test_hosting_problems():
    table = SubscriptionTable.from_definition([
        {"Id": "up", "Source": PUBLISHER, "Subject": "a", "Target": "cloud"},
        {"Id": "gone", "Source": PUBLISHER, "Subject": "a", "Target": OTHER},
        {"Id": "client", "Source": ARN + "ggic-client", "Subject": "a", "Target": RECORDER},
        {"Id": "feedback", "Source": CONNECTOR_ARN, "Subject": "feedback/#", "Target": RECORDER},
    ])
    errors, warnings = hosting_problems(table, [PUBLISHER, RECORDER + ":1"], [], have_broker=False)
    assert len(errors) == 2
    assert "subscription 'up'" in errors[0] and "no MQTT broker is configured" in errors[0]
    assert "subscription 'gone'" in errors[1] and f"Target {OTHER} is not in this runtime's --lambda" in errors[1]
    assert len(warnings) == 2 and "ggic-client" in warnings[0] and "connector definition" in warnings[1]
    errors, warnings = hosting_problems(table, [PUBLISHER, RECORDER, OTHER, CONNECTOR_FUNCTION], [CONNECTOR_ARN],
                                        have_broker=True)
    assert errors == [] and len(warnings) == 1


# --- definitions --------------------------------------------------------------------------------------------

def definition(*subscriptions: dict) -> dict:
    return {"Name": "routes", "InitialVersion": {"Subscriptions": list(subscriptions)}}


def test_a_valid_definition_is_accepted():
    request = definition({"Id": "to-cloud", "Source": PUBLISHER, "Subject": "out/#", "Target": "cloud"},
                         {"Id": "from-cloud", "Source": "cloud", "Subject": "in/+", "Target": RECORDER + ":1"},
                         {"Id": "feedback", "Source": CONNECTOR_ARN, "Subject": "feedback/message/#",
                          "Target": "cloud"})
    assert validate_subscription_definition(request) == request


def test_every_problem_of_a_definition_is_reported_at_once():
    request = definition(
        {"Id": "a", "Source": PUBLISHER, "Subject": "x/#/y", "Target": "cloud"},
        {"Id": "a", "Source": "GGShadowService", "Subject": "$aws/things/t/shadow/update", "Target": RECORDER},
        {"Id": "c", "Source": "cloud", "Subject": "x", "Target": "cloud"},
        {"Id": "d", "Source": PUBLISHER, "Subject": "x", "Target": "arn:aws:iot:us-west-2:1:thing/Dev"},
        {"Id": "e", "Source": "somewhere", "Subject": "x+", "Target": RECORDER},
        {"Id": "bad id!", "Source": PUBLISHER, "Subject": "x", "Target": "cloud", "Extra": 1},
        {"Id": "g", "Source": PUBLISHER, "Subject": "x"},
    )
    with pytest.raises(BadRequestError) as refused:
        validate_subscription_definition(request)
    details = [(d["DetailedErrorCode"], d["DetailedErrorMessage"]) for d in refused.value.error_details]
    codes = [code for code, _ in details]
    assert refused.value.message == f"Invalid subscription definition: {len(details)} problems found"
    assert codes.count("InvalidRequest") == 3  # the Id pattern, the extra field, the missing Target
    assert any("Subscriptions[5].Id" in text and "does not match pattern" in text for _, text in details)
    assert any("Subscriptions[5].Extra is not allowed" in text for _, text in details)
    assert any("Subscriptions[6].Target is required" in text for _, text in details)
    assert ("DuplicateSubscriptionId", "InitialVersion.Subscriptions[1] (Id 'a'): Id 'a' is already used by "
            "InitialVersion.Subscriptions[0]") in details
    assert codes.count("InvalidTopicFilter") == 2
    assert any("Subscriptions[0]" in text and "'#' must be a whole level and the last one" in text
               for _, text in details)
    unsupported = [text for code, text in details if code == "UnsupportedSubscriptionEndpoint"]
    assert len(unsupported) == 2
    assert "GGShadowService" in unsupported[0] and "not supported by this runtime" in unsupported[0]
    assert "devices" in unsupported[1] and "not supported by this runtime" in unsupported[1]
    assert [text for code, text in details if code == "InvalidSubscriptionEndpoint"] == [
        "InitialVersion.Subscriptions[4] (Id 'e'): Source 'somewhere': it is not a Lambda function ARN "
        "(arn:aws:lambda:<region>:<account>:function:<name>), a connector ARN "
        "(arn:aws:greengrass:<region>::/connectors/<name>/versions/<n>) or 'cloud'"]
    assert [text for code, text in details if code == "InvalidSubscription"] == [
        "InitialVersion.Subscriptions[2] (Id 'c'): Source and Target are both 'cloud': a subscription routes "
        "messages to or from the core"]


def test_a_definition_without_subscriptions_is_refused():
    with pytest.raises(BadRequestError) as refused:
        validate_subscription_definition({"InitialVersion": {}})
    assert refused.value.error_details == [{"DetailedErrorCode": "InvalidRequest", "DetailedErrorMessage":
                                            "Request field InitialVersion.Subscriptions is required but missing"}]


def test_cli_creates_and_refuses_like_the_aws_cli(tmp_path, capsys):
    good = json.dumps({"Subscriptions": [{"Id": "1", "Source": PUBLISHER, "Subject": "out", "Target": "cloud"}]})
    assert cli.main(["create-subscription-definition", "--state-dir", str(tmp_path), "--name", "routes",
                     "--initial-version", good]) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["Name"] == "routes"
    assert response["Arn"].startswith("arn:aws:greengrass:us-west-2:000000000000:/greengrass/definition/"
                                      "subscriptions/")
    assert response["LatestVersionArn"] == f"{response['Arn']}/versions/{response['LatestVersion']}"
    stored = json.loads((tmp_path / "definitions" / "subscriptions" / f"{response['Id']}.json").read_text())
    assert stored["Version"] == json.loads(good)

    bad = json.dumps({"Subscriptions": [{"Id": "1", "Source": "cloud", "Subject": "#", "Target": "cloud"}]})
    assert cli.main(["create-subscription-definition", "--state-dir", str(tmp_path), "--initial-version",
                     bad]) == EXIT_SERVICE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("An error occurred (BadRequestException) when calling the CreateSubscriptionDefinition "
                          "operation: Invalid subscription definition: 1 problem found")
    assert json.loads(err.split("\n", 1)[1])["ErrorDetails"][0]["DetailedErrorCode"] == "InvalidSubscription"


def test_run_refuses_an_unknown_subscription_definition(tmp_path):
    result = ggic("run", "--state-dir", str(tmp_path), "--lambda", "tests/lambdas/echo.py",
                  "--subscription-definition", "nope")
    assert result.returncode == 1
    assert "no subscription definition 'nope'" in result.stderr.decode()


# --- the router over a real dispatcher ---------------------------------------------------------------------------

def custom_of(client_context: str) -> dict:
    return json.loads(base64.b64decode(client_context))["custom"]


@pytest.fixture
def routing():
    dispatcher = Dispatcher()
    recorder = dispatcher.add_function(RECORDER, max_items=2)
    feedback = dispatcher.add_function(CONNECTOR_FUNCTION + ":deployment-1")
    metrics = RuntimeMetrics(lambda: [])
    table = SubscriptionTable.from_definition([
        {"Id": "local", "Source": PUBLISHER, "Subject": "t/#", "Target": RECORDER},
        {"Id": "to-connector", "Source": PUBLISHER, "Subject": "t/feedback", "Target": CONNECTOR_ARN},
        {"Id": "from-connector", "Source": CONNECTOR_ARN, "Subject": "feedback/#", "Target": RECORDER},
    ])
    router = Router(table, dispatcher, {CONNECTOR_ARN: CONNECTOR_FUNCTION + ":deployment-1"}, metrics)
    return router, recorder, feedback, metrics


def sample(metrics: RuntimeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_router_delivers_with_the_topic_in_the_client_context(routing):
    router, recorder, feedback, metrics = routing
    assert router.publish(Publish(PUBLISHER + ":$LATEST", "t/feedback", b'{"x": 1}')) == 2
    item = recorder.take(0)
    assert (item.payload, item.invocation_type) == (b'{"x": 1}', "Event")
    assert custom_of(item.client_context) == {"subject": "t/feedback", "source": PUBLISHER}
    assert custom_of(feedback.take(0).client_context)["subject"] == "t/feedback"
    # The connector's function publishes as the connector.
    assert router.publish(Publish(CONNECTOR_FUNCTION, "feedback/message/status", b"{}")) == 1
    assert custom_of(recorder.take(0).client_context)["source"] == CONNECTOR_ARN
    assert sample(metrics, "ggic_messages_routed_total", source="MLFeedback/1", target="recorder") == 1


def test_router_drops_unmatched_publishes_and_counts_them(routing):
    router, recorder, _, metrics = routing
    assert router.publish(Publish(PUBLISHER, "elsewhere", b"{}")) == 0
    assert router.publish(Publish(RECORDER, "t/x", b"{}")) == 0  # no subscription has the recorder as source
    assert len(recorder) == 0
    assert sample(metrics, "ggic_messages_unmatched_total", source="publisher") == 1
    assert sample(metrics, "ggic_messages_unmatched_total", source="recorder") == 1


def test_router_queue_full_policies(routing, caplog):
    router, recorder, feedback, metrics = routing
    for n in range(2):
        router.publish(Publish(PUBLISHER, "t/a", b"%d" % n))
    assert router.publish(Publish(PUBLISHER, "t/a", b"best", "BestEffort")) == 0
    assert "dropped a message from publisher on 't/a' for recorder" in caplog.text
    assert sample(metrics, "ggic_messages_dropped_total", source="publisher", target="recorder",
                  reason="queue-full") == 1
    # AllOrError: the connector has room, the recorder has not: neither gets it.
    with pytest.raises(PublishRefusedError, match="queue of target recorder is full"):
        router.publish(Publish(PUBLISHER, "t/feedback", b"all", "AllOrError"))
    assert len(feedback) == 0 and len(recorder) == 2
    # BestEffort: the connector gets it.
    assert router.publish(Publish(PUBLISHER, "t/feedback", b"some", "")) == 1
    assert feedback.take(0).payload == b"some"


@pytest.mark.parametrize("context, reason", [
    ("%%%", "not base64 JSON"),
    (base64.b64encode(b"[1]").decode(), "no \"custom\" object"),
    (base64.b64encode(json.dumps({"custom": {"source": PUBLISHER}}).encode()).decode(), "\"subject\""),
    (base64.b64encode(json.dumps({"custom": {"subject": "a/#", "source": PUBLISHER}}).encode()).decode(),
     "wildcards"),
    (base64.b64encode(json.dumps({"custom": {"subject": "a"}}).encode()).decode(), "\"source\""),
    (base64.b64encode(json.dumps({"custom": {"subject": "a", "source": PUBLISHER, "queueFullPolicy": "x"}})
                      .encode()).decode(), "queueFullPolicy 'x'"),
])
def test_publishes_the_router_cannot_take(context, reason):
    with pytest.raises(PublishRejectedError, match=reason):
        parse_publish(context, b"")


def test_a_publish_as_greengrasssdk_sends_it():
    context = base64.b64encode(json.dumps({"custom": {"source": PUBLISHER, "subject": "a/b",
                                                      "queueFullPolicy": "AllOrError"}}).encode())
    assert parse_publish(context.decode(), b"x") == Publish(PUBLISHER, "a/b", b"x", "AllOrError")


def test_the_cloud_cannot_be_claimed_by_a_local_publisher(routing):
    router = routing[0]
    with pytest.raises(PublishRejectedError, match="not a function ARN"):
        router.publish(Publish("cloud", "t/a", b""))
