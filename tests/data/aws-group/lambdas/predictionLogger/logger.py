"""An on-demand Lambda of the sample group: logs each prediction the classifier publishes to it."""

import logging
import os

log = logging.getLogger(__name__)
log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))


def handler(event, context):
    log.info("prediction for %s: %s", event.get("request"), event.get("predictions"))
