"""The connector's Lambda entry point: `connector.handler.function_handler`.

Greengrass (ours or a real v1 core) runs this module as a long-lived function with the connector parameters as
environment variables and `ENCODING_TYPE=binary`, so the event is the raw image bytes. The model loads at import,
as a pinned Lambda does its set-up; a configuration or model problem fails the import with the reason, and the
runtime reports it as an initialization failure.
"""

from __future__ import annotations

import logging
import os

from . import logs
from .errors import RequestError
from .parameters import ImageClassificationParameters
from .service import ImageClassificationService

log = logging.getLogger(__name__)

parameters = ImageClassificationParameters.from_environment(os.environ)
logs.set_service_name(parameters.service_name)
service = ImageClassificationService(parameters)
service.initialize()


def function_handler(event, context):
    """One inference: the event is the image, the ContentType comes in the client context."""
    custom = getattr(getattr(context, "client_context", None), "custom", None) or {}
    content_type = custom.get("Content-Type")
    if isinstance(event, str):
        event = event.encode("latin-1")
    if not isinstance(event, (bytes, bytearray, memoryview)):
        raise RequestError(f"the request body must be image bytes, not {type(event).__name__}: deploy the "
                           f"connector function with binary input encoding")
    try:
        return service.handle(bytes(event), content_type)
    except RequestError as exc:
        log.warning("request %s refused (%s): %s", getattr(context, "aws_request_id", "?"), exc.reason, exc)
        raise
