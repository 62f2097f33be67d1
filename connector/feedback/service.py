"""The ML Feedback connector's request handling: check a request, queue it, upload it, publish what happened.

`FeedbackService.submit` is what the connector's Lambda handler calls for each ``feedback.publish`` of the ML SDK.
It checks the request at once, so the caller gets a Handled error (``GreengrassFeedbackException``) for a request
that can never succeed, and queues it; a worker thread then uploads the sample to S3 and publishes the status,
the prediction and the metrics.  The queue is bounded by RequestLimit as in the original code (``queue.Queue``
with ``put_nowait``; 0 means unbounded), so the request the worker is busy with does not count towards the
limit.  Every outcome is logged, so no request disappears without a trace, and a failing `publish` is logged
but never stops the worker.

Decisions beyond the original code:

- Metadata goes to S3 as user metadata, which botocore and S3 only accept as ASCII text: keys must be HTTP
  header tokens, values printable ASCII strings, 2 KB in all, and no two keys may differ only in case (S3
  lowercases keys).  Anything else is refused at `submit` with a message naming the key, instead of failing
  later as an upload error.  Values are not converted with str(): a number would come back from S3 as text
  while the prediction message kept the number, so the two copies would disagree.
- A ModelPrediction the configuration's sampling strategy cannot read (see `sampling`) is refused at `submit`
  rather than failing in the worker.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional

from connector.feedback import messages as M
from connector.feedback.configuration import FeedbackConfig
from connector.feedback.sampling import InvalidPredictionError

logger = logging.getLogger("ggic.feedback.service")

Publish = Callable[[str, dict], None]

#: S3 allows this many bytes of user metadata (keys and values together) on one object.
S3_METADATA_LIMIT = 2048
_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


class FeedbackError(Exception):
    """A request the connector refuses; `metric` is the error metric published with the fail status."""

    metric: ClassVar[Optional[str]] = None
    expected: ClassVar[bool] = True  # refused and logged here; the Lambda runtime need not log a traceback

    @property
    def status_error(self) -> str:
        """The ``error`` field of the fail status: the exception's class name."""
        return type(self).__name__


class MissingRequestIdError(FeedbackError):
    """The invocation has no request id (Lambda context aws_request_id), so its status could not be matched."""

    metric = M.ERROR_MISSING_REQUEST_ID


class InvalidFeedbackInputError(FeedbackError, ValueError):
    """ConfigId, ModelInput, ModelPrediction or Metadata is missing or wrong."""

    metric = M.ERROR_INVALID_INPUT


class RequestThrottledError(FeedbackError):
    """RequestLimit requests are already waiting."""

    metric = M.ERROR_REQUEST_THROTTLED

    @property
    def status_error(self) -> str:
        # The original code sends the class name of queue.Full; the documentation's example shows "Queue.Full".
        return queue.Full.__name__


class ServiceStoppedError(FeedbackError):
    """The service is stopping or stopped and takes no more requests."""


@dataclass
class FeedbackCounters:
    """How many requests ended each way (a snapshot; `accepted` counts the queued ones)."""

    accepted: int = 0
    rejected: int = 0  # invalid input or missing request id
    throttled: int = 0
    refused_stopped: int = 0
    uploaded: int = 0
    dropped_by_strategy: int = 0
    upload_failed: int = 0
    failed: int = 0  # an unexpected error in the worker
    abandoned: int = 0  # still queued when stop() gave up waiting


@dataclass(frozen=True)
class _Request:
    request_id: str
    config: FeedbackConfig
    body: bytes
    prediction: Any
    metadata: dict


_STOP = object()


def _metadata_problems(metadata: Mapping) -> list[str]:
    problems = []
    lowered: dict[str, str] = {}
    size = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not _HEADER_TOKEN.fullmatch(key):
            problems.append(f"Metadata key {key!r} is not allowed: S3 metadata keys are ASCII letters, digits and "
                            f"!#$%&'*+.^_`|~- only")
            continue
        if key.lower() in lowered:
            problems.append(f"Metadata keys {lowered[key.lower()]!r} and {key!r} are the same S3 metadata key "
                            f"(S3 lowercases keys)")
        lowered.setdefault(key.lower(), key)
        if not isinstance(value, str):
            problems.append(f"Metadata value of {key!r} must be a string, not {type(value).__name__} ({value!r}); "
                            f"S3 metadata holds text only")
        elif not _PRINTABLE_ASCII.fullmatch(value):
            problems.append(f"Metadata value of {key!r} must be printable ASCII text: S3 metadata cannot hold "
                            f"{value!r}")
        else:
            size += len(key) + len(value)
    if size > S3_METADATA_LIMIT:
        problems.append(f"Metadata is {size} bytes as S3 metadata; S3 allows {S3_METADATA_LIMIT}")
    return problems


class FeedbackService:
    """Checks, queues and processes feedback requests for one FeedbackConfigurationMap."""

    def __init__(self, configs: Mapping[str, FeedbackConfig], request_limit: int, publish: Publish,
                 s3_client: Any, rng: Optional[random.Random] = None, log: logging.Logger = logger) -> None:
        if not isinstance(request_limit, int) or isinstance(request_limit, bool) or request_limit < 0:
            raise ValueError(f"request_limit must be an integer >= 0 (0: no limit), not {request_limit!r}")
        self._configs = dict(configs)
        self._limit = request_limit
        self._publish_callable = publish
        self._s3 = s3_client
        self._rng = rng
        self.log = log
        self._queue: queue.Queue = queue.Queue(request_limit)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._counters = FeedbackCounters()
        self._closed = False
        self._abandon = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- public -------------------------------------------------------------------------------------------

    @property
    def request_limit(self) -> int:
        return self._limit

    @property
    def counters(self) -> FeedbackCounters:
        with self._lock:
            return dataclasses.replace(self._counters)

    def start(self) -> None:
        """Start the worker thread (once); requests submitted before wait in the queue."""
        with self._lock:
            if self._closed:
                raise ServiceStoppedError("The ML Feedback service was stopped and cannot be started again")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="ggic-feedback-worker", daemon=True)
            self._thread.start()
        self.log.info("ML Feedback service started: %d configuration(s), request limit %s", len(self._configs),
                      self._limit or "none")

    def submit(self, request_id: Optional[str], model_input: bytes, custom: Optional[Mapping[str, Any]]) -> None:
        """Check one request and queue it; raise a FeedbackError (after publishing a fail status) if refused.

        `custom` is the invocation's client-context ``custom`` object: ConfigId, ModelPrediction, Metadata.
        """
        if not isinstance(request_id, str) or not request_id:
            self._refuse(request_id if isinstance(request_id, str) else None, MissingRequestIdError(
                f"The request has no request id ({request_id!r}); it is dropped"))
        request = self._check(request_id, model_input, custom)
        with self._lock:
            if self._closed:
                error: Optional[FeedbackError] = ServiceStoppedError(
                    f"[RequestId: {request_id}] The ML Feedback service is stopping; the request is dropped")
            else:
                try:
                    self._queue.put_nowait(request)
                    error = None
                    self._counters.accepted += 1
                    self._pending += 1
                except queue.Full:
                    error = RequestThrottledError(
                        f"Request limit has been reached (max request:{self._limit}). Dropping request.")
        if error is not None:
            self._refuse(request_id, error)
        self.log.info("[RequestId: %s] Queued feedback for config %r (%d bytes)", request_id,
                      request.config.config_id, len(request.body))

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Wait until every accepted request has been processed; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Refuse new requests, let the worker finish the queued ones for up to `timeout` seconds, then give up.

        Requests still queued when the time is up are abandoned: each is logged and gets a fail status.  Returns
        whether the worker has ended (it cannot be interrupted inside an S3 call; it is a daemon thread).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            self._abandon.set()
            self._drain_abandoned()
            return True
        try:
            self._queue.put(_STOP, timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Full:
            self._abandon.set()
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._abandon.set()
            self.log.warning("ML Feedback worker still busy after %ss; queued requests are abandoned", timeout)
            return False
        self.log.info("ML Feedback service stopped")
        return True

    # --- checking -----------------------------------------------------------------------------------------

    def _check(self, request_id: str, model_input: Any, custom: Any) -> _Request:
        problems = []
        if custom is None:
            custom = {}
        if not isinstance(custom, Mapping):
            self._refuse(request_id, InvalidFeedbackInputError(
                f"[RequestId: {request_id}] The client context's custom field must be an object holding ConfigId, "
                f"ModelPrediction and Metadata, not {type(custom).__name__}"))
        config = None
        config_id = custom.get("ConfigId")
        if config_id is None:
            problems.append("ConfigId is required")
        elif not isinstance(config_id, str):
            problems.append(f"ConfigId must be a string, not {type(config_id).__name__} ({config_id!r})")
        elif config_id not in self._configs:
            problems.append(f"ConfigId {config_id!r} is not in FeedbackConfigurationMap (configured: "
                            f"{', '.join(sorted(self._configs)) or 'none'})")
        else:
            config = self._configs[config_id]
        if not isinstance(model_input, (bytes, bytearray, memoryview)):
            problems.append(f"ModelInput must be bytes, not {type(model_input).__name__}")
        prediction = custom.get("ModelPrediction")
        if prediction is None:
            problems.append("ModelPrediction is required")
        elif not isinstance(prediction, (list, dict)):
            problems.append(f"ModelPrediction must be a list or an object, not {type(prediction).__name__}")
        elif not prediction:
            problems.append("ModelPrediction must not be empty")
        elif config is not None and config.strategy is not None:
            try:
                config.strategy.check_prediction(prediction)
            except InvalidPredictionError as error:
                problems.append(f"{error} (config {config.config_id!r} samples with {config.strategy.name})")
        metadata = custom.get("Metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            problems.append(f"Metadata must be an object, not {type(metadata).__name__}")
        else:
            problems.extend(_metadata_problems(metadata))
        if problems:
            self._refuse(request_id, InvalidFeedbackInputError(
                f"[RequestId: {request_id}] Invalid feedback request: " + "; ".join(problems)))
        return _Request(request_id, config, bytes(model_input), prediction, dict(metadata))

    def _refuse(self, request_id: Optional[str], error: FeedbackError) -> None:
        with self._lock:
            if isinstance(error, RequestThrottledError):
                self._counters.throttled += 1
            elif isinstance(error, ServiceStoppedError):
                self._counters.refused_stopped += 1
            else:
                self._counters.rejected += 1
        self.log.warning("[RequestId: %s] Refused: %s", request_id, error)
        self._publish(M.STATUS_TOPIC, M.status_fail(request_id, error.status_error, str(error)))
        if error.metric:
            self._publish(M.METRIC_TOPIC, M.metric_message(error.metric))
        raise error

    # --- the worker ---------------------------------------------------------------------------------------

    def _publish(self, topic: str, message: dict) -> bool:
        try:
            self._publish_callable(topic, message)
            return True
        except Exception:  # a publishing failure must never stop the worker or hide the request's outcome
            self.log.warning("Could not publish to %s: %s", topic, message, exc_info=True)
            return False

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self._counters, name, getattr(self._counters, name) + 1)

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                if self._abandon.is_set():
                    self._give_up(item)
                else:
                    self._process(item)
            except Exception as error:
                self._count("failed")
                text = (f"[RequestId: {item.request_id}] Unexpected error while processing the request. Exception "
                        f"type: {type(error).__name__}, error: {error}")
                self.log.exception("%s", text)
                self._publish(M.STATUS_TOPIC, M.status_fail(item.request_id, error, text))
            finally:
                self._done()
            if self._abandon.is_set():
                self._drain_abandoned()
                break
        self.log.info("ML Feedback worker ended")

    def _drain_abandoned(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                try:
                    self._give_up(item)
                finally:
                    self._done()

    def _give_up(self, request: _Request) -> None:
        self._count("abandoned")
        text = (f"[RequestId: {request.request_id}] The ML Feedback service stopped before the request was "
                f"processed; the sample was not uploaded")
        self.log.warning("%s", text)
        self._publish(M.STATUS_TOPIC, M.status_fail(request.request_id, ServiceStoppedError.__name__, text))

    def _process(self, request: _Request) -> None:
        rid, config = request.request_id, request.config
        self.log.info("[RequestId: %s] Processing request for config %r", rid, config.config_id)
        self._publish(M.METRIC_TOPIC, M.metric_message(M.SAMPLE_SIZE, len(request.body)))
        if config.strategy is not None and not config.strategy.should_use(request.prediction, self._rng):
            self._count("dropped_by_strategy")
            self.log.info("[RequestId: %s] Model input and prediction were dropped by the %s sampling strategy of "
                          "config %r", rid, config.strategy.name, config.config_id)
            self._publish(M.STATUS_TOPIC, M.status_dropped(rid))
            self._publish(M.METRIC_TOPIC, M.metric_message(M.SAMPLE_NOT_USED))
            return
        key = config.object_key(str(uuid.uuid4()))
        try:
            response = self._s3.put_object(Bucket=config.bucket, Key=key, Body=request.body,
                                           ContentType=config.content_type, Metadata=request.metadata)
        except Exception as error:
            self._count("upload_failed")
            text = (f"[RequestId: {rid}] Failed to upload model input data due to exception. Model prediction will "
                    f"not be published. Exception type: {type(error).__name__}, error: {error}")
            self.log.warning("%s", text)
            self._publish(M.STATUS_TOPIC, M.status_fail(rid, error, text))
            self._publish(M.METRIC_TOPIC, M.metric_message(M.SAMPLE_UPLOAD_FAILURE))
            return
        self._count("uploaded")
        self.log.info("[RequestId: %s] Uploaded the model input to s3://%s/%s", rid, config.bucket, key)
        self._publish(M.STATUS_TOPIC, M.status_success(rid, response, config.bucket, key))
        self._publish(M.METRIC_TOPIC, M.metric_message(M.SAMPLE_UPLOAD_SUCCESS))
        if self._publish(M.PREDICTION_TOPIC, M.prediction_message(config.bucket, key, request.prediction,
                                                                  config.config_id, request.metadata)):
            self._publish(M.METRIC_TOPIC, M.metric_message(M.SAMPLE_AND_PREDICTION_PUBLISHED))
        else:
            self.log.warning("[RequestId: %s] The sample was uploaded but its prediction was not published", rid)
