"""Publishing through subscriptions, end to end: `ggic run` with greengrasssdk Lambdas, a subscription definition and
a real MQTT broker (mosquitto); the test's own paho client stands for the cloud."""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import pytest

from bench.harness import GGICRuntime, ggic
from bench.material import REPO
from conftest import free_port
from mosquitto import MosquittoBroker, Subscriber

LAMBDAS = REPO / "tests" / "lambdas"
ARN = "arn:aws:lambda:us-west-2:000000000000:function:"  # the tests' region and ggic's default account
PUBLISHER, RECORDER = ARN + "publisher", ARN + "recorder"
ROUTER = "arn:aws:lambda:::function:GGRouter"
WAIT_S = 30.0

SUBSCRIPTIONS = [
    {"Id": "to-cloud", "Source": PUBLISHER, "Subject": "ggic/test/out/#", "Target": "cloud"},
    {"Id": "to-recorder", "Source": PUBLISHER + ":$LATEST", "Subject": "ggic/test/local/+/reading",
     "Target": RECORDER},
    {"Id": "from-cloud", "Source": "cloud", "Subject": "ggic/test/in/#", "Target": RECORDER},
    # Overlaps from-cloud: the bridge subscribes to ggic/test/in/# only, and the recorder gets each message once.
    {"Id": "from-cloud-too", "Source": "cloud", "Subject": "ggic/test/in/twice", "Target": RECORDER},
]


def invoke(runtime: GGICRuntime, function_arn: str, event: dict) -> Tuple[str, dict]:
    """A RequestResponse invocation over the real IPC: (X-Amz-Function-Error, decoded answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=WAIT_S)
    token = runtime.client_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    path = f"/2016-11-01/functions/{function_arn}"
    connection.request("POST", path, body=json.dumps(event), headers={"Authorization": token})
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    connection.request("GET", path, headers={"Authorization": token,
                                             "X-Amz-InvocationId": response.getheader("X-Amz-InvocationId")})
    answer = connection.getresponse()
    body = json.loads(answer.read())
    connection.close()
    return answer.getheader("X-Amz-Function-Error"), body


def publish(runtime: GGICRuntime, *messages: dict) -> List[Optional[str]]:
    """Have the greengrasssdk publisher Lambda publish `messages` in order; what the SDK raised, per message."""
    function_error, answer = invoke(runtime, PUBLISHER, {"messages": list(messages)})
    assert function_error == "", answer
    return answer["errors"]


def post_to_router(runtime: GGICRuntime, client_context: str, body: bytes = b"{}",
                   method: str = "POST") -> Tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=WAIT_S)
    connection.request(method, f"/2016-11-01/functions/{ROUTER}", body=body if method == "POST" else None, headers={
        "Authorization": runtime.client_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"],
        "X-Amz-Client-Context": client_context, "X-Amz-Invocation-Type": "Event", "X-Amz-InvocationId": "x"})
    response = connection.getresponse()
    text = response.read().decode()
    invocation_id = response.getheader("X-Amz-InvocationId")
    connection.close()
    return response.status, (invocation_id if response.status == 202 else json.loads(text)["errorMessage"])


def context_of(custom: dict) -> str:
    return base64.b64encode(json.dumps({"custom": custom}).encode()).decode()


def records(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_records(path: Path, predicate: Callable[[dict], bool], count: int = 1) -> List[dict]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = [record for record in records(path) if predicate(record)]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"the recorder did not get {count} such message(s) within {WAIT_S} s: {records(path)}")


def metric(runtime: GGICRuntime, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{runtime.port}/metrics", timeout=WAIT_S) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0])) == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_mqtt(runtime: GGICRuntime, predicate: Callable[[dict], bool], what: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        state = runtime.health()["mqtt"]
        if predicate(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"MQTT bridge not {what} within {WAIT_S} s: {state}")


@pytest.fixture(scope="module")
def routed(tmp_path_factory, mqtt_broker):
    state = tmp_path_factory.mktemp("publishing")
    recorded = state / "recorded.jsonl"
    runtime = GGICRuntime(state, [], lambdas=[str(LAMBDAS / "publisher.py"), str(LAMBDAS / "recorder.py")],
                          extra_env={"RECORDER_FILE": str(recorded)}, subscriptions=SUBSCRIPTIONS,
                          mqtt_broker=mqtt_broker, run_args=["--max-request-bytes", "65536"])
    with runtime:
        wait_mqtt(runtime, lambda s: s["connected"] and s["subscribed"], "connected and subscribed")
        runtime.recorded = recorded
        yield runtime


def test_greengrasssdk_publish_reaches_the_cloud_with_the_exact_topic_and_payload(routed, mqtt_broker):
    subscriber = Subscriber(mqtt_broker, "ggic/test/out/#")
    try:
        binary = bytes(range(256)) + b"\x00 not UTF-8 \xff"
        errors = publish(routed, {"topic": "ggic/test/out/camera-1/result", "payload": '{"label": "espresso"}'},
                         {"topic": "ggic/test/out/binary", "payload_b64": base64.b64encode(binary).decode()})
        assert errors == [None, None]
        assert subscriber.take(2) == [("ggic/test/out/camera-1/result", b'{"label": "espresso"}'),
                                      ("ggic/test/out/binary", binary)]
    finally:
        subscriber.close()
    assert metric(routed, "ggic_messages_routed_total", source="publisher", target="cloud") >= 2


def test_lambda_to_lambda_through_a_wildcard_subscription(routed):
    errors = publish(routed, {"topic": "ggic/test/local/kitchen/reading", "payload": '{"celsius": 21.5}'},
                     {"topic": "ggic/test/local/kitchen/other", "payload": '{"celsius": 99}'},
                     {"topic": "ggic/test/local/hall/reading", "payload": '{"celsius": 19}'})
    assert errors == [None, None, None]
    found = wait_records(routed.recorded, lambda r: str(r["subject"]).startswith("ggic/test/local/"), 2)
    assert [(r["subject"], r["event"]) for r in found] == [("ggic/test/local/kitchen/reading", {"celsius": 21.5}),
                                                           ("ggic/test/local/hall/reading", {"celsius": 19})]
    assert {r["source"] for r in found} == {PUBLISHER}
    assert {r["function"] for r in found} == {"recorder"}


def test_cloud_message_reaches_the_lambda_once(routed, mqtt_broker):
    cloud = Subscriber(mqtt_broker, "ggic/test/nothing")
    try:
        cloud.publish("ggic/test/in/twice", b'{"from": "cloud"}')
        cloud.publish("ggic/test/in/door/open", b'{"door": 1}')
    finally:
        cloud.close()
    found = wait_records(routed.recorded, lambda r: r["source"] == "cloud", 2)
    time.sleep(0.5)  # a duplicate would have come right behind
    found = [r for r in records(routed.recorded) if r["source"] == "cloud"]
    assert [(r["subject"], r["event"]) for r in found] == [("ggic/test/in/twice", {"from": "cloud"}),
                                                           ("ggic/test/in/door/open", {"door": 1})]


def test_a_publish_matching_no_subscription_is_dropped_and_counted(routed, mqtt_broker):
    before = metric(routed, "ggic_messages_unmatched_total", source="publisher")
    everything = Subscriber(mqtt_broker, "#")
    try:
        # Ordered behind the unmatched message: once the marker is in, the other one would have been too.
        errors = publish(routed, {"topic": "nobody/listens/here", "payload": "lost"},
                         {"topic": "ggic/test/out/marker", "payload": "marker"})
        assert errors == [None, None]
        received = []
        while ("ggic/test/out/marker", b"marker") not in received:
            received += everything.take(1)
    finally:
        everything.close()
    assert not [topic for topic, _ in received if topic.startswith("nobody/")]
    assert metric(routed, "ggic_messages_unmatched_total", source="publisher") == before + 1
    assert not [r for r in records(routed.recorded) if r["subject"] == "nobody/listens/here"]


def test_router_answers_bad_publishes_clearly(routed):
    me = routed.client_env["MY_FUNCTION_ARN"]  # what greengrasssdk sends as the source: the caller's own ARN
    status, message = post_to_router(routed, "not base64 JSON!")
    assert status == 400 and "not base64 JSON" in message
    status, message = post_to_router(routed, context_of({"source": me}))
    assert status == 400 and "subject" in message
    status, message = post_to_router(routed, context_of({"source": me, "subject": "a/+/c"}))
    assert status == 400 and "wildcards" in message
    status, message = post_to_router(routed, context_of({"source": me, "subject": "a",
                                                         "queueFullPolicy": "Sometimes"}))
    assert status == 400 and "queueFullPolicy" in message
    status, message = post_to_router(routed, context_of({"source": me, "subject": "a"}), b"x" * 70000)
    assert status == 413 and "65536" in message
    status, message = post_to_router(routed, context_of({"source": me, "subject": "a"}), method="GET")
    assert status == 404 and "no result" in message
    # a client may stand in for a Lambda the runtime does not host, never pass for one it hosts
    status, message = post_to_router(routed, context_of({"source": PUBLISHER, "subject": "nobody"}))
    assert status == 403 and f"must be the publisher's own function ARN, {me}" in message, message
    assert f"this one says {PUBLISHER}, a function hosted here" in message, message
    stand_in = me.replace(me.rsplit(":", 1)[1], "not-hosted-here")
    status, _ = post_to_router(routed, context_of({"source": stand_in, "subject": "nobody"}))
    assert status == 202
    status, invocation_id = post_to_router(routed, context_of({"source": me, "subject": "nobody"}))
    assert status == 202 and len(invocation_id) == 36


def test_health_and_metrics_report_the_broker(routed, mqtt_broker):
    report = routed.health()
    assert report["ready"] is True
    assert report["mqtt"]["connected"] is True and report["mqtt"]["broker"] == "%s:%d" % mqtt_broker
    assert report["mqtt"]["filters"] == ["ggic/test/in/#"]
    assert metric(routed, "ggic_mqtt_connected", broker="%s:%d" % mqtt_broker) == 1.0
    shown = ggic("status", "--state-dir", str(routed.state_dir))
    assert shown.returncode == 0
    assert "mqtt %s:%d as ggic-test-" % mqtt_broker in shown.stdout.decode()
    assert ": connected, 0 message(s) for the cloud waiting (at most 1000)" in shown.stdout.decode()


def test_queue_full_policies(tmp_path):
    """BestEffort drops for a full target (WARNING, metric); AllOrError refuses the whole publish and the SDK
    raises."""
    recorded = tmp_path / "recorded.jsonl"
    subscriptions = [{"Id": "busy", "Source": PUBLISHER, "Subject": "work", "Target": RECORDER}]
    runtime = GGICRuntime(tmp_path / "state", [], lambdas=[str(LAMBDAS / "publisher.py"), str(LAMBDAS / "recorder.py")],
                          extra_env={"RECORDER_FILE": str(recorded)}, subscriptions=subscriptions,
                          run_args=["--max-queued-requests", "2"])
    with runtime:
        assert publish(runtime, {"topic": "work", "payload": '{"sleep": 4}'}) == [None]
        wait_records(recorded, lambda r: r["event"] == {"sleep": 4})  # the recorder is busy; its queue is empty
        errors = publish(runtime, {"topic": "work", "payload": '{"n": 1}'}, {"topic": "work", "payload": '{"n": 2}'},
                         {"topic": "work", "payload": '{"n": 3}', "queueFullPolicy": "BestEffort"},
                         {"topic": "work", "payload": '{"n": 4}', "queueFullPolicy": "AllOrException"})
        assert errors[:3] == [None, None, None]
        assert "InvocationException" in errors[3] and "429" in errors[3] and "AllOrError" in errors[3]
        assert "queue of target recorder is full" in errors[3]
        wait_records(recorded, lambda r: r["event"] in ({"n": 1}, {"n": 2}), 2)
        assert metric(runtime, "ggic_messages_dropped_total", source="publisher", target="recorder",
                      reason="queue-full") == 1
        assert metric(runtime, "ggic_messages_dropped_total", source="publisher", target="recorder",
                      reason="refused") == 1
        assert "dropped a message from publisher on 'work' for recorder" in runtime.output()
    assert [r["event"] for r in records(recorded)] == [{"sleep": 4}, {"n": 1}, {"n": 2}]


def test_a_cloud_subscription_without_a_broker_refuses_to_start(tmp_path):
    subscriptions = [{"Id": "up", "Source": PUBLISHER, "Subject": "t/#", "Target": "cloud"}]
    runtime = GGICRuntime(tmp_path / "state", [], lambdas=[str(LAMBDAS / "publisher.py")],
                          subscriptions=subscriptions)
    runtime.start(expect_ready=False)
    assert runtime.wait_exit(60) == 1
    output = runtime.output()
    assert "subscription 'up'" in output and "no MQTT broker is configured" in output
    assert "--mqtt-broker HOST:PORT" in output


def test_messages_for_the_cloud_wait_for_the_broker_across_its_absence_and_restart(tmp_path):
    """Down at start, then restarted: what was published meanwhile arrives once it is back (paho's queue), the
    cloud subscriptions come back, and the runtime stays ready throughout."""
    broker = MosquittoBroker(tmp_path / "broker", free_port(), persistent=True).start()
    recorded = tmp_path / "recorded.jsonl"
    # A persistent session: the broker keeps what arrives for it while it reconnects, across the restarts.
    cloud = Subscriber(broker.address, "ggic/test/out/#", client_id=f"test-cloud-{broker.port}", persistent=True)
    runtime = GGICRuntime(tmp_path / "state", [], lambdas=[str(LAMBDAS / "publisher.py"), str(LAMBDAS / "recorder.py")],
                          extra_env={"RECORDER_FILE": str(recorded)}, subscriptions=SUBSCRIPTIONS,
                          mqtt_broker=broker.address)
    try:
        broker.stop()
        runtime.start()
        state = wait_mqtt(runtime, lambda s: s["last_error"] is not None, "reporting the unreachable broker")
        assert state["connected"] is False
        assert publish(runtime, *({"topic": f"ggic/test/out/{n}", "payload": f"early {n}"} for n in range(3))) \
            == [None] * 3
        assert wait_mqtt(runtime, lambda s: s["queued"] == 3, "holding 3 messages")["connected"] is False
        assert runtime.health()["ready"] is True  # inference does not need the broker

        broker.start()
        assert sorted(cloud.take(3)) == [(f"ggic/test/out/{n}", f"early {n}".encode()) for n in range(3)]
        wait_mqtt(runtime, lambda s: s["connected"] and s["subscribed"] and s["queued"] == 0, "back")

        broker.stop()
        wait_mqtt(runtime, lambda s: not s["connected"], "disconnected")
        assert publish(runtime, {"topic": "ggic/test/out/late", "payload": "late"}) == [None]
        broker.start()
        received = []
        while ("ggic/test/out/late", b"late") not in received:
            received += cloud.take(1)
        # QoS 1 is at least once: an early message whose acknowledgement the stop cut off may come again.
        assert set(received) <= {("ggic/test/out/late", b"late")} | {(f"ggic/test/out/{n}", f"early {n}".encode())
                                                                     for n in range(3)}
        wait_mqtt(runtime, lambda s: s["connected"] and s["subscribed"], "subscribed again")
        cloud.publish("ggic/test/in/after-restart", b'{"again": true}')
        assert wait_records(recorded, lambda r: r["subject"] == "ggic/test/in/after-restart")[0]["event"] == \
            {"again": True}
    finally:
        runtime.stop()
        cloud.close()
        broker.stop()
