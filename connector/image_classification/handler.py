"""The connector as a long-lived Lambda on a Greengrass core: `connector.image_classification.handler.function_handler`
(`make lambda-zip`; our runtime runs it this way with `ggic run --connector-hosting lambda`).

The core runs this module with the connector parameters as environment variables and `ENCODING_TYPE=binary`, so
the event is the raw image bytes. At import, as a pinned Lambda does its set-up, it starts the supervised inference
workers and waits for the model to load; a configuration, model or memory-limit problem fails the import with the
reason, and the core reports it as an initialization failure. This process never loads MXNet itself. The request
path is `endpoint.py`'s, the same as when our runtime hosts the connector natively (`hosting.py`).
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

from connector.contract import logformat
from connector.image_classification.endpoint import InferenceEndpoint
from connector.image_classification.feedback_forwarder import sdk_sender
from connector.image_classification.parameters import ImageClassificationParameters
from connector.image_classification.supervisor import workers_from_environment

log = logging.getLogger("ggic.image_classification")

parameters = ImageClassificationParameters.from_environment(os.environ)
logformat.set_service_name(parameters.service_name)
log.info("image classification connector from %s, as a Lambda function", Path(__file__).resolve().parent)
endpoint = InferenceEndpoint.start(parameters, os.environ, workers_from_environment(os.environ), sdk_sender())
atexit.register(endpoint.stop)


def function_handler(event, context):
    """One inference (see `InferenceEndpoint.handle`)."""
    return endpoint.handle(event, context)
