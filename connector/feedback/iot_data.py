"""Publishing an MQTT message from inside a Greengrass function, the way greengrasssdk's `iot-data` client does.

greengrasssdk 1.6.1 publishes by posting an `Event` invocation to the core's router function (GGRouter) with the
topic and the publishing function's ARN in the client context; the core then routes the message through the
group's subscriptions (local functions, connectors, the cloud). Connectors of this project (the ML Feedback
connector) publish the same way, so their messages follow the same subscription table as a user Lambda's.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from connector.contract.greengrass import QUEUE_FULL_POLICIES, ROUTER_FUNCTION_ARN, encode_client_context


class IoTDataPublisher:
    """`publish(topic, payload)` to the Greengrass router, as the function named by MY_FUNCTION_ARN."""

    def __init__(self, source_arn: Optional[str] = None, client=None) -> None:
        from greengrass_ipc_python_sdk.ipc_client import IPCClient

        self.source_arn = source_arn or os.environ.get("MY_FUNCTION_ARN", "")
        self.router_arn = os.environ.get("ROUTER_FUNCTION_ARN") or ROUTER_FUNCTION_ARN
        self._client = client or IPCClient()

    def publish(self, topic: str, payload: Any = b"", queue_full_policy: str = "") -> None:
        """Send one message; a dict or list payload is sent as JSON. Raises IPCException when the router refuses."""
        if not topic:
            raise ValueError("a topic is required to publish")
        if queue_full_policy not in QUEUE_FULL_POLICIES:
            raise ValueError(f"queue_full_policy must be one of {QUEUE_FULL_POLICIES}, not {queue_full_policy!r}")
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        custom = {"source": self.source_arn, "subject": topic, "queueFullPolicy": queue_full_policy}
        self._client.post_work(self.router_arn, payload, encode_client_context(custom), "Event")
