"""How a version 2 image classification connector feeds the ML Feedback connector (`MLFeedbackConnectorConfigId`).

After each successful inference the connector hands the request's image and the prediction to the group's ML Feedback
connector, under its config id: as a Lambda on a core with the ML SDK's `client('feedback').publish` (the same call a
user Lambda makes, `sdk_sender`), natively in our runtime by invoking the feedback connector's function with the same
client context (`invoke_sender`). The hand-off runs on a thread of its own behind a bounded queue, so the caller's
answer never waits for it (nor for the sampling and the S3 upload, which the feedback connector does later still).
When the queue is full (the feedback connector is slower than inference for a long while) a sample is skipped with a
warning and counted: the prediction is still answered, and nothing is dropped without a log line.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

log = logging.getLogger("ggic.feedback")

# (ConfigId, ModelInput, ModelPrediction, Metadata): hands one sample over; raises FeedbackRejectedError when the
# feedback connector refuses it (throttled, invalid), anything else when it cannot be reached.
SendSample = Callable[[str, bytes, Any, Dict[str, str]], None]


class FeedbackRejectedError(Exception):
    """The ML Feedback connector answered, and refused the sample."""

DEFAULT_MAX_PENDING = 64
_STOP = object()


class FeedbackForwarder:
    """A background hand-off of (image, prediction) pairs to the ML Feedback connector."""

    def __init__(self, config_id: str, service_name: str, send: SendSample, max_pending: int = DEFAULT_MAX_PENDING,
                 logger: logging.Logger = log) -> None:
        self.config_id = config_id
        self.service_name = service_name
        self.log = logger
        self._queue: "queue.Queue[object]" = queue.Queue(max_pending)
        self._send = send
        self.forwarded = 0   # accepted by the feedback connector
        self.rejected = 0    # refused by it (throttled by its RequestLimit, invalid)
        self.failed = 0      # it could not be reached
        self.skipped = 0     # our own queue was full
        self._thread = threading.Thread(target=self._run, name="feedback-forwarder", daemon=True)

    def start(self) -> "FeedbackForwarder":
        self._thread.start()
        return self

    def offer(self, request_id: str, image: bytes, content_type: Optional[str], answer_body: str) -> bool:
        """Queue one sample without waiting; False (and a warning) when the queue is full."""
        try:
            self._queue.put_nowait((request_id, image, content_type, answer_body))
            return True
        except queue.Full:
            self.skipped += 1
            self.log.warning("[%s] sample not handed to the ML Feedback connector (config %s): %d samples are already "
                        "waiting; %d skipped so far", request_id, self.config_id, self._queue.qsize(), self.skipped)
            return False

    def stop(self, timeout: float = 2.0) -> None:
        """Hand over what is queued, for at most `timeout` seconds."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            request_id, image, content_type, answer_body = item  # type: ignore[misc]
            try:
                self._send(self.config_id, image, json.loads(answer_body),
                           {"service-name": self.service_name, "request-id": request_id,
                            "content-type": content_type or ""})
                self.forwarded += 1
                self.log.debug("[%s] sample handed to the ML Feedback connector (config %s)", request_id,
                               self.config_id)
            except FeedbackRejectedError as exc:
                self.rejected += 1
                self.log.warning("[%s] the ML Feedback connector refused the sample (config %s): %s", request_id,
                                 self.config_id, exc)
            except Exception as exc:  # the answer was given already: log, count, go on with the next sample
                self.failed += 1
                self.log.error("[%s] cannot hand the sample to the ML Feedback connector (config %s): %s: %s",
                               request_id, self.config_id, type(exc).__name__, exc)


def sdk_sender() -> SendSample:
    """Send with the ML SDK's feedback client (created on the first sample): the connector as a Lambda on a core."""
    clients: list = []

    def send(config_id: str, image: bytes, prediction: Any, metadata: Dict[str, str]) -> None:
        import greengrass_machine_learning_sdk as ml

        if not clients:
            clients.append(ml.client("feedback"))
        try:
            clients[0].publish(ConfigId=config_id, ModelInput=image, ModelPrediction=prediction, Metadata=metadata)
        except ml.GreengrassFeedbackException as exc:
            raise FeedbackRejectedError(str(exc)) from exc
    return send


def invoke_sender(invoke: Callable[[str, bytes, Mapping[str, Any]], Tuple[bytes, str]],
                  feedback_function_arn: str) -> SendSample:
    """Send by invoking the feedback connector's function with the client context the ML SDK would build (the
    connector hosted natively by our runtime: the sample does not leave the process)."""
    def send(config_id: str, image: bytes, prediction: Any, metadata: Dict[str, str]) -> None:
        answer, function_error = invoke(feedback_function_arn, image, {
            "ConfigId": config_id, "ModelPrediction": prediction, "Metadata": metadata})
        if function_error:
            try:
                reason = json.loads(answer.decode("utf-8")).get("errorMessage")
            except (ValueError, AttributeError, UnicodeDecodeError):
                reason = None
            raise FeedbackRejectedError(reason or answer.decode("utf-8", "replace"))
    return send
