"""The Greengrass v1 log line: `[2020-02-20T01:05:20.372Z][INFO]-model.py:42,imageClassification: message`.

Greengrass writes function logs with WARNING spelt WARN and CRITICAL spelt FATAL. A connector's lines also carry
its `LocalInferenceServiceName` as a prefix, as the connector documentation says, so several inference services can
share one log stream and still be told apart. Function processes (the runtime loop, on Python 2.7 and 3.7+; the
Lambda site holds a copy of this file as `ggic_logformat.py`), the core's function logs and the connectors use it,
so it is written for Python 2.7 and 3 and imports only the standard library.
"""
import logging
import sys
import time

_LEVEL_NAMES = {'WARNING': 'WARN', 'CRITICAL': 'FATAL'}


class GreengrassFormatter(logging.Formatter):
    """Greengrass's log line: `[2020-02-20T01:05:20.372Z][INFO]-model.py:42,imageClassification: message`.

    WARNING is spelt WARN and CRITICAL FATAL, as a core writes them; `gg_prefix` (a connector's service name, set
    by a filter) goes before the message, so several services can share a log stream and still be told apart.
    """

    converter = time.gmtime

    def __init__(self):
        logging.Formatter.__init__(self, '[%(asctime)s][%(gg_level)s]-%(filename)s:%(lineno)d,%(gg_prefix)s%(message)s')

    def formatTime(self, record, datefmt=None):
        return time.strftime('%Y-%m-%dT%H:%M:%S', self.converter(record.created)) + '.%03dZ' % record.msecs

    def format(self, record):
        record.gg_level = _LEVEL_NAMES.get(record.levelname, record.levelname)
        if not hasattr(record, 'gg_prefix'):
            record.gg_prefix = ''
        return logging.Formatter.format(self, record)


def configure_lambda_logging(stream=None, level=logging.INFO):
    """Root logging for a function process: INFO and up, Greengrass format, to stderr (the runtime files it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(GreengrassFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class ServiceNamePrefix(logging.Filter):
    """Prefixes every record that passes through it with a service name (`gg_prefix`)."""

    def __init__(self, service_name):
        logging.Filter.__init__(self)
        self.prefix = '{}: '.format(service_name)

    def filter(self, record):
        record.gg_prefix = self.prefix
        return True


def set_service_name(service_name):
    """From now on, every line this process logs carries the service name (a connector in its own process)."""
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, ServiceNamePrefix)]:
            handler.removeFilter(old)
        handler.addFilter(ServiceNamePrefix(service_name))


def prefix_logger(logger, service_name):
    """Every line logged through `logger` itself carries the service name (a connector hosted in the runtime's
    process, which logs through a logger of its own)."""
    for old in [f for f in logger.filters if isinstance(f, ServiceNamePrefix)]:
        logger.removeFilter(old)
    logger.addFilter(ServiceNamePrefix(service_name))
