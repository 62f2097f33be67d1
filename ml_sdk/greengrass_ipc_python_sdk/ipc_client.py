"""HTTP client for the Greengrass v1 core's Lambda IPC server.

Everything a Lambda does with the core (invoking another function, fetching its own work, reporting results)
is a plain HTTP request to ``http://<endpoint>:<port>/2016-11-01/functions/<function ARN>[/work|/initialized]``
carrying the container's auth token.  Each client keeps one keep-alive connection per thread, because a
pinned Lambda makes one or two requests per invocation and a fresh TCP handshake for each is wasted latency.

This module runs in every Lambda process, on Python 2.7 and 3.7+, and is called by SDK releases that were written
against different cores (greengrasssdk 1.3.0 passes ``port=8000``; 1.6.x passes none): its names and signatures
are the ones those releases use.
"""
import errno
import json
import logging
import os
import socket
import threading
import warnings

try:
    import http.client as httplib
except ImportError:  # Python 2
    import httplib

logger = logging.getLogger(__name__)

API_VERSION = '2016-11-01'
DEFAULT_ENDPOINT = 'localhost'
DEFAULT_PORT = 8000
CONNECT_TIMEOUT_S = 10.0
# How long to wait for the answer the core sent before reading a body it refused (e.g. 413, over its limit).
REFUSAL_READ_TIMEOUT_S = 5.0

# The router ARN greengrasssdk publishes through; it never produces a result to wait for.
ROUTER_FUNCTION_ARN = 'arn:aws:lambda:::function:GGRouter'

HEADER_AUTH = 'Authorization'
HEADER_INVOCATION_ID = 'X-Amz-InvocationId'
HEADER_CLIENT_CONTEXT = 'X-Amz-Client-Context'
HEADER_INVOCATION_TYPE = 'X-Amz-Invocation-Type'
HEADER_FUNCTION_ERROR = 'X-Amz-Function-Error'
HEADER_DEADLINE = 'Lambda-Runtime-Deadline-Ms'

# Socket errors meaning "the peer dropped the connection before answering": worth one retry on a reused
# connection, since a keep-alive connection may have been closed by the server while it sat idle.  (If the server
# had in fact handled the request and then died before answering, the retry repeats it; we accept that rare case.)
_DROPPED_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED)
_TEXT = type(u'')


class IPCException(Exception):
    """The IPC request failed: runtime unreachable, connection broken, or an HTTP error status.

    ``status`` is the HTTP status code when the runtime answered, else None; ``error_message`` is the
    runtime's own explanation when it gave one.
    """

    def __init__(self, message, status=None, error_message=None):
        super(IPCException, self).__init__(message)
        self.status = status
        self.error_message = error_message

    def __reduce__(self):  # keep status and error_message across pickling (e.g. multiprocessing)
        return type(self), (self.args[0], self.status, self.error_message)


class WorkItem(object):
    """One invocation as the core hands it to a function (or as the function hands its result back)."""

    def __init__(self, invocation_id, payload, client_context, deadline_ms=None):
        self.invocation_id = invocation_id
        self.payload = payload
        self.client_context = client_context
        # When the core must have the answer (epoch ms), if the function has a timeout and the core says so.
        self.deadline_ms = deadline_ms

    def __repr__(self):
        size = None if self.payload is None else len(self.payload)
        return 'WorkItem(invocation_id={!r}, payload=<{} bytes>, client_context={!r})'.format(
            self.invocation_id, size, self.client_context)


class GetWorkResultOutput(object):
    """The invoked function's answer; ``func_err`` is 'Handled', 'Unhandled', '' or None (header absent)."""

    def __init__(self, payload, func_err):
        self.payload = payload
        self.func_err = func_err

    def __repr__(self):
        return 'GetWorkResultOutput(payload=<{} bytes>, func_err={!r})'.format(len(self.payload), self.func_err)


class _Response(object):
    """What we keep of an HTTP response once its body is fully read (so the connection can be reused)."""

    def __init__(self, status, reason, raw, body):
        self.status = status
        self.reason = reason
        self._raw = raw
        self.body = body

    def header(self, name, default=None):
        return self._raw.getheader(name, default)


def _encode_payload(payload):
    """Turn a payload into something httplib sends as-is; bytes and bytearray pass through uncopied.

    Accepted, as the SDKs document them: bytes, bytearray, text (sent as UTF-8), a readable (seekable) file
    object (read from its current position), any other buffer of bytes, or None (no body).
    """
    if payload is None:
        return b''
    if isinstance(payload, (bytes, bytearray)):
        return payload
    if isinstance(payload, _TEXT):
        return payload.encode('utf-8')
    if hasattr(payload, 'read'):
        return _encode_payload(payload.read())
    try:
        view = memoryview(payload)
    except TypeError:
        raise TypeError('IPC payload must be bytes, bytearray, str, a readable file object or None, not {}'
                        .format(type(payload).__name__))
    return view if view.itemsize == 1 and view.ndim == 1 else view.tobytes()


def _native_str(value):
    """Header values and paths as this Python's native str: Python 2's httplib fails on unicode mixed with bytes."""
    if value is None:
        return ''
    if isinstance(value, bytearray):
        value = bytes(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # Python 3 bytes (base64 client contexts)
        return value.decode('ascii')
    return value.encode('ascii')  # Python 2 unicode


def _render_initialization_error(error):
    if isinstance(error, BaseException):
        return '{}("{}")'.format(type(error).__name__, error)
    return str(error)


def _server_error_text(body):
    """The runtime answers errors as JSON {"errorMessage": ...}; fall back to the raw text otherwise."""
    if not body:
        return None
    text = body.decode('utf-8', 'replace')
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get('errorMessage'):
        return decoded['errorMessage']
    text = text.strip()
    return text[:1000] + '...' if len(text) > 1000 else text


def with_cause(exception, cause):
    """``exception`` with ``cause`` as its ``__cause__``: ``raise with_cause(e, c)`` is ``raise e from c`` on every
    Python this package runs on."""
    exception.__cause__ = cause
    return exception


class IPCClient(object):
    """Talks to the core's IPC server on behalf of one Lambda container.

    The port is the value given to ``set_gg_daemon_port``, else the ``GG_DAEMON_PORT`` environment variable
    (the core's ggDaemonPort), else 8000.  A ``port`` argument is accepted for the SDK releases that pass one
    (greengrasssdk 1.3.0 to 1.5.0 always pass 8000) and ignored, as newer cores do, so those releases reach a
    core on any port.  The port and auth token are read when the client is built.  ``timeout`` bounds socket
    reads of the requests that are not long polls (None = wait forever); ``get_work`` and ``get_work_result``
    always wait without limit.
    """

    _port_override = None

    def __init__(self, endpoint=DEFAULT_ENDPOINT, port=None, timeout=None):
        if port is not None:
            warnings.warn('IPCClient(port=...) is deprecated and ignored: the port is GG_DAEMON_PORT',
                          DeprecationWarning, stacklevel=2)
            logger.debug('ignoring IPCClient(port=%r): using GG_DAEMON_PORT', port)
        self.endpoint = endpoint
        self.port = self._resolve_port()
        self.timeout = timeout
        self._auth_token = os.environ.get('AWS_CONTAINER_AUTHORIZATION_TOKEN', '')
        if not self._auth_token:
            logger.debug('AWS_CONTAINER_AUTHORIZATION_TOKEN is not set; IPC requests will carry an empty token')
        self._local = threading.local()

    @staticmethod
    def set_gg_daemon_port(port):
        """Make clients built from now on use this port instead of GG_DAEMON_PORT (None undoes it)."""
        IPCClient._port_override = None if port is None else int(port)

    @classmethod
    def _resolve_port(cls):
        if cls._port_override is not None:
            return cls._port_override
        text = os.environ.get('GG_DAEMON_PORT')
        if not text:
            return DEFAULT_PORT
        try:
            return int(text)
        except ValueError:
            raise ValueError('GG_DAEMON_PORT must be a port number, got {!r}'.format(text))

    # --- the IPC operations ---------------------------------------------------------------------------------

    def post_work(self, function_arn, payload, client_context, invocation_type='RequestResponse'):
        """Queue an invocation of ``function_arn``; return its invocation id for ``get_work_result``.

        ``client_context`` is base64 text or bytes (greengrasssdk and the ML SDK send bytes), or None.
        """
        headers = {
            HEADER_CLIENT_CONTEXT: _native_str(client_context),
            HEADER_INVOCATION_TYPE: _native_str(invocation_type),
        }
        response = self._request('POST', self._function_path(function_arn), _encode_payload(payload), headers)
        invocation_id = response.header(HEADER_INVOCATION_ID)
        if invocation_id is None:
            if invocation_type == 'RequestResponse':
                raise IPCException('Greengrass runtime accepted the invocation of {} but returned no {} header'
                                   .format(function_arn, HEADER_INVOCATION_ID), status=response.status)
            invocation_id = ''  # nobody waits for an Event invocation's result
        return invocation_id

    def get_work(self, function_arn):
        """Wait (without time limit) for the next invocation addressed to ``function_arn``."""
        response = self._request('GET', self._function_path(function_arn) + '/work', None, {}, long_poll=True)
        deadline = response.header(HEADER_DEADLINE, '')
        return WorkItem(invocation_id=response.header(HEADER_INVOCATION_ID, ''),
                        payload=response.body,
                        client_context=response.header(HEADER_CLIENT_CONTEXT),
                        deadline_ms=int(deadline) if deadline.isdigit() else None)

    def post_work_result(self, function_arn, work_item):
        """Hand back the result of ``work_item`` (its payload is the function's answer)."""
        self._request('POST', self._function_path(function_arn) + '/work', _encode_payload(work_item.payload),
                      {HEADER_INVOCATION_ID: _native_str(work_item.invocation_id)})

    def post_handler_err(self, function_arn, invocation_id, handler_err, error_type=None):
        """Report that the handler failed; the caller sees a 'Handled' function error with this message."""
        error = {'errorMessage': handler_err if isinstance(handler_err, (str, _TEXT)) else str(handler_err)}
        if error_type:
            error['errorType'] = error_type
        self._request('POST', self._function_path(function_arn) + '/work', json.dumps(error).encode('utf-8'),
                      {HEADER_INVOCATION_ID: _native_str(invocation_id), HEADER_FUNCTION_ERROR: 'Handled'})

    def get_work_result(self, function_arn, invocation_id):
        """Wait (without time limit) for the answer to an invocation made with ``post_work``."""
        if function_arn == ROUTER_FUNCTION_ARN:
            return GetWorkResultOutput(payload=b'', func_err='')  # the router never answers
        response = self._request('GET', self._function_path(function_arn), None,
                                 {HEADER_INVOCATION_ID: _native_str(invocation_id)}, long_poll=True)
        return GetWorkResultOutput(payload=response.body, func_err=response.header(HEADER_FUNCTION_ERROR))

    def put_initialization_result(self, function_arn, error=None):
        """Tell the core whether this function finished starting; an error makes the deployment fail."""
        if error is None:
            result = {'Success': True, 'Response': ''}
        else:
            result = {'Success': False, 'Response': _render_initialization_error(error)}
        self._request('PUT', self._function_path(function_arn) + '/initialized',
                      json.dumps(result).encode('utf-8'), {})

    def close(self):
        """Close this thread's connection (others close when their thread's state is collected)."""
        connection = getattr(self._local, 'connection', None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # --- transport ------------------------------------------------------------------------------------------

    @staticmethod
    def _function_path(function_arn):
        return '/{}/functions/{}'.format(API_VERSION, _native_str(function_arn))  # the ARN goes in raw

    def _connection(self):
        connection = getattr(self._local, 'connection', None)
        if connection is None:
            connection = httplib.HTTPConnection(self.endpoint, self.port, timeout=CONNECT_TIMEOUT_S)
            self._local.connection = connection
        return connection

    @staticmethod
    def _open(connection):
        connection.connect()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the server's delayed ACK
        # can hold the body's last segment back for tens of milliseconds.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @staticmethod
    def _refusal(connection, send_error):
        """The core's answer when sending failed because the core stopped reading: it refuses a body (too large,
        bad token) by answering before reading it and then closing. Re-raises ``send_error`` when none came."""
        sock = connection.sock
        if sock is None:
            raise send_error
        try:
            sock.settimeout(REFUSAL_READ_TIMEOUT_S)
            raw = connection.getresponse()
        except (socket.error, httplib.HTTPException):
            raise send_error
        if raw.status < 400:
            raise send_error
        logger.debug('IPC request refused before its body was sent (%s): %d', send_error, raw.status)
        return raw

    def _request(self, method, path, body, headers, long_poll=False):
        all_headers = {HEADER_AUTH: _native_str(self._auth_token)}
        all_headers.update(headers)
        where = '{}:{}'.format(self.endpoint, self.port)
        attempt = 0
        while True:
            attempt += 1
            connection = self._connection()
            reused = connection.sock is not None
            try:
                if not reused:
                    self._open(connection)
                connection.sock.settimeout(None if long_poll else self.timeout)
                logger.debug('IPC %s %s (%s connection)', method, path, 'reused' if reused else 'new')
                try:
                    connection.request(method, path, body, all_headers)
                except (socket.error, httplib.HTTPException) as send_error:
                    raw = self._refusal(connection, send_error)
                else:
                    raw = connection.getresponse()
                response_body = raw.read()
            except (socket.error, httplib.HTTPException) as error:
                connection.close()
                code = getattr(error, 'errno', None)
                dropped = isinstance(error, httplib.BadStatusLine) or code in _DROPPED_ERRNOS
                if dropped and reused and attempt == 1:
                    logger.debug('IPC connection to %s was dropped while idle (%s); reconnecting', where, error)
                    continue
                if code == errno.ECONNREFUSED:
                    raise with_cause(IPCException('Greengrass runtime at {} is unreachable: {}'.format(where, error)),
                                     error)
                if dropped:
                    raise with_cause(IPCException('Connection to the Greengrass runtime at {} was closed during {} '
                                                 '{}: {}'.format(where, method, path, error)), error)
                raise with_cause(IPCException('IPC request {} {} to the Greengrass runtime at {} failed: {}'
                                             .format(method, path, where, error)), error)
            break
        logger.debug('IPC %s %s -> %d (%d bytes)', method, path, raw.status, len(response_body))
        if raw.status >= 400:
            server_text = _server_error_text(response_body)
            raise IPCException('Greengrass runtime answered {} {} to {} {}{}'.format(
                raw.status, raw.reason, method, path, ': ' + server_text if server_text else ''),
                status=raw.status, error_message=server_text)
        return _Response(raw.status, raw.reason, raw, response_body)
