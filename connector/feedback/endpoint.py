"""The ML Feedback connector's set-up and request path, the same under both hostings: as a long-lived Lambda on a
Greengrass core (`handler.py`) and natively inside our runtime (`hosting.py`).

At start it reads and checks its parameters (a bad one fails the start with every problem, after an
`ErrorInvalidConnectorConfig` metric) and starts the upload worker; `handle` only validates and queues, so a
caller's `publish` returns before the sample is sampled or uploaded. Status, prediction and metric messages go out
through `publish` (topic, message), which the hosting routes through the group's subscriptions.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

import boto3
from botocore.config import Config

from connector.contract.status import SupervisorStatus
from connector.feedback.configuration import (
    LIMIT_PARAMETER,
    MAP_PARAMETER,
    InvalidFeedbackConfigurationError,
    parse_configuration_map,
    parse_request_limit,
)
from connector.feedback.messages import ERROR_INVALID_CONNECTOR_CONFIG, METRIC_TOPIC, metric_message
from connector.feedback.service import FeedbackService

log = logging.getLogger("ggic.feedback")

Publish = Callable[[str, Any], None]


class FeedbackEndpoint:
    """A started feedback service behind a Lambda-style `handle(event, context)`."""

    concurrency = 1  # the handler only checks and queues

    def __init__(self, service: FeedbackService) -> None:
        self.service = service

    @classmethod
    def start(cls, parameters: Mapping[str, str], region: Optional[str], publish: Publish,
              logger: logging.Logger = log) -> "FeedbackEndpoint":
        try:
            if not parameters.get(MAP_PARAMETER):
                raise InvalidFeedbackConfigurationError([f"the required parameter {MAP_PARAMETER} is not set"])
            configurations = parse_configuration_map(parameters[MAP_PARAMETER])
            request_limit = parse_request_limit(parameters.get(LIMIT_PARAMETER))
        except InvalidFeedbackConfigurationError:
            try:
                publish(METRIC_TOPIC, metric_message(ERROR_INVALID_CONNECTOR_CONFIG, 1))
            except Exception as exc:  # the start fails anyway, with the configuration problem as its reason
                logger.warning("could not publish the %s metric: %s", ERROR_INVALID_CONNECTOR_CONFIG, exc)
            raise
        # Standard boto3 settings apply (AWS_REGION, credentials, AWS_ENDPOINT_URL_S3 for a local S3); bounded
        # retries so a sample whose upload keeps failing is reported failed instead of holding the queue.
        s3_client = boto3.client("s3", region_name=region,
                                 config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                                               read_timeout=30))
        service = FeedbackService(configurations, request_limit, publish, s3_client, log=logger)
        service.start()
        logger.info("ML Feedback connector ready: configs %s, RequestLimit %s", ", ".join(sorted(configurations)),
                    request_limit or "none")
        return cls(service)

    def handle(self, event: Any, context: Any) -> None:
        """Validate and queue one sample; a refusal (unknown ConfigId, throttled, ...) is raised to the caller."""
        if isinstance(event, str):
            event = event.encode("utf-8")
        custom = getattr(getattr(context, "client_context", None), "custom", None) or {}
        self.service.submit(getattr(context, "aws_request_id", None), bytes(event), custom)

    def status(self) -> Optional[SupervisorStatus]:
        return None  # no inference workers

    def stop(self) -> None:
        self.service.stop(5.0)
