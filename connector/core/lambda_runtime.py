"""The Python Lambda runtime loop that runs inside each function's process.

What a Greengrass core's `lambda_runtime.py` does for a long-lived function: import the handler module (its
module-level code runs now, as in the connector usage example), report initialization, then forever: take the next
invocation, build the event and a Greengrass-like `context`, call `function_handler(event, context)` and post the
result or the error.

It runs on the Python of the function's runtime (python2.7, python3.7, ... or the runtime's own), so it is written
for Python 2.7 and 3.7+ and imports nothing but the standard library and the core-side modules. `functions.py`
starts it as a script from the Lambda site (`lambda_site.py`: this file beside `greengrass_common` and
`greengrass_ipc_python_sdk`, as on a core), in the function's own directory, with the core's environment
(`MY_FUNCTION_ARN`, `AWS_CONTAINER_AUTHORIZATION_TOKEN`, `GG_DAEMON_PORT`, ...) plus `GGIC_HANDLER`
(`package.module.function` or `/path/to/file.py:function`). The function's directory comes first on `sys.path`, so
the SDK copies a Lambda bundles win over the site's.
"""
import base64
import binascii
import importlib
import json
import logging
import os
import sys
import time

try:  # beside this file in a Lambda site (lambda_site.py copies these modules of the contract there)
    from ggic_environment import HANDLER_ENV
    from ggic_logformat import configure_lambda_logging
except ImportError:  # imported from the connector package
    from connector.contract.environment import HANDLER_ENV
    from connector.contract.logformat import configure_lambda_logging

log = logging.getLogger('lambda_runtime')

_TEXT = type(u'')
_PYTHON2 = sys.version_info[0] == 2


class ClientContext(object):
    """`context.client_context`: what the caller put in `X-Amz-Client-Context` (base64 JSON)."""

    def __init__(self, raw):
        decoded = {}
        if raw:
            try:
                decoded = json.loads(base64.b64decode(raw).decode('utf-8') or '{}')
            except (binascii.Error, TypeError, ValueError):
                log.warning('ignoring a client context that is not base64 JSON')
        if not isinstance(decoded, dict):
            decoded = {}
        self.client = decoded.get('client')
        self.custom = decoded.get('custom') or {}
        self.env = decoded.get('env')

    def __repr__(self):
        return 'ClientContext(custom={!r})'.format(self.custom)


class Context(object):
    """The `context` argument Greengrass gives a Python handler."""

    def __init__(self, function_arn, invocation_id, client_context, deadline_ms=None):
        self.invoked_function_arn = function_arn
        name_and_qualifier = function_arn.split(':function:', 1)[-1].split(':')
        self.function_name = name_and_qualifier[0]
        self.function_version = name_and_qualifier[1] if len(name_and_qualifier) > 1 else '$LATEST'
        self.aws_request_id = invocation_id
        self.client_context = ClientContext(client_context)
        self.identity = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        """As in AWS Lambda: what is left of the function's timeout (None when the function has no timeout)."""
        if self._deadline_ms is None:
            return None
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return 'Context(function_name={!r}, aws_request_id={!r})'.format(self.function_name, self.aws_request_id)


def _load_file(path, name):
    """Import the module in `path` under `name` (its code runs now)."""
    if _PYTHON2:
        import imp
        return imp.load_source(name, path)
    import importlib.util
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError('cannot load a Python module from {}'.format(path))
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def load_handler(spec):
    """Import `package.module.function` or `/path/to/file.py:function` (module code runs now)."""
    if '.py:' in spec or spec.endswith('.py'):
        path_text, _, function_name = spec.partition('.py')
        path = os.path.abspath(path_text + '.py')
        function_name = function_name.lstrip(':') or 'function_handler'
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        module = _load_file(path, os.path.splitext(os.path.basename(path))[0])
    else:
        module_name, _, function_name = spec.rpartition('.')
        module = importlib.import_module(module_name)
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise AttributeError('handler {!r} not found in {}'.format(function_name, spec))
    return handler


def decode_event(payload, encoding):
    """The handler's event: the raw bytes for binary encoding, else the JSON-decoded payload ({} when empty)."""
    if encoding == 'binary':
        return payload
    if not payload:
        return {}
    return json.loads(payload.decode('utf-8'))


def encode_result(result, encoding='json'):
    """The answer's bytes: bytes-like results as they are, anything else as JSON (None becomes null).

    On Python 2, where `str` is both text and bytes, a `str` result is raw bytes only for binary encoding.
    """
    if isinstance(result, (bytearray, memoryview)):
        return bytes(result) if not _PYTHON2 else bytes(bytearray(result))
    if isinstance(result, bytes) and (not _PYTHON2 or encoding == 'binary'):
        return result
    return json.dumps(result).encode('utf-8')


def serve(handler, function_arn, encoding, client):
    """Take invocations one at a time, forever (a long-lived function handles its queue in order)."""
    from greengrass_ipc_python_sdk.ipc_client import IPCException, WorkItem

    while True:
        item = client.get_work(function_arn)
        context = Context(function_arn, item.invocation_id, item.client_context, item.deadline_ms)
        error = None
        try:
            event = decode_event(item.payload, encoding)
            result = encode_result(handler(event, context), encoding)
        except Exception as exc:  # a Handled error: the caller gets it, the function goes on
            if getattr(exc, 'expected', False):  # a refused request the handler has logged already
                log.debug('[%s] %s: %s', item.invocation_id, type(exc).__name__, exc)
            else:
                log.error('[%s] %s: %s', item.invocation_id, type(exc).__name__, exc, exc_info=True)
            error = (error_text(exc), type(exc).__name__)
        try:
            if error is None:
                client.post_work_result(function_arn, WorkItem(item.invocation_id, result, None))
            else:
                client.post_handler_err(function_arn, item.invocation_id, *error)
        except IPCException as exc:
            if exc.status != 404:
                raise
            log.warning('[%s] the answer came too late, the runtime had answered already: %s',
                        item.invocation_id, exc.error_message or exc)


def error_text(exc):
    """A Handled error's message: the exception's text, else its type's name."""
    try:
        text = _TEXT(exc) if _PYTHON2 else str(exc)
    except UnicodeError:  # Python 2: a bytes message that is not ASCII
        text = str(exc).decode('utf-8', 'replace')
    return text or type(exc).__name__


def main():
    configure_lambda_logging()
    function_arn = os.environ['MY_FUNCTION_ARN']
    handler_spec = os.environ[HANDLER_ENV]
    encoding = os.environ.get('ENCODING_TYPE', 'json')

    # The core's client first: a Lambda's own directory must not replace the loop's IPC client.
    from greengrass_ipc_python_sdk.ipc_client import IPCClient

    client = IPCClient()
    sys.path.insert(0, os.getcwd())  # the function's directory: what its package bundles comes first
    try:
        handler = load_handler(handler_spec)
    except BaseException as exc:  # report why, then stop: the runtime decides whether to retry
        log.critical('function %s failed to initialize: %s: %s', function_arn, type(exc).__name__, exc,
                     exc_info=True)
        client.put_initialization_result(function_arn, exc)
        return 1
    client.put_initialization_result(function_arn)
    log.info('function %s initialized on Python %s, handler %s', function_arn,
             '.'.join(str(part) for part in sys.version_info[:3]), handler_spec)
    serve(handler, function_arn, encoding, client)
    return 0


if __name__ == '__main__':
    sys.exit(main())
