"""The connector's Lambda entry point: `connector.handler.function_handler`.

Greengrass (ours or a real v1 core) runs this module as a long-lived function with the connector parameters as
environment variables and `ENCODING_TYPE=binary`, so the event is the raw image bytes. At import, as a pinned Lambda
does its set-up, it starts the supervised inference worker and waits for the model to load; a configuration, model
or memory-limit problem fails the import with the reason, and the runtime reports it as an initialization failure.
This process never loads MXNet itself: see `supervisor.py`. With `MLFeedbackConnectorConfigId` set (version 2),
each answered request's image and prediction also go to the ML Feedback connector, off the request path
(`feedback/forwarder.py`).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from pathlib import Path

from . import logs
from .errors import RequestError
from .feedback.forwarder import FeedbackForwarder
from .parameters import ImageClassificationParameters
from .supervisor import InferenceSupervisor, workers_from_environment

log = logging.getLogger(__name__)

parameters = ImageClassificationParameters.from_environment(os.environ)
logs.set_service_name(parameters.service_name)
_status_file = os.environ.get("GGIC_STATUS_FILE")
supervisor = InferenceSupervisor(parameters, Path(_status_file) if _status_file else None,
                                 workers=workers_from_environment(os.environ))
supervisor.start()
atexit.register(supervisor.stop)
forwarder = None
if parameters.feedback_config_id:
    forwarder = FeedbackForwarder(parameters.feedback_config_id, parameters.service_name).start()
    atexit.register(forwarder.stop)


def _deadline(context) -> float:
    """The request's deadline: what the runtime says is left (queue time counts), else the whole timeout."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    seconds = remaining() / 1000.0 if callable(remaining) else float(parameters.timeout_seconds)
    return time.monotonic() + min(seconds, float(parameters.timeout_seconds))


def function_handler(event, context):
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
        answer = supervisor.infer(image, content_type, _deadline(context))
    except RequestError as exc:
        log.warning("request %s refused (%s): %s", request_id, exc.reason, exc)
        raise
    if forwarder is not None:
        forwarder.offer(request_id, image, content_type, answer["Body"])
    return answer
