"""Names and encodings of the Greengrass v1 core's protocol that the core and a connector publishing as a Lambda
both use."""

import base64
import json
from typing import Any, Mapping

# The core's router: a Lambda publishes an MQTT message by invoking it (greengrasssdk's iot-data client does).
ROUTER_FUNCTION_ARN = "arn:aws:lambda:::function:GGRouter"
# What a publisher asks for when a target's queue is full: "" (the core's default), drop, or fail the publish.
BEST_EFFORT, ALL_OR_ERROR = "BestEffort", "AllOrError"
QUEUE_FULL_POLICIES = ("", BEST_EFFORT, ALL_OR_ERROR)


def encode_client_context(custom: Mapping[str, Any]) -> str:
    """An invocation's client context (`X-Amz-Client-Context`): base64 of JSON `{"custom": custom}`."""
    return base64.b64encode(json.dumps({"custom": dict(custom)}).encode("utf-8")).decode("ascii")
