"""The ML Feedback connector as a long-lived Lambda on a Greengrass core:
`connector.feedback.handler.function_handler` (our runtime runs it this way with `--connector-hosting lambda`).

The core runs it as `arn:aws:lambda:<region>:aws:function:MLFeedback` with the connector's parameters as same-named
environment variables (`FeedbackConfigurationMap`, `RequestLimit`) and binary input encoding: the event is the
model input, and the ML SDK's `client('feedback')` puts ConfigId, ModelPrediction and Metadata in the client
context. Its messages go out as a Lambda's do, through the core's router (`iot_data.py`). The set-up and request
path are `endpoint.py`'s, as when our runtime hosts the connector natively (`hosting.py`).
"""

from __future__ import annotations

import atexit
import os

from connector.contract import logformat
from connector.feedback.endpoint import FeedbackEndpoint
from connector.feedback.iot_data import IoTDataPublisher

logformat.set_service_name("MLFeedback")
endpoint = FeedbackEndpoint.start(os.environ, os.environ.get("AWS_REGION"), IoTDataPublisher().publish)
atexit.register(endpoint.stop)


def function_handler(event, context):
    """Validate and queue one sample (see `FeedbackEndpoint.handle`)."""
    return endpoint.handle(event, context)
