"""Logging in the Greengrass v1 line format.

Greengrass writes function logs as `[<ISO-8601 UTC time>][<LEVEL>]-<file>:<line>,<message>` with WARNING spelt
WARN and CRITICAL spelt FATAL. Connector lines also carry the `LocalInferenceServiceName` as a prefix, as the
connector documentation says, so several inference services can share one log stream and still be told apart.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}


class GreengrassFormatter(logging.Formatter):
    """`[2020-02-20T01:05:20.372Z][INFO]-model.py:42,imageClassification: message`."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s][%(gg_level)s]-%(filename)s:%(lineno)d,%(gg_prefix)s%(message)s")

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + ".%03dZ" % record.msecs

    def format(self, record: logging.LogRecord) -> str:
        record.gg_level = _LEVEL_NAMES.get(record.levelname, record.levelname)
        if not hasattr(record, "gg_prefix"):
            record.gg_prefix = ""
        return super().format(record)


class ServiceNamePrefix(logging.Filter):
    """Prefixes every record that passes through a handler with the inference service name."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.prefix = f"{service_name}: "

    def filter(self, record: logging.LogRecord) -> bool:
        record.gg_prefix = self.prefix
        return True


def configure_lambda_logging(stream=None, level: int = logging.INFO) -> logging.Handler:
    """Root logging for a function process: INFO and up, Greengrass format, to stderr (the runtime files it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(GreengrassFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def set_service_name(service_name: str) -> None:
    """From now on, every line this process logs carries the inference service name."""
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, ServiceNamePrefix)]:
            handler.removeFilter(old)
        handler.addFilter(ServiceNamePrefix(service_name))
