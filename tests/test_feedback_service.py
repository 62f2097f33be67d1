"""Tests of the ML Feedback request service (connector.feedback.service) against a real moto_server S3.

`publish` is the collaborator boundary here: it records (topic, message); the router/MQTT path is tested elsewhere.
"""

import datetime
import json
import random
import re
import threading
import uuid

import pytest

from connector.feedback import messages as M
from connector.feedback import service as SV
from connector.feedback.configuration import FeedbackConfig, parse_configuration_map
from connector.feedback.sampling import LeastConfidence, RandomSampling
from sagemaker_jobs import client

UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
WAIT = 60  # seconds; generous for busy machines, only ever reached when something is broken
UPLOAD_FAILED = ("Failed to upload model input data due to exception. Model prediction will not be published. "
                 "Exception type: ")


class Recorder:
    """A `publish` callable that keeps every (topic, message), as the router would receive them."""

    def __init__(self, fail_on=None):
        self.sent = []
        self.fail_on = fail_on  # (topic) -> bool: raise instead of recording
        self.lock = threading.Lock()

    def __call__(self, topic, message):
        assert M.is_json_ready(message), message
        if self.fail_on and self.fail_on(topic, message):
            raise ConnectionError("router unavailable")
        with self.lock:
            self.sent.append((topic, json.loads(json.dumps(message))))

    def on(self, topic):
        return [m for t, m in self.sent if t == topic]

    def statuses(self, request_id=None):
        return [m for m in self.on(M.STATUS_TOPIC) if request_id is None or m["id"] == request_id]

    def metric_names(self):
        return [m["request"]["metricData"]["metricName"] for m in self.on(M.METRIC_TOPIC)]


class GatedS3:
    """Wraps the real client; put_object waits for `gate`, so the worker is busy for as long as a test wants."""

    def __init__(self, client):
        self.client = client
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def put_object(self, **kwargs):
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(WAIT), "test never opened the gate"
        return self.client.put_object(**kwargs)


class NoS3:
    def put_object(self, **kwargs):
        raise AssertionError("a refused request must never reach S3")


@pytest.fixture
def s3(moto_endpoint):
    return client("s3", moto_endpoint)


@pytest.fixture
def bucket(s3):
    name = f"feedback-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    return name


@pytest.fixture
def services():
    made = []

    def make(*args, **kwargs):
        service = SV.FeedbackService(*args, **kwargs)
        made.append(service)
        return service
    yield make
    for service in made:
        service.stop(timeout=10)


def keys(s3, bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def config(bucket, **kwargs):
    return FeedbackConfig(config_id=kwargs.pop("config_id", "cfg-1"), bucket=bucket,
                          content_type=kwargs.pop("content_type", "image/png"), **kwargs)


def custom(prediction=(0.5, 0.3, 0.2), config_id="cfg-1", **extra):
    out = {"ConfigId": config_id, "ModelPrediction": list(prediction)}
    out.update(extra)
    return out


# --- the whole path ---------------------------------------------------------------------------------------------

def test_a_sample_is_uploaded_and_its_prediction_published(s3, bucket, services):
    mapping = json.dumps({"cfg-1": {"s3-bucket-name": bucket, "content-type": "image/png", "s3-prefix": "DeviceA",
                                    "file-ext": "png"}})
    recorder = Recorder()
    service = services(parse_configuration_map(mapping), 0, recorder, s3)
    service.start()
    body = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    service.submit("req-1", body, custom([0.25, 0.6, 0.15], Metadata={"Camera": "front", "some-key": "some value"}))
    assert service.wait_idle(WAIT)

    [key] = keys(s3, bucket)
    assert re.fullmatch(rf"DeviceA/{UUID4}\.png", key), key
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"camera": "front", "some-key": "some value"}  # S3 lowercases keys; no publish-ts
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body

    assert [t for t, _ in recorder.sent] == [M.METRIC_TOPIC, M.STATUS_TOPIC, M.METRIC_TOPIC, M.PREDICTION_TOPIC,
                                             M.METRIC_TOPIC]
    assert recorder.on(M.METRIC_TOPIC)[0] == {"request": {"namespace": "GreengrassFeedbackConnector", "metricData": {
        "value": len(body), "unit": "Bytes", "metricName": "SampleSize"}}}
    assert recorder.metric_names() == ["SampleSize", "SampleUploadSuccess", "SampleAndPredictionPublished"]
    assert all(m["request"]["metricData"]["unit"] == "Count" for m in recorder.on(M.METRIC_TOPIC)[1:])

    [status] = recorder.statuses()
    assert status["id"] == "req-1" and status["response"]["status"] == "success"
    s3_response = status["response"]["s3_response"]
    assert s3_response["bucket"] == bucket and s3_response["key"] == key
    assert s3_response["ETag"] == head["ETag"] and "ResponseMetadata" not in s3_response

    [prediction] = recorder.on(M.PREDICTION_TOPIC)
    stamp = prediction["metadata"].pop("publish-ts")
    assert prediction == {"source-ref": f"s3://{bucket}/{key}", "model-prediction": [0.25, 0.6, 0.15],
                          "config-id": "cfg-1", "metadata": {"Camera": "front", "some-key": "some value"}}
    assert abs(datetime.datetime.fromisoformat(stamp) - datetime.datetime.now()) < datetime.timedelta(minutes=5)

    counters = service.counters
    assert (counters.accepted, counters.uploaded, counters.dropped_by_strategy, counters.upload_failed) == (1, 1, 0, 0)


def test_a_dict_prediction_and_no_prefix_or_extension(s3, bucket, services):
    recorder = Recorder()
    service = services({"cfg-1": config(bucket, content_type="application/json")}, 0, recorder, s3)
    service.start()
    service.submit("req-1", b"{}", {"ConfigId": "cfg-1", "ModelPrediction": {"cat": 0.7, "dog": 0.3}})
    assert service.wait_idle(WAIT)
    [key] = keys(s3, bucket)
    assert re.fullmatch(UUID4, key), key
    assert s3.head_object(Bucket=bucket, Key=key)["ContentType"] == "application/json"
    [prediction] = recorder.on(M.PREDICTION_TOPIC)
    assert prediction["model-prediction"] == {"cat": 0.7, "dog": 0.3}
    assert list(prediction["metadata"]) == ["publish-ts"]


def test_each_sample_gets_its_own_key(s3, bucket, services):
    service = services({"cfg-1": config(bucket, prefix="p/", file_ext="bin")}, 0, Recorder(), s3)
    service.start()
    for i in range(5):
        service.submit(f"req-{i}", bytes([i]), custom())
    assert service.wait_idle(WAIT)
    found = keys(s3, bucket)
    assert len(found) == 5 and all(re.fullmatch(rf"p/{UUID4}\.bin", k) for k in found)
    assert sorted(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in found) == [bytes([i]) for i in range(5)]


# --- sampling -----------------------------------------------------------------------------------------------------

def test_a_sample_the_strategy_drops_is_not_uploaded(s3, bucket, services):
    recorder = Recorder()
    service = services({"cfg-1": config(bucket, strategy=LeastConfidence(0.5))}, 0, recorder, s3)
    service.start()
    service.submit("sure", b"sure", custom([0.9, 0.1]))
    assert service.wait_idle(WAIT)
    assert keys(s3, bucket) == []
    assert recorder.statuses() == [{"response": {"status": "sample_dropped_by_strategy"}, "id": "sure"}]
    assert recorder.metric_names() == ["SampleSize", "SampleNotUsed"]
    assert recorder.on(M.PREDICTION_TOPIC) == []

    service.submit("unsure", b"unsure", custom([0.4, 0.35, 0.25]))
    assert service.wait_idle(WAIT)
    [key] = keys(s3, bucket)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"unsure"
    assert [s["response"]["status"] for s in recorder.statuses()] == ["sample_dropped_by_strategy", "success"]
    assert service.counters.dropped_by_strategy == 1 and service.counters.uploaded == 1


def test_random_sampling_follows_the_injected_rng(s3, bucket, services):
    recorder = Recorder()
    service = services({"cfg-1": config(bucket, strategy=RandomSampling(0.5))}, 0, recorder, s3,
                       rng=random.Random(42))
    draws = random.Random(42)
    expected = {f"req-{i}": draws.random() < 0.5 for i in range(12)}
    assert True in expected.values() and False in expected.values()
    service.start()
    for request_id in expected:
        service.submit(request_id, request_id.encode(), custom())
    assert service.wait_idle(WAIT)
    got = {s["id"]: s["response"]["status"] == "success" for s in recorder.statuses()}
    assert got == expected
    assert len(keys(s3, bucket)) == sum(expected.values())


# --- upload failure ----------------------------------------------------------------------------------------------

def test_an_upload_failure_publishes_a_fail_status_and_no_prediction(s3, services):
    recorder = Recorder()
    service = services({"cfg-1": config(f"missing-{uuid.uuid4().hex[:12]}")}, 0, recorder, s3)
    service.start()
    service.submit("req-9", b"data", custom())
    assert service.wait_idle(WAIT)
    [status] = recorder.statuses()
    assert status["id"] == "req-9" and status["response"]["status"] == "fail"
    assert status["response"]["error"] == "NoSuchBucket"
    assert status["response"]["error_message"].startswith(f"[RequestId: req-9] {UPLOAD_FAILED}NoSuchBucket, error: ")
    assert "The specified bucket does not exist" in status["response"]["error_message"]
    assert recorder.metric_names() == ["SampleSize", "SampleUploadFailure"]
    assert recorder.on(M.PREDICTION_TOPIC) == []
    assert service.counters.upload_failed == 1 and service.counters.uploaded == 0


# --- throttling --------------------------------------------------------------------------------------------------

def assert_throttled(recorder, request_id, limit):
    assert recorder.statuses(request_id) == [{"response": {
        "status": "fail", "error_message": f"Request limit has been reached (max request:{limit}). Dropping request.",
        "error": "Full"}, "id": request_id}]


def test_request_limit_refuses_requests_beyond_the_queue(s3, bucket, services):
    recorder = Recorder()
    service = services({"cfg-1": config(bucket)}, 2, recorder, s3)
    service.submit("r1", b"1", custom())
    service.submit("r2", b"2", custom())
    for request_id in ("r3", "r4"):
        with pytest.raises(SV.RequestThrottledError, match=r"max request:2"):
            service.submit(request_id, b"x", custom())
        assert_throttled(recorder, request_id, 2)
    assert recorder.metric_names() == ["ErrorRequestThrottled", "ErrorRequestThrottled"]
    assert service.counters.throttled == 2 and service.counters.accepted == 2

    service.start()
    assert service.wait_idle(WAIT)
    assert len(keys(s3, bucket)) == 2
    assert [s["id"] for s in recorder.statuses() if s["response"]["status"] == "success"] == ["r1", "r2"]


def test_request_limit_with_a_busy_worker(s3, bucket, services):
    recorder = Recorder()
    gated = GatedS3(s3)
    service = services({"cfg-1": config(bucket)}, 2, recorder, gated)
    service.start()
    try:
        service.submit("r1", b"1", custom())
        assert gated.entered.wait(WAIT)  # the worker holds r1 inside put_object: it no longer counts
        service.submit("r2", b"2", custom())
        service.submit("r3", b"3", custom())
        for request_id in ("r4", "r5"):
            with pytest.raises(SV.RequestThrottledError):
                service.submit(request_id, b"x", custom())
            assert_throttled(recorder, request_id, 2)
        assert recorder.metric_names().count("ErrorRequestThrottled") == 2
    finally:
        gated.gate.set()
    assert service.wait_idle(WAIT)
    assert len(keys(s3, bucket)) == 3 and gated.calls == 3
    assert service.counters.throttled == 2 and service.counters.uploaded == 3


def test_no_request_limit_means_unbounded(s3, bucket, services):
    service = services({"cfg-1": config(bucket)}, 0, Recorder(), NoS3())
    for i in range(1500):  # more than RequestLimit's largest value
        service.submit(f"r{i}", b"x", custom())
    assert service.counters.accepted == 1500


# --- refused requests --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_input, context, words", [
    (b"x", {"ModelPrediction": [0.5]}, "ConfigId is required"),
    (b"x", custom(config_id="nope"), "ConfigId 'nope' is not in FeedbackConfigurationMap (configured: cfg-1, lc)"),
    (b"x", custom(config_id=5), "ConfigId must be a string, not int"),
    (b"x", {"ConfigId": "cfg-1"}, "ModelPrediction is required"),
    (b"x", {"ConfigId": "cfg-1", "ModelPrediction": "0.5"}, "ModelPrediction must be a list or an object, not str"),
    (b"x", {"ConfigId": "cfg-1", "ModelPrediction": []}, "ModelPrediction must not be empty"),
    (b"x", {"ConfigId": "cfg-1", "ModelPrediction": {}}, "ModelPrediction must not be empty"),
    (b"x", custom(config_id="lc", prediction=[0.5, "high"]),
     "ModelPrediction index 1 is 'high' (str), not a number (config 'lc' samples with LEAST_CONFIDENCE)"),
    (b"x", custom(Metadata=["a"]), "Metadata must be an object, not list"),
    (b"x", custom(Metadata={"count": 3}), "Metadata value of 'count' must be a string, not int (3)"),
    (b"x", custom(Metadata={"place": "Zürich"}), "Metadata value of 'place' must be printable ASCII text"),
    (b"x", custom(Metadata={"line": "a\r\nb"}), "Metadata value of 'line' must be printable ASCII text"),
    (b"x", custom(Metadata={"two words": "v"}), "Metadata key 'two words' is not allowed"),
    (b"x", custom(Metadata={"Key": "a", "key": "b"}), "Metadata keys 'Key' and 'key' are the same S3 metadata key"),
    (b"x", custom(Metadata={"big": "v" * 3000}), "Metadata is 3003 bytes as S3 metadata; S3 allows 2048"),
    ("text", custom(), "ModelInput must be bytes, not str"),
    (b"x", ["ConfigId"], "custom field must be an object"),
])
def test_invalid_requests_are_refused_with_a_fail_status(model_input, context, words):
    recorder = Recorder()
    configs = {"cfg-1": config("bucket-a"), "lc": config("bucket-b", config_id="lc", strategy=LeastConfidence(0.5))}
    service = SV.FeedbackService(configs, 0, recorder, NoS3())
    with pytest.raises(SV.InvalidFeedbackInputError) as info:
        service.submit("req-1", model_input, context)
    message = str(info.value)
    assert words in message and message.startswith("[RequestId: req-1] ")
    assert recorder.statuses() == [{"response": {"status": "fail", "error_message": message,
                                                 "error": "InvalidFeedbackInputError"}, "id": "req-1"}]
    assert recorder.metric_names() == ["ErrorInvalidInput"]
    assert service.counters.rejected == 1 and service.counters.accepted == 0


def test_every_input_problem_is_named_at_once():
    service = SV.FeedbackService({"cfg-1": config("bucket-a")}, 0, Recorder(), NoS3())
    with pytest.raises(SV.InvalidFeedbackInputError) as info:
        service.submit("req-1", b"x", {"Metadata": {"n": 1}})
    assert str(info.value) == ("[RequestId: req-1] Invalid feedback request: ConfigId is required; ModelPrediction is "
                               "required; Metadata value of 'n' must be a string, not int (1); S3 metadata holds "
                               "text only")


@pytest.mark.parametrize("request_id", [None, ""])
def test_a_missing_request_id_is_refused(request_id):
    recorder = Recorder()
    service = SV.FeedbackService({"cfg-1": config("bucket-a")}, 0, recorder, NoS3())
    with pytest.raises(SV.MissingRequestIdError):
        service.submit(request_id, b"x", custom())
    [status] = recorder.statuses()
    assert status["response"]["status"] == "fail" and status["response"]["error"] == "MissingRequestIdError"
    assert status["id"] == request_id
    assert recorder.metric_names() == ["ErrorMissingRequestId"]
    assert issubclass(SV.MissingRequestIdError, SV.FeedbackError)
    assert issubclass(SV.RequestThrottledError, SV.FeedbackError)
    assert issubclass(SV.InvalidFeedbackInputError, SV.FeedbackError)


def test_a_refused_request_still_raises_when_publishing_fails():
    service = SV.FeedbackService({"cfg-1": config("bucket-a")}, 0, Recorder(fail_on=lambda t, m: True), NoS3())
    with pytest.raises(SV.InvalidFeedbackInputError):
        service.submit("req-1", b"x", {"ConfigId": "cfg-1"})


# --- resilience and shutdown -----------------------------------------------------------------------------------

def test_a_failing_publish_does_not_stop_the_worker(s3, bucket, services, caplog):
    recorder = Recorder(fail_on=lambda topic, message: topic == M.PREDICTION_TOPIC)
    service = services({"cfg-1": config(bucket)}, 0, recorder, s3)
    service.start()
    with caplog.at_level("WARNING", logger="ggic.feedback"):
        service.submit("r1", b"1", custom())
        service.submit("r2", b"2", custom())
        assert service.wait_idle(WAIT)
    assert len(keys(s3, bucket)) == 2
    assert [s["id"] for s in recorder.statuses()] == ["r1", "r2"]
    # Without the prediction, SampleAndPredictionPublished is not claimed.
    assert "SampleAndPredictionPublished" not in recorder.metric_names()
    assert recorder.metric_names().count("SampleUploadSuccess") == 2
    assert "Could not publish to feedback/message/prediction" in caplog.text
    assert "[RequestId: r2] The sample was uploaded but its prediction was not published" in caplog.text


def test_stop_finishes_the_queue_then_refuses_new_requests(s3, bucket):
    recorder = Recorder()
    service = SV.FeedbackService({"cfg-1": config(bucket)}, 5, recorder, s3)
    for i in range(3):
        service.submit(f"r{i}", b"x", custom())
    service.start()
    assert service.stop(timeout=WAIT) is True
    assert len(keys(s3, bucket)) == 3 and service.counters.uploaded == 3
    with pytest.raises(SV.ServiceStoppedError):
        service.submit("late", b"x", custom())
    assert recorder.statuses("late")[0]["response"]["error"] == "ServiceStoppedError"
    assert service.counters.refused_stopped == 1
    with pytest.raises(SV.ServiceStoppedError):
        service.start()


def test_stop_gives_up_on_a_stuck_worker_and_abandons_the_queue(s3, bucket, caplog):
    recorder = Recorder()
    gated = GatedS3(s3)
    service = SV.FeedbackService({"cfg-1": config(bucket)}, 5, recorder, gated)
    service.start()
    try:
        service.submit("r1", b"1", custom())
        assert gated.entered.wait(WAIT)
        service.submit("r2", b"2", custom())
        service.submit("r3", b"3", custom())
        with caplog.at_level("WARNING", logger="ggic.feedback"):
            assert service.stop(timeout=0.2) is False
    finally:
        gated.gate.set()
    assert service.wait_idle(WAIT)
    assert len(keys(s3, bucket)) == 1  # r1 was already in put_object and completes
    assert service.counters.uploaded == 1 and service.counters.abandoned == 2
    for request_id in ("r2", "r3"):
        [status] = recorder.statuses(request_id)
        assert status["response"]["status"] == "fail" and status["response"]["error"] == "ServiceStoppedError"
    assert "queued requests are abandoned" in caplog.text


def test_stop_before_start_abandons_what_was_queued():
    recorder = Recorder()
    service = SV.FeedbackService({"cfg-1": config("bucket-a")}, 0, recorder, NoS3())
    service.submit("r1", b"x", custom())
    assert service.stop(timeout=1) is True
    assert service.counters.abandoned == 1 and service.wait_idle(0)
    assert recorder.statuses("r1")[0]["response"]["error"] == "ServiceStoppedError"


def test_an_invalid_request_limit_is_a_programming_error():
    with pytest.raises(ValueError):
        SV.FeedbackService({}, -1, Recorder(), NoS3())


# --- message builders --------------------------------------------------------------------------------------------

def test_message_shapes():
    response = {"ResponseMetadata": {"HTTPStatusCode": 200}, "ETag": '"abc"', "VersionId": "v1",
                "BucketKeyEnabled": False, "Expires": datetime.datetime(2030, 1, 2, 3, 4, 5), "Body": object()}
    assert M.status_success("id-1", response, "b", "k") == {"response": {"status": "success", "s3_response": {
        "ETag": '"abc"', "VersionId": "v1", "BucketKeyEnabled": False, "Expires": "2030-01-02T03:04:05",
        "bucket": "b", "key": "k"}}, "id": "id-1"}
    assert M.status_fail("id-1", KeyError("x"), "boom") == {
        "response": {"status": "fail", "error_message": "boom", "error": "KeyError"}, "id": "id-1"}
    assert M.status_dropped("id-1") == {"response": {"status": "sample_dropped_by_strategy"}, "id": "id-1"}
    now = datetime.datetime(2019, 7, 11, 0, 12, 48, 816752)
    assert M.prediction_message("b", "p/k.png", [0.5, 0.5], "cfg", {"a": "1", "publish-ts": "old"}, now=now) == {
        "source-ref": "s3://b/p/k.png", "model-prediction": [0.5, 0.5], "config-id": "cfg",
        "metadata": {"a": "1", "publish-ts": "2019-07-11 00:12:48.816752"}}
    assert M.metric_message("SampleSize", 47592) == {"request": {"namespace": "GreengrassFeedbackConnector",
                                                                  "metricData": {"value": 47592, "unit": "Bytes",
                                                                                 "metricName": "SampleSize"}}}
    assert M.metric_message("ErrorInvalidConnectorConfig")["request"]["metricData"]["unit"] == "Count"
    with pytest.raises(M.UnknownMetricError):
        M.metric_message("SampleCount")
    assert (M.STATUS_TOPIC, M.PREDICTION_TOPIC, M.METRIC_TOPIC) == (
        "feedback/message/status", "feedback/message/prediction", "cloudwatch/metric/put")
