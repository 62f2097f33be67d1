"""Logging in the Greengrass v1 line format.

Greengrass writes function logs as `[<ISO-8601 UTC time>][<LEVEL>]-<file>:<line>,<message>` with WARNING spelt
WARN and CRITICAL spelt FATAL. Connector lines also carry the `LocalInferenceServiceName` as a prefix, as the
connector documentation says, so several inference services can share one log stream and still be told apart.
"""

from __future__ import annotations

import logging

# The format itself belongs to the runtime loop that configures every function process (on any Python).
from connector.runtime.lambda_runtime import GreengrassFormatter, configure_lambda_logging

__all__ = ["GreengrassFormatter", "ServiceNamePrefix", "configure_lambda_logging", "set_service_name"]


class ServiceNamePrefix(logging.Filter):
    """Prefixes every record that passes through a handler with the inference service name."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.prefix = f"{service_name}: "

    def filter(self, record: logging.LogRecord) -> bool:
        record.gg_prefix = self.prefix
        return True


def set_service_name(service_name: str) -> None:
    """From now on, every line this process logs carries the inference service name."""
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, ServiceNamePrefix)]:
            handler.removeFilter(old)
        handler.addFilter(ServiceNamePrefix(service_name))
