"""Native hosting: how our runtime runs a connector in its own process, without the Lambda-protocol hop.

On a Greengrass core a connector is a long-lived Lambda: a function process whose runtime loop long-polls the core
for work over HTTP. Inside our runtime both sides are ours, so the core hands each invocation straight to the
connector (`HostedConnector.handle`, the same handler a Lambda runs), and the connector's inference workers remain
the only other processes. A connector offers this with a factory named in the catalog (`"hosted"` in
`schemas/connectors.json`, `module:function`); the core loads it by that name and gives it `HostServices`, so the
core imports no connector, and the connector reaches the core only through these services.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Mapping, Optional, Protocol, Tuple, Union

from connector.contract.environment import (
    CONNECTOR_ARN_ENV,
    CONNECTOR_ID_ENV,
    ENGINE_ENV,
    MAX_IMAGE_PIXELS_ENV,
    MAX_IMAGE_SCANS_ENV,
    MODEL_CACHE_ENV,
    WORKERS_ENV,
)
from connector.contract.status import SupervisorStatus


@dataclass(frozen=True)
class ConnectorSettings:
    """What `ggic run` sets for every connector it hosts (its flags), beside each connector's own parameters."""

    model_cache: Optional[Path] = None
    engine: Optional[str] = None              # "mxnet", "onnxruntime", "opencv"; None: the platform default
    workers: Union[int, str] = 1              # inference workers, or "auto"
    max_image_pixels: Optional[int] = None
    max_image_scans: Optional[int] = None

    def environment(self) -> Dict[str, str]:
        """The same settings as environment variables: how a connector run as a Lambda process receives them."""
        env = {}
        if self.model_cache is not None:
            env[MODEL_CACHE_ENV] = str(self.model_cache)
        if self.engine:
            env[ENGINE_ENV] = self.engine
        if self.workers != 1:
            env[WORKERS_ENV] = str(self.workers)
        if self.max_image_pixels:
            env[MAX_IMAGE_PIXELS_ENV] = str(self.max_image_pixels)
        if self.max_image_scans:
            env[MAX_IMAGE_SCANS_ENV] = str(self.max_image_scans)
        return env


def connector_environment(parameters: Mapping[str, str], settings: ConnectorSettings, connector_arn: str,
                          connector_id: str) -> Dict[str, str]:
    """What a connector finds in its environment beside the core's variables, hosted either way: its parameters
    (as a core passes them), the runtime's settings, and which catalog connector it is."""
    env = dict(parameters)
    env.update(settings.environment())
    env.update({CONNECTOR_ARN_ENV: connector_arn, CONNECTOR_ID_ENV: connector_id})
    return env


# (function ARN, payload, the client context's `custom`) → (answer payload, function error: "" or Handled/Unhandled)
Invoke = Callable[[str, bytes, Mapping[str, Any]], Tuple[bytes, str]]


@dataclass
class HostServices:
    """What the core gives a connector it hosts natively."""

    function_arn: str
    connector_arn: str
    connector_id: str
    region: str
    parameters: Mapping[str, str]
    settings: ConnectorSettings
    log: logging.Logger                           # its lines go to the function's log file, Greengrass format
    capture_output: Callable[[BinaryIO], None]    # copy a child process's output into the function's log
    publish: Callable[[str, Any], None]           # (topic, payload): a message from this function, routed by the
                                                  # group's subscriptions as a Lambda's publish is
    invoke: Invoke                                # call another function of the group and wait for its answer
    extra_environment: Dict[str, str] = field(default_factory=dict)

    def environment(self) -> Dict[str, str]:
        """The environment a Lambda-hosted copy of this connector would have (this process's, its parameters and
        the runtime's settings): what its child processes get."""
        env = dict(os.environ)
        env.update(self.extra_environment)
        env.update(connector_environment(self.parameters, self.settings, self.connector_arn, self.connector_id))
        return env


class HostedConnector(Protocol):
    """A connector running inside the runtime's process, started and ready when its factory returns."""

    concurrency: int   # how many invocations it takes at once

    def handle(self, event: bytes, context: Any) -> Any:
        """One invocation, as a Lambda handler gets it (`context.client_context.custom`, `aws_request_id`,
        `get_remaining_time_in_millis()`); raise to answer with a Handled error."""

    def status(self) -> Optional[SupervisorStatus]:
        """Its inference workers, when it has some."""

    def stop(self) -> None:
        ...


class EntryPointError(ImportError):
    """A catalog entry's `hosted` factory cannot be imported."""


def load_factory(entry_point: str) -> Callable[[HostServices], HostedConnector]:
    """`package.module:function` → the function (imported now)."""
    module_name, _, name = entry_point.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise EntryPointError(f"cannot load the connector entry point {entry_point!r}: {exc}") from exc
    return factory
