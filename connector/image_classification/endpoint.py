"""The connector's request path, the same under both hostings: as a long-lived Lambda on a Greengrass core
(`handler.py`) and natively inside our runtime (`hosting.py`).

A request is the image bytes (the event) and its ContentType (in the client context); its deadline is what the
runtime says is left of LocalInferenceServiceTimeoutSeconds (queueing counts). Its image header is checked first,
here, against the limits `decode_budget.py` derives from the memory limit and the model's measured need. The
supervisor runs it on an inference worker (`supervisor.py`: where time and memory are limited, and where a request
that cannot be answered in time is refused before it reaches a worker; docs/overload.md); the answer is
`{"Body": "[0.3,0.1,...]", "ContentType": "application/json"}`. With MLFeedbackConnectorConfigId (version 2), the
image and the prediction also go to the ML Feedback connector, off the request path (`feedback_forwarder.py`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Mapping, Optional, Union

from connector.contract.status import SupervisorStatus
from connector.image_classification.decode_budget import DecodeBudget
from connector.image_classification.errors import RequestError
from connector.image_classification.feedback_forwarder import FeedbackForwarder, SendSample
from connector.image_classification.parameters import ImageClassificationParameters
from connector.image_classification.supervisor import InferenceSupervisor

log = logging.getLogger("ggic.image_classification")


class InferenceEndpoint:
    """Started, supervised inference behind a Lambda-style `handle(event, context)`."""

    def __init__(self, parameters: ImageClassificationParameters, supervisor: InferenceSupervisor,
                 forwarder: Optional[FeedbackForwarder] = None, logger: logging.Logger = log) -> None:
        self.parameters = parameters
        self.supervisor = supervisor
        self.forwarder = forwarder
        self.log = logger

    @classmethod
    def start(cls, parameters: ImageClassificationParameters, environment: Mapping[str, str],
              workers: Union[int, str], send_sample: SendSample, logger: logging.Logger = log,
              **supervisor_options: Any) -> "InferenceEndpoint":
        """Start the inference workers and wait for the model (a problem raises ConnectorStartError with the
        reason), and the feedback hand-off when the parameters ask for one."""
        supervisor = InferenceSupervisor(parameters, environment, workers=workers, logger=logger, **supervisor_options)
        supervisor.start()
        endpoint_budget = DecodeBudget.from_environment(supervisor.share_kb, supervisor.need_kb, supervisor.size,
                                                        supervisor.environment)
        warning = endpoint_budget.startup_warning()
        if warning:
            logger.warning("%s", warning)
        logger.info("decoding %s", endpoint_budget.describe())
        forwarder = None
        if parameters.feedback_config_id:
            forwarder = FeedbackForwarder(parameters.feedback_config_id, parameters.service_name, send_sample,
                                          logger=logger).start()
        return cls(parameters, supervisor, forwarder, logger)

    def decode_budget(self) -> DecodeBudget:
        """The image limits now: the worker's share of the memory limit and the model's measured need (with
        `--workers auto` the share shrinks once the layout is decided)."""
        supervisor = self.supervisor
        return DecodeBudget.from_environment(supervisor.share_kb, supervisor.need_kb, supervisor.size,
                                             supervisor.environment)

    @property
    def concurrency(self) -> int:
        """Requests it serves at once: one per inference worker."""
        return self.supervisor.size

    def _deadline(self, context: Any) -> float:
        """The request's deadline: what the runtime says is left (queue time counts), else the whole timeout."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        left_ms = remaining() if callable(remaining) else None
        seconds = left_ms / 1000.0 if left_ms is not None else float(self.parameters.timeout_seconds)
        return time.monotonic() + min(seconds, float(self.parameters.timeout_seconds))

    def handle(self, event: Any, context: Any) -> Dict[str, str]:
        """One inference: the event is the image, the ContentType comes in the client context."""
        custom = getattr(getattr(context, "client_context", None), "custom", None) or {}
        content_type = custom.get("Content-Type")
        if isinstance(event, str):
            event = event.encode("latin-1")
        if not isinstance(event, (bytes, bytearray, memoryview)):
            raise RequestError(f"the request body must be image bytes, not {type(event).__name__}: deploy the "
                               f"connector function with binary input encoding")
        request_id = getattr(context, "aws_request_id", "?")
        image = bytes(event)
        try:
            # The header is checked here, before any worker is taken: an image whose decode would not fit beside
            # the model, or with more scans than a photo has, never reaches (and never costs) a worker.
            self.decode_budget().check(image, content_type)
            answer = self.supervisor.infer(image, content_type, self._deadline(context))
        except RequestError as exc:
            self.log.warning("request %s refused (%s): %s", request_id, exc.reason, exc)
            raise
        if self.forwarder is not None:
            self.forwarder.offer(request_id, image, content_type, answer["Body"])
        return answer

    def status(self) -> SupervisorStatus:
        return self.supervisor.status()

    def stop(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
        self.supervisor.stop()
