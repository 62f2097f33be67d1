"""The messages the ML Feedback connector publishes, in the shapes its documentation shows.

Builders return plain dicts; turning them into MQTT payloads is the publisher's job.  Topics follow the
original code: the prediction topic has no leading slash, although parts of the documentation (and the ML SDK's
docstring) write ``/feedback/message/prediction``.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Mapping, Optional, Union

logger = logging.getLogger("ggic.feedback.messages")

STATUS_TOPIC = "feedback/message/status"
PREDICTION_TOPIC = "feedback/message/prediction"
METRIC_TOPIC = "cloudwatch/metric/put"

METRIC_NAMESPACE = "GreengrassFeedbackConnector"

STATUS_SUCCESS = "success"
STATUS_DROPPED = "sample_dropped_by_strategy"
STATUS_FAIL = "fail"

#: Byte length of the model input (``len(body)``), published before the upload.  FBC2 used sys.getsizeof,
#: which adds the Python object's own overhead; the documented unit is Bytes of the sample, so we send its size.
SAMPLE_SIZE = "SampleSize"
SAMPLE_UPLOAD_SUCCESS = "SampleUploadSuccess"
SAMPLE_UPLOAD_FAILURE = "SampleUploadFailure"
SAMPLE_AND_PREDICTION_PUBLISHED = "SampleAndPredictionPublished"
SAMPLE_NOT_USED = "SampleNotUsed"
ERROR_REQUEST_THROTTLED = "ErrorRequestThrottled"
ERROR_INVALID_CONNECTOR_CONFIG = "ErrorInvalidConnectorConfig"
ERROR_INVALID_INPUT = "ErrorInvalidInput"
ERROR_MISSING_REQUEST_ID = "ErrorMissingRequestId"

UNIT_COUNT = "Count"
UNIT_BYTES = "Bytes"

#: The unit each metric is published with.
METRIC_UNITS = {
    SAMPLE_SIZE: UNIT_BYTES,
    SAMPLE_UPLOAD_SUCCESS: UNIT_COUNT,
    SAMPLE_UPLOAD_FAILURE: UNIT_COUNT,
    SAMPLE_AND_PREDICTION_PUBLISHED: UNIT_COUNT,
    SAMPLE_NOT_USED: UNIT_COUNT,
    ERROR_REQUEST_THROTTLED: UNIT_COUNT,
    ERROR_INVALID_CONNECTOR_CONFIG: UNIT_COUNT,
    ERROR_INVALID_INPUT: UNIT_COUNT,
    ERROR_MISSING_REQUEST_ID: UNIT_COUNT,
}


class UnknownMetricError(ValueError):
    """A metric name the connector does not publish."""


def _json_safe(value: Any) -> tuple[bool, Any]:
    """(True, a JSON-ready copy) or (False, None) when `value` cannot be written as JSON."""
    if value is None or isinstance(value, (str, bool, int)):
        return True, value
    if isinstance(value, float):
        return (True, value) if value == value and abs(value) != float("inf") else (False, None)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return True, value.isoformat()
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            ok, safe = _json_safe(item)
            if ok and isinstance(key, str):
                out[key] = safe
        return True, out
    if isinstance(value, (list, tuple)):
        return True, [safe for ok, safe in map(_json_safe, value) if ok]
    return False, None


def s3_response_fields(response: Mapping[str, Any]) -> dict:
    """The JSON-ready fields of a PutObject response (ETag, VersionId, ...), without ResponseMetadata.

    ResponseMetadata is transport detail (HTTP headers, retry count), not the result of the upload; datetimes
    become ISO 8601 text and values JSON cannot hold (bytes, streams) are left out.
    """
    out = {}
    for name, value in response.items():
        if name == "ResponseMetadata":
            continue
        ok, safe = _json_safe(value)
        if ok:
            out[name] = safe
        else:
            logger.debug("Leaving PutObject response field %s (%s) out of the status message", name,
                         type(value).__name__)
    return out


def status_success(request_id: Optional[str], put_object_response: Mapping[str, Any], bucket: str,
                   key: str) -> dict:
    """Status of an uploaded sample: the S3 response plus the bucket and key it went to."""
    s3_response = s3_response_fields(put_object_response)
    s3_response.update(bucket=bucket, key=key)
    return {"response": {"status": STATUS_SUCCESS, "s3_response": s3_response}, "id": request_id}


def status_dropped(request_id: Optional[str]) -> dict:
    """Status of a sample the sampling strategy did not keep."""
    return {"response": {"status": STATUS_DROPPED}, "id": request_id}


def status_fail(request_id: Optional[str], error: Union[BaseException, str], error_message: str) -> dict:
    """Status of a failed request; `error` is the exception (its class name is sent) or that name itself."""
    name = error if isinstance(error, str) else type(error).__name__
    return {"response": {"status": STATUS_FAIL, "error_message": error_message, "error": name}, "id": request_id}


def prediction_message(bucket: str, key: str, prediction: Any, config_id: str, metadata: Mapping[str, Any],
                       now: Optional[datetime.datetime] = None) -> dict:
    """Prediction of an uploaded sample, pointing at its S3 object.

    ``publish-ts`` (``str(datetime.now())``, local time as the original) is added here, when the prediction is
    published after the upload, so it is not in the S3 object's metadata; a caller's own ``publish-ts`` is
    replaced.  Each message gets its own time (FBC2 computed one default at import time).
    """
    stamped = dict(metadata)
    stamped["publish-ts"] = str(now or datetime.datetime.now())
    return {"source-ref": f"s3://{bucket}/{key}", "model-prediction": prediction, "config-id": config_id,
            "metadata": stamped}


def metric_message(name: str, value: Union[int, float] = 1) -> dict:
    """A CloudWatch Metrics connector request for one of the connector's metrics, in that metric's unit."""
    if name not in METRIC_UNITS:
        raise UnknownMetricError(f"Unknown ML Feedback metric {name!r}; known: {', '.join(METRIC_UNITS)}")
    return {"request": {"namespace": METRIC_NAMESPACE,
                        "metricData": {"value": value, "unit": METRIC_UNITS[name], "metricName": name}}}


def is_json_ready(message: Mapping[str, Any]) -> bool:
    """Whether json.dumps can write `message` without a custom encoder (a check for tests and publishers)."""
    try:
        json.dumps(message, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
