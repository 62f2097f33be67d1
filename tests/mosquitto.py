"""A real MQTT broker for the tests, Debian's mosquitto on 127.0.0.1 (`make test` installs it when missing), and
`Subscriber`, the tests' stand-in for the cloud."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import List, Optional, Tuple

import paho.mqtt.client as mqtt

START_TIMEOUT_S = 30.0
WAIT_S = 30.0


class MosquittoMissingError(RuntimeError):
    """mosquitto is not installed on this machine."""


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)
    if found is None:
        raise MosquittoMissingError("mosquitto is not installed: `make test` installs it (apt-get install -y "
                                    "mosquitto), or install it by hand")
    return found


class MosquittoBroker:
    """`mosquitto -c <conf>` on one port; `stop` and `start` again keep the port (a broker restart).

    With `persistent=True` the broker saves its sessions on stop and loads them on start, so a subscriber with a
    persistent session (clean_session=False) gets the messages published while it was away, across a restart."""

    def __init__(self, directory: Path, port: int, persistent: bool = False) -> None:
        self.directory = directory
        self.port = port
        self.persistent = persistent
        self.process: Optional[subprocess.Popen] = None
        self.log_path = directory / "mosquitto.log"

    @property
    def address(self) -> Tuple[str, int]:
        return "127.0.0.1", self.port

    def start(self) -> "MosquittoBroker":
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if os.geteuid() == 0:  # as root, mosquitto would switch to user mosquitto, who cannot write here
            lines.append("user root")
        if self.persistent:
            lines += ["persistence true", f"persistence_location {self.directory}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        config.write_text("\n".join(lines) + "\n")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([mosquitto_binary(), "-c", str(config)], stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(self.address, timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self.process.returncode}:\n{self.output()}")
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Subscriber:
    """The cloud side of a test: a paho client that collects what the broker delivers on `topic_filter`.

    `persistent`: a persistent session (with a fixed `client_id`), which the broker keeps across a disconnection,
    or with `MosquittoBroker(persistent=True)` across a restart."""

    def __init__(self, address: Tuple[str, int], topic_filter: str, client_id: str = "",
                 persistent: bool = False, timeout: float = WAIT_S) -> None:
        self.timeout = timeout
        self.messages: "queue.Queue[Tuple[str, bytes]]" = queue.Queue()
        subscribed: "queue.Queue[bool]" = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda client, *_: client.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.put(True)
        self.client.on_message = lambda client, userdata, message: self.messages.put((message.topic,
                                                                                      message.payload))
        self.client.connect(*address)
        self.client.loop_start()
        subscribed.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(self.timeout)

    def take(self, count: int, timeout: Optional[float] = None) -> List[Tuple[str, bytes]]:
        """The next `count` (topic, payload) in arrival order; queue.Empty when they do not all come within
        `timeout` (default: the subscriber's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return [self.messages.get(timeout=max(0.0, deadline - time.monotonic())) for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
