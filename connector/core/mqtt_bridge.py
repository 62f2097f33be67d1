"""The `cloud` of the subscription table: an MQTT broker reached with paho-mqtt (MQTT 3.1.1).

Where a Greengrass core talks to AWS IoT Core, this runtime talks to any MQTT broker (`ggic run --mqtt-broker
HOST:PORT`). Messages for the cloud are published with QoS 1; while the broker is away paho keeps them, up to
`max_queued`, and sends them once it is back (beyond that they are dropped with a WARNING and a metric, never
silently). The topic filters of the subscriptions whose Source is `cloud` are subscribed to (QoS 1) on every
connection, so a reconnect restores them; what arrives goes to the router. The connection is retried with a
doubling back-off. A broker that is away does not make the runtime "not ready" (inference does not need it):
`state()` reports it in /health.

The session is clean (clean_session=True): with a fixed client id, a persistent session would keep subscriptions
of an older subscription definition on the broker.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

import paho.mqtt.client as mqtt

log = logging.getLogger("ggic.mqtt")

DEFAULT_PORT = 1883
DEFAULT_MAX_QUEUED = 1000
KEEPALIVE_S = 30
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 10
QOS = 1

# Called with (topic, payload) for each message from the broker; returns how many targets took it.
MessageReceiver = Callable[[str, bytes], int]


def parse_broker_address(text: str) -> Tuple[str, int]:
    """`HOST:PORT` (or `HOST`, port 1883; `[::1]:PORT` for IPv6) → (host, port); ValueError when malformed."""
    host, colon, port_text = text.rpartition(":")
    if not colon or "]" in port_text:
        host, port_text = text, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host:
        raise ValueError(f"MQTT broker address {text!r} has no host: give HOST:PORT, e.g. 127.0.0.1:1883")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"MQTT broker address {text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def default_client_id() -> str:
    """`ggic-<thing name or host name>`: what identifies this core to the broker."""
    name = os.environ.get("AWS_IOT_THING_NAME") or socket.gethostname() or "core"
    return "ggic-" + re.sub(r"[^a-zA-Z0-9_-]", "-", name)


class MqttBridge:
    """One paho client: publishes for the cloud targets, subscribes for the cloud sources."""

    def __init__(self, address: Tuple[str, int], client_id: str, filters: List[str], receiver: MessageReceiver,
                 max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self.host, self.port = address
        self.client_id = client_id
        self.filters = list(filters)
        self.receiver = receiver
        self.max_queued = max_queued
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True,
                                   protocol=mqtt.MQTTv311)
        self._client.max_queued_messages_set(max_queued)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        self._pending: Set[int] = set()      # mids published, not yet acknowledged by the broker
        self._acked_early: Set[int] = set()  # acknowledged before publish() returned their mid
        self._connected = False
        self._subscribed = not self.filters
        self._subscribe_mid: Optional[int] = None
        self._last_error: Optional[str] = None
        self._since = time.time()
        self._warned_unreachable = False
        self._dropping = 0  # messages refused since the queue filled up

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Connect in the background; a broker that is not there yet is retried, with back-off."""
        self._client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()
        log.info("MQTT bridge to %s (client id %s): subscribing to %s", self.address, self.client_id,
                 ", ".join(repr(f) for f in self.filters) or "nothing")

    def stop(self) -> None:
        queued = self.queued
        if queued:
            log.warning("stopping with %d message(s) for the cloud not yet acknowledged by %s: they are lost",
                        queued, self.address)
        self._client.disconnect()
        self._client.loop_stop()

    def set_filters(self, filters: List[str]) -> None:
        """A new deployment's cloud subscriptions: subscribe to the new list first (re-subscribing a filter keeps
        it without a gap), then drop the filters no longer wanted. Reconnects subscribe to the new list."""
        with self._lock:
            old, self.filters = self.filters, list(filters)
            connected = self._connected
        if old == self.filters:
            return
        log.info("MQTT bridge to %s: now subscribing to %s", self.address,
                 ", ".join(repr(f) for f in self.filters) or "nothing")
        if not connected:
            return
        if self.filters:
            _, mid = self._client.subscribe([(topic_filter, QOS) for topic_filter in self.filters])
            with self._lock:
                self._subscribed, self._subscribe_mid = False, mid
        gone = [topic_filter for topic_filter in old if topic_filter not in self.filters]
        if gone:
            self._client.unsubscribe(gone)

    # --- the router's side ------------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._pending)

    def has_room(self) -> bool:
        return self.queued < self.max_queued

    def publish(self, topic: str, payload: bytes) -> bool:
        """Hand a message to the broker (or to the queue while it is away); False when the queue is full."""
        info = self._client.publish(topic, payload, qos=QOS)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            with self._lock:
                self._dropping += 1
            return False
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._pending.add(info.mid)
            dropped, self._dropping = self._dropping, 0
        if dropped:
            log.info("the queue of messages for %s has room again after %d message(s) were dropped", self.address,
                     dropped)
        return True

    def state(self) -> Dict[str, object]:
        """For /health: connected or not, since when, what waits, what went wrong last."""
        with self._lock:
            return {"broker": self.address, "client_id": self.client_id, "connected": self._connected,
                    "subscribed": self._connected and self._subscribed, "filters": list(self.filters),
                    "queued": len(self._pending), "max_queued": self.max_queued, "since": self._since,
                    "last_error": self._last_error}

    # --- paho callbacks (its network thread) --------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: mqtt.ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            with self._lock:
                self._last_error = f"the broker refused the connection: {reason_code}"
            log.warning("MQTT broker %s refused the connection: %s", self.address, reason_code)
            return
        subscribe_mid = None
        if self.filters:
            _, subscribe_mid = client.subscribe([(topic_filter, QOS) for topic_filter in self.filters])
        with self._lock:
            self._connected, self._since, self._warned_unreachable = True, time.time(), False
            self._subscribed, self._subscribe_mid = not self.filters, subscribe_mid
            queued = len(self._pending)
        log.info("connected to MQTT broker %s as %s%s", self.address, self.client_id,
                 f"; sending {queued} queued message(s)" if queued else "")

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        with self._lock:
            self._last_error = f"cannot connect to {self.address}"
            first, self._warned_unreachable = not self._warned_unreachable, True
        (log.warning if first else log.debug)(
            "MQTT broker %s is unreachable; retrying with back-off (messages for the cloud are queued, up to %d)",
            self.address, self.max_queued)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason_code: mqtt.ReasonCode, properties: object) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected, self._subscribed = False, not self.filters
            if was_connected:
                self._since = time.time()
                self._last_error = f"disconnected: {reason_code}"
        if was_connected and reason_code.is_failure:
            log.warning("lost the connection to MQTT broker %s (%s); reconnecting", self.address, reason_code)

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: List[mqtt.ReasonCode],
                      properties: object) -> None:
        refused = [f for f, code in zip(self.filters, reason_codes) if code.is_failure]
        with self._lock:
            if mid == self._subscribe_mid:
                self._subscribed = not refused
        if refused:
            log.error("MQTT broker %s refused the subscription to %s", self.address, ", ".join(map(repr, refused)))

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason_code: mqtt.ReasonCode,
                    properties: object) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._acked_early.add(mid)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self.receiver(message.topic, message.payload)
        except Exception:  # one bad message must not stop the network thread
            log.exception("routing a message from the cloud on %r failed", message.topic)
