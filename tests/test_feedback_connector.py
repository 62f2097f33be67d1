"""The ML Feedback connector end to end: `ggic run` hosts it as `arn:aws:lambda:<region>:aws:function:MLFeedback`,
callers hand it samples with the ML SDK's `client('feedback').publish`, it uploads them to S3 (a real moto_server) and
publishes status, prediction and metric messages through a subscription to the cloud (a real mosquitto); a version 2
image classification connector with MLFeedbackConnectorConfigId feeds it without slowing its answers."""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import pytest

from bench.harness import GGICRuntime, connector_entry
from bench.material import REPO
from delaying_proxy import DelayingProxy
from mosquitto import Subscriber
from sagemaker_jobs import aws_env, client

log = logging.getLogger(__name__)

REGION = "us-west-2"
FEEDBACK_ARN = f"arn:aws:greengrass:{REGION}::/connectors/MLFeedback/versions/1"
FEEDBACK_FUNCTION = f"arn:aws:lambda:{REGION}:aws:function:MLFeedback"
BUCKET = "ggic-feedback-samples"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
WAIT_S = 30.0

CONFIGURATIONS = {
    "All": {"s3-bucket-name": BUCKET, "content-type": "image/jpeg", "s3-prefix": "field/samples", "file-ext": "jpg"},
    "Never": {"s3-bucket-name": BUCKET, "content-type": "image/jpeg",
              "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": 0}},
    "Unsure": {"s3-bucket-name": BUCKET, "content-type": "image/png", "s3-prefix": "unsure",
               "sampling-strategy": {"strategy-name": "LEAST_CONFIDENCE", "threshold": 0.6}},
    "NoBucket": {"s3-bucket-name": "no-such-bucket-here", "content-type": "image/jpeg"},
}
# The connector publishes from its own function; subscriptions name it by its connector ARN, as in a group.
TO_CLOUD = [
    {"Id": "feedback-messages", "Source": FEEDBACK_ARN, "Subject": "feedback/message/#", "Target": "cloud"},
    {"Id": "feedback-metrics", "Source": FEEDBACK_ARN, "Subject": "cloudwatch/metric/put", "Target": "cloud"},
]


def feedback_connector(configurations: Dict[str, dict] = CONFIGURATIONS, request_limit: str = "") -> dict:
    parameters = {"FeedbackConfigurationMap": json.dumps(configurations)}
    if request_limit:
        parameters["RequestLimit"] = request_limit
    return {"Id": "MyFeedbackConnector", "ConnectorArn": FEEDBACK_ARN, "Parameters": parameters}


def s3(endpoint: str):
    return client("s3", endpoint)


def ensure_bucket(endpoint: str) -> None:
    client = s3(endpoint)
    if BUCKET not in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})


class Messages:
    """Everything the connector published to the broker, by topic, parsed."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.seen: List[tuple] = []

    def wait(self, predicate, what: str, count: int = 1, timeout: float = WAIT_S) -> List[tuple]:
        deadline = time.monotonic() + timeout
        while True:
            found = [(topic, body) for topic, body in self.seen if predicate(topic, body)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {len(found)} of {count} within {timeout} s; seen: {self.seen}")
            try:
                [(topic, payload)] = self.subscriber.take(1, timeout=0.2)
            except Exception:  # queue.Empty: nothing new yet
                continue
            self.seen.append((topic, json.loads(payload)))

    def status(self, request_id: str) -> dict:
        [(_, body)] = self.wait(lambda topic, body: topic == "feedback/message/status" and body["id"] == request_id,
                                f"status of {request_id}")
        return body["response"]

    def metrics(self, name: str, count: int = 1) -> List[dict]:
        found = self.wait(lambda topic, body: topic == "cloudwatch/metric/put"
                          and body["request"]["metricData"]["metricName"] == name, f"metric {name}", count)
        return [body["request"] for _, body in found]


@pytest.fixture(scope="module")
def feedback_runtime(tmp_path_factory, moto_endpoint, mqtt_broker):
    ensure_bucket(moto_endpoint)
    runtime = GGICRuntime(tmp_path_factory.mktemp("feedback"), [feedback_connector()],
                          extra_env=aws_env(moto_endpoint), subscriptions=TO_CLOUD, mqtt_broker=mqtt_broker)
    subscriber = Subscriber(mqtt_broker, "#")
    with runtime:
        yield runtime, Messages(subscriber)
    subscriber.close()


@pytest.fixture
def feedback(feedback_runtime, sdk_env):
    runtime, _ = feedback_runtime
    sdk_env(runtime)
    import greengrass_machine_learning_sdk as ml

    return ml.client("feedback")


def publish_and_get_request_id(runtime, messages: Messages, client, **kwargs) -> str:
    """Publish one sample; return the connector's request id (the invocation id) from its status message."""
    before = {body["id"] for topic, body in messages.seen if topic == "feedback/message/status"}
    client.publish(**kwargs)
    [(_, body)] = messages.wait(lambda topic, body: topic == "feedback/message/status" and body["id"] not in before,
                                "a new status message")[-1:]
    return body["id"]


def test_a_sample_is_uploaded_with_key_shape_content_type_and_metadata_and_announced(feedback_runtime, feedback,
                                                                                   moto_endpoint):
    runtime, messages = feedback_runtime
    sample = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    request_id = publish_and_get_request_id(
        runtime, messages, feedback, ConfigId="All", ModelInput=sample, ModelPrediction=[0.1, 0.9],
        Metadata={"camera": "front-door", "firmware": "1.2"})

    status = messages.status(request_id)
    assert status["status"] == "success"
    key = status["s3_response"]["key"]
    assert re.fullmatch(rf"field/samples/{UUID}\.jpg", key), key
    assert status["s3_response"]["bucket"] == BUCKET and status["s3_response"]["ETag"]

    stored = s3(moto_endpoint).get_object(Bucket=BUCKET, Key=key)
    assert stored["Body"].read() == sample
    assert stored["ContentType"] == "image/jpeg"
    assert stored["Metadata"] == {"camera": "front-door", "firmware": "1.2"}

    [(_, prediction)] = messages.wait(lambda topic, body: topic == "feedback/message/prediction"
                                      and body["source-ref"] == f"s3://{BUCKET}/{key}", "the prediction message")
    assert prediction["model-prediction"] == [0.1, 0.9] and prediction["config-id"] == "All"
    assert {k: v for k, v in prediction["metadata"].items() if k != "publish-ts"} == \
        {"camera": "front-door", "firmware": "1.2"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", prediction["metadata"]["publish-ts"])

    sizes = [m["metricData"] for m in messages.metrics("SampleSize")]
    assert {"value": len(sample), "unit": "Bytes", "metricName": "SampleSize"} in sizes
    for name in ("SampleUploadSuccess", "SampleAndPredictionPublished"):
        [request] = messages.metrics(name)[:1]
        assert request == {"namespace": "GreengrassFeedbackConnector",
                           "metricData": {"value": 1, "unit": "Count", "metricName": name}}


def test_a_sample_the_strategy_drops_is_not_uploaded(feedback_runtime, feedback, moto_endpoint):
    runtime, messages = feedback_runtime
    request_id = publish_and_get_request_id(runtime, messages, feedback, ConfigId="Never", ModelInput=b"never",
                                            ModelPrediction=[0.5, 0.5])
    assert messages.status(request_id) == {"status": "sample_dropped_by_strategy"}
    messages.metrics("SampleNotUsed")
    keys = [o["Key"] for o in s3(moto_endpoint).list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert not any(k.count("/") == 0 for k in keys)  # "Never" has no prefix: none of its objects exist


def test_least_confidence_uploads_only_unsure_predictions(feedback_runtime, feedback, moto_endpoint):
    runtime, messages = feedback_runtime
    sure = publish_and_get_request_id(runtime, messages, feedback, ConfigId="Unsure", ModelInput=b"\x89PNG sure",
                                      ModelPrediction={"cat": 0.9, "dog": 0.1})
    unsure = publish_and_get_request_id(runtime, messages, feedback, ConfigId="Unsure",
                                        ModelInput=b"\x89PNG unsure", ModelPrediction={"cat": 0.55, "dog": 0.45})
    assert messages.status(sure) == {"status": "sample_dropped_by_strategy"}
    assert messages.status(unsure)["status"] == "success"
    key = messages.status(unsure)["s3_response"]["key"]
    assert re.fullmatch(rf"unsure/{UUID}", key)  # no file-ext: no trailing dot
    assert s3(moto_endpoint).get_object(Bucket=BUCKET, Key=key)["ContentType"] == "image/png"


def test_refusals_reach_the_caller_and_the_status_topic(feedback_runtime, feedback):
    from greengrass_machine_learning_sdk import GreengrassFeedbackException

    runtime, messages = feedback_runtime
    with pytest.raises(GreengrassFeedbackException) as info:
        feedback.publish(ConfigId="Unknown", ModelInput=b"x", ModelPrediction=[1.0])
    assert "Unknown" in str(info.value)
    failed = messages.wait(lambda topic, body: topic == "feedback/message/status"
                           and body["response"].get("error") == "InvalidFeedbackInputError"
                           and "Unknown" in body["response"]["error_message"], "the refusal's status")
    assert failed
    messages.metrics("ErrorInvalidInput")
    with pytest.raises(GreengrassFeedbackException, match="ModelPrediction"):
        feedback.publish(ConfigId="All", ModelInput=b"x", ModelPrediction=[])
    messages.metrics("ErrorInvalidInput", count=2)
    messages.wait(lambda topic, body: topic == "feedback/message/status"
                  and "ModelPrediction" in body["response"].get("error_message", ""), "the second refusal's status")


def test_an_upload_failure_is_reported_and_no_prediction_is_published(feedback_runtime, feedback):
    runtime, messages = feedback_runtime
    request_id = publish_and_get_request_id(runtime, messages, feedback, ConfigId="NoBucket", ModelInput=b"lost",
                                            ModelPrediction=[0.2, 0.8])
    status = messages.status(request_id)
    assert status["status"] == "fail" and status["error"] == "NoSuchBucket"
    assert f"[RequestId: {request_id}] Failed to upload model input data" in status["error_message"]
    messages.metrics("SampleUploadFailure")
    assert not [body for topic, body in messages.seen if topic == "feedback/message/prediction"
                and "no-such-bucket-here" in body["source-ref"]]


def test_request_limit_throttles_with_a_clear_error(tmp_path, moto_endpoint, mqtt_broker, sdk_env):
    from greengrass_machine_learning_sdk import GreengrassFeedbackException

    ensure_bucket(moto_endpoint)
    host, port = moto_endpoint.removeprefix("http://").split(":")
    with DelayingProxy((host, int(port)), delay_s=2.0) as slow_s3:
        runtime = GGICRuntime(tmp_path, [feedback_connector(request_limit="1")],
                              extra_env=dict(aws_env(moto_endpoint), AWS_ENDPOINT_URL_S3=slow_s3.endpoint),
                              subscriptions=TO_CLOUD, mqtt_broker=mqtt_broker)
        subscriber = Subscriber(mqtt_broker, "feedback/message/status")
        with runtime:
            sdk_env(runtime)
            import greengrass_machine_learning_sdk as ml

            client = ml.client("feedback")
            outcomes = []
            for number in range(4):  # the first upload holds the worker 2 s; one more may wait, the rest cannot
                try:
                    client.publish(ConfigId="All", ModelInput=b"sample %d" % number, ModelPrediction=[1.0])
                    outcomes.append("accepted")
                except GreengrassFeedbackException as exc:
                    outcomes.append(str(exc))
            throttled = [o for o in outcomes if o != "accepted"]
            assert len(throttled) >= 2, outcomes
            assert all("Request limit has been reached (max request:1)" in o for o in throttled), throttled
            failed = Messages(subscriber).wait(lambda topic, body: body["response"]["status"] == "fail",
                                               "the throttled requests' statuses", count=len(throttled))
            assert {body["response"]["error"] for _, body in failed} == {"Full"}
        subscriber.close()


def test_classifier_v2_feeds_the_feedback_connector_without_waiting_for_uploads(tmp_path, digits_model,
                                                                              moto_endpoint, mqtt_broker, sdk_env):
    """Every answered request produces an upload and a prediction message, and the answers never wait for them:
    each S3 request is held 1.5 s, yet every answer comes back sooner. The same model without feedback, in the same
    runtime, answers the same images alternately: both latencies are in the test log."""
    from sklearn.datasets import load_digits

    from examples.models.digits import digit_png

    upload_delay_s = 1.5
    images = [digit_png(pixels) for pixels in load_digits().images[:6]]
    configurations = {"DigitsFeedback": {"s3-bucket-name": BUCKET, "content-type": "image/png",
                                         "s3-prefix": "digits", "file-ext": "png"}}
    host, port = moto_endpoint.removeprefix("http://").split(":")
    ensure_bucket(moto_endpoint)
    with DelayingProxy((host, int(port)), delay_s=upload_delay_s) as slow_s3:
        connectors = [feedback_connector(configurations),
                      connector_entry(digits_model, service_name="withFeedback", connector_id="WithFeedback",
                                      MLFeedbackConnectorConfigId="DigitsFeedback"),
                      connector_entry(digits_model, service_name="withoutFeedback", connector_id="WithoutFeedback",
                                      platform="ARMv7")]  # a group holds one version of a connector
        runtime = GGICRuntime(tmp_path, connectors,
                              extra_env=dict(aws_env(moto_endpoint), AWS_ENDPOINT_URL_S3=slow_s3.endpoint),
                              subscriptions=TO_CLOUD, mqtt_broker=mqtt_broker, run_args=["--allow-platform-mismatch"])
        subscriber = Subscriber(mqtt_broker, "feedback/message/prediction")
        with runtime:
            sdk_env(runtime)
            import greengrass_machine_learning_sdk as ml

            inference = ml.client("inference")
            answers: Dict[str, list] = {"withFeedback": [], "withoutFeedback": []}
            latencies: Dict[str, list] = {"withFeedback": [], "withoutFeedback": []}
            started = time.monotonic()
            for image in images:
                for service in answers:
                    began = time.perf_counter()
                    response = inference.invoke_inference_service(AlgoType="image-classification",
                                                                  ServiceName=service, ContentType="image/png",
                                                                  Body=image)
                    latencies[service].append(time.perf_counter() - began)
                    answers[service].append(json.loads(response["Body"].read()))
            answered_after = time.monotonic() - started
            predictions = [json.loads(body) for _, body in subscriber.take(len(images), timeout=60)]
            uploaded_after = time.monotonic() - started
        subscriber.close()

    with_feedback, without = latencies["withFeedback"], latencies["withoutFeedback"]
    log.info("classifier v2 with feedback: %d answers, p50 %.1f ms, max %.1f ms; the same model without feedback, "
             "alternately: p50 %.1f ms, max %.1f ms; all answered %.2f s after the first request; the %d uploads "
             "(each S3 request held %.1f s) were announced %.2f s after it", len(images),
             statistics.median(with_feedback) * 1000, max(with_feedback) * 1000, statistics.median(without) * 1000,
             max(without) * 1000, answered_after, len(images), upload_delay_s, uploaded_after)
    assert max(with_feedback) < upload_delay_s, with_feedback  # no answer waited for an upload
    assert uploaded_after > answered_after
    assert answers["withFeedback"] == answers["withoutFeedback"]
    by_answer = sorted(json.dumps(p["model-prediction"]) for p in predictions)
    assert by_answer == sorted(json.dumps(a) for a in answers["withFeedback"])  # each prediction, as answered
    for message in predictions:
        assert message["config-id"] == "DigitsFeedback"
        assert re.fullmatch(rf"s3://{BUCKET}/digits/{UUID}\.png", message["source-ref"])
        assert message["metadata"]["service-name"] == "withFeedback"
    keys = [o["Key"] for o in s3(moto_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="digits/")["Contents"]]
    assert len(keys) == len(images)
    stored = s3(moto_endpoint).get_object(Bucket=BUCKET, Key=keys[0])
    assert stored["Body"].read() in images and stored["ContentType"] == "image/png"
    assert set(stored["Metadata"]) == {"service-name", "request-id", "content-type"}


@pytest.mark.parametrize("parameters, problem", [
    ({}, "the required parameter FeedbackConfigurationMap is not set"),
    ({"FeedbackConfigurationMap": json.dumps(CONFIGURATIONS), "RequestLimit": "1000"},
     "RequestLimit value '1000' does not match pattern"),
])
def test_the_connector_fails_its_initialization_with_each_problem(parameters, problem):
    """Parameters that reach the function unchecked (a definition made elsewhere): the handler module refuses to
    load with the problem, as the runtime reports an initialization failure."""
    env = dict(os.environ, **parameters, MY_FUNCTION_ARN=FEEDBACK_FUNCTION, AWS_REGION=REGION, GG_DAEMON_PORT="9")
    result = subprocess.run([sys.executable, "-c", "import connector.feedback.handler"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Invalid ML Feedback connector configuration: 1 problem\n  - " + problem in result.stderr, result.stderr
