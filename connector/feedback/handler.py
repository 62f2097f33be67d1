"""The ML Feedback connector's Lambda entry point: `connector.feedback.handler.function_handler`.

Our runtime (or a Greengrass core) runs it as the long-lived function `arn:aws:lambda:<region>:aws:function:
MLFeedback` with the connector's parameters as same-named environment variables (`FeedbackConfigurationMap`,
`RequestLimit`) and binary input encoding: the event is the model input, and the ML SDK's `client('feedback')`
puts ConfigId, ModelPrediction and Metadata in the client context. At import it reads and checks the parameters
(a bad one fails the initialization with every problem, after an `ErrorInvalidConnectorConfig` metric) and starts
the upload worker; the handler only validates and queues, so a caller's `publish` returns before the sample is
sampled or uploaded. Status, prediction and metric messages go out through the runtime's subscriptions
(`connector.iot_data`), from this function's ARN.
"""

from __future__ import annotations

import atexit
import logging
import os

import boto3
from botocore.config import Config

from connector import logs
from connector.iot_data import IoTDataPublisher

from .configuration import (LIMIT_PARAMETER, MAP_PARAMETER, InvalidFeedbackConfigurationError, parse_configuration_map,
                            parse_request_limit)
from .messages import ERROR_INVALID_CONNECTOR_CONFIG, METRIC_TOPIC, metric_message
from .service import FeedbackService

log = logging.getLogger("ggic.feedback")

logs.set_service_name("MLFeedback")
_publisher = IoTDataPublisher()


def _publish(topic: str, message: dict) -> None:
    _publisher.publish(topic, message)


try:
    if not os.environ.get(MAP_PARAMETER):
        raise InvalidFeedbackConfigurationError([f"the required parameter {MAP_PARAMETER} is not set"])
    configurations = parse_configuration_map(os.environ[MAP_PARAMETER])
    request_limit = parse_request_limit(os.environ.get(LIMIT_PARAMETER))
except InvalidFeedbackConfigurationError:
    try:
        _publish(METRIC_TOPIC, metric_message(ERROR_INVALID_CONNECTOR_CONFIG, 1))
    except Exception as exc:  # the initialization fails anyway, with the configuration problem as its reason
        log.warning("could not publish the %s metric: %s", ERROR_INVALID_CONNECTOR_CONFIG, exc)
    raise

# Standard boto3 settings apply (AWS_REGION, credentials, AWS_ENDPOINT_URL_S3 for a local S3); bounded retries so a
# sample whose upload keeps failing is reported failed instead of holding the queue.
s3_client = boto3.client("s3", region_name=os.environ.get("AWS_REGION"),
                         config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                                       read_timeout=30))
service = FeedbackService(configurations, request_limit, _publish, s3_client)
service.start()
atexit.register(service.stop, 5.0)
log.info("ML Feedback connector ready: configs %s, RequestLimit %s", ", ".join(sorted(configurations)),
         request_limit or "none")


def function_handler(event, context):
    """Validate and queue one sample; a refusal (unknown ConfigId, throttled, ...) is raised to the caller."""
    if isinstance(event, str):
        event = event.encode("utf-8")
    custom = getattr(getattr(context, "client_context", None), "custom", None) or {}
    service.submit(getattr(context, "aws_request_id", None), bytes(event), custom)
