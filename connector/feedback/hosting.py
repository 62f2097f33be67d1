"""The ML Feedback connector hosted natively by our runtime: the catalog's `hosted` entry point,
`connector.feedback.hosting:create`. Samples arrive without a function process, and its messages are routed
straight through the group's subscriptions, from its function's ARN."""

from __future__ import annotations

from connector.contract import logformat
from connector.contract.hosting import HostServices
from connector.feedback.endpoint import FeedbackEndpoint


def create(services: HostServices) -> FeedbackEndpoint:
    logformat.prefix_logger(services.log, "MLFeedback")
    return FeedbackEndpoint.start(services.parameters, services.region, services.publish, logger=services.log)
