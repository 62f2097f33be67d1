"""HTTP client for the Greengrass v1 core's Lambda IPC server.

Everything a Lambda does with the core (invoking another function, fetching its own work, reporting results)
is a plain HTTP request to ``http://<endpoint>:<port>/2016-11-01/functions/<function ARN>[/work|/initialized]``
carrying the container's auth token.  Each client keeps one keep-alive connection per thread, because a
pinned Lambda makes one or two requests per invocation and a fresh TCP handshake for each is wasted latency.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
from typing import Mapping, Optional, Union

logger = logging.getLogger(__name__)

API_VERSION = '2016-11-01'
DEFAULT_ENDPOINT = 'localhost'
DEFAULT_PORT = 8000
CONNECT_TIMEOUT_S = 10.0

# The router ARN greengrasssdk publishes through; it never produces a result to wait for.
ROUTER_FUNCTION_ARN = 'arn:aws:lambda:::function:GGRouter'

HEADER_AUTH = 'Authorization'
HEADER_INVOCATION_ID = 'X-Amz-InvocationId'
HEADER_CLIENT_CONTEXT = 'X-Amz-Client-Context'
HEADER_INVOCATION_TYPE = 'X-Amz-Invocation-Type'
HEADER_FUNCTION_ERROR = 'X-Amz-Function-Error'
HEADER_DEADLINE = 'Lambda-Runtime-Deadline-Ms'

# Errors meaning "the peer dropped the connection before answering": worth one retry on a reused connection,
# since a keep-alive connection may have been closed by the server while it sat idle.  (If the server had in
# fact handled the request and then died before answering, the retry repeats it; we accept that rare case.)
_DROPPED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)

Payload = Union[bytes, bytearray, memoryview, str, None]


class IPCException(Exception):
    """The IPC request failed: runtime unreachable, connection broken, or an HTTP error status.

    ``status`` is the HTTP status code when the runtime answered, else None; ``error_message`` is the
    runtime's own explanation when it gave one.
    """

    def __init__(self, message: str, status: Optional[int] = None, error_message: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_message = error_message

    def __reduce__(self):  # keep status and error_message across pickling (e.g. multiprocessing)
        return type(self), (self.args[0], self.status, self.error_message)


class WorkItem:
    """One invocation as the core hands it to a function (or as the function hands its result back)."""

    def __init__(self, invocation_id: str, payload: Payload, client_context: Optional[str],
                 deadline_ms: Optional[int] = None) -> None:
        self.invocation_id = invocation_id
        self.payload = payload
        self.client_context = client_context
        # When the core must have the answer (epoch ms), if the function has a timeout and the core says so.
        self.deadline_ms = deadline_ms

    def __repr__(self) -> str:
        size = None if self.payload is None else len(self.payload)
        return 'WorkItem(invocation_id={!r}, payload=<{} bytes>, client_context={!r})'.format(
            self.invocation_id, size, self.client_context)


class GetWorkResultOutput:
    """The invoked function's answer; ``func_err`` is 'Handled', 'Unhandled', '' or None (header absent)."""

    def __init__(self, payload: bytes, func_err: Optional[str]) -> None:
        self.payload = payload
        self.func_err = func_err

    def __repr__(self) -> str:
        return 'GetWorkResultOutput(payload=<{} bytes>, func_err={!r})'.format(len(self.payload), self.func_err)


class _Response:
    """What we keep of an HTTP response once its body is fully read (so the connection can be reused)."""

    def __init__(self, status: int, reason: str, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


def _encode_payload(payload: object) -> Union[bytes, bytearray, memoryview]:
    """Turn a payload into something http.client sends as-is; bytes-like objects pass through uncopied."""
    if payload is None:
        return b''
    if isinstance(payload, str):
        return payload.encode('utf-8')
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return payload
    if hasattr(payload, 'read'):  # greengrasssdk documents "bytes or seekable file-like object"
        data = payload.read()
        return data.encode('utf-8') if isinstance(data, str) else data
    try:
        return memoryview(payload)  # any other buffer (e.g. array.array, numpy array)
    except TypeError:
        raise TypeError('IPC payload must be bytes-like, str, a readable file object or None, not {}'.format(
            type(payload).__name__)) from None


def _header_text(value: Union[bytes, str, None]) -> str:
    """Client context arrives as base64 bytes (iot-data) or str (lambda invoke); headers need text."""
    if value is None:
        return ''
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode('ascii')
    return value


def _render_initialization_error(error: Union[BaseException, str]) -> str:
    if isinstance(error, BaseException):
        return '{}("{}")'.format(type(error).__name__, error)
    return str(error)


def _server_error_text(body: bytes) -> Optional[str]:
    """The runtime answers errors as JSON {"errorMessage": ...}; fall back to the raw text otherwise."""
    if not body:
        return None
    text = body.decode('utf-8', errors='replace')
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get('errorMessage'):
        return str(decoded['errorMessage'])
    text = text.strip()
    return text[:1000] + '...' if len(text) > 1000 else text


class IPCClient:
    """Talks to the core's IPC server on behalf of one Lambda container.

    The port is, in order of precedence: the ``port`` argument, the value given to ``set_gg_daemon_port``,
    the ``GG_DAEMON_PORT`` environment variable, 8000.  The port and auth token are read when the client is
    built, so tests can set the environment first.  ``timeout`` bounds socket reads of the requests that are
    not long polls (None = wait forever); ``get_work`` and ``get_work_result`` always wait without limit.
    """

    _port_override: Optional[int] = None

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, port: Optional[int] = None,
                 timeout: Optional[float] = None) -> None:
        self.endpoint = endpoint
        self.port = self._resolve_port(port)
        self.timeout = timeout
        self._auth_token = os.environ.get('AWS_CONTAINER_AUTHORIZATION_TOKEN', '')
        if not self._auth_token:
            logger.debug('AWS_CONTAINER_AUTHORIZATION_TOKEN is not set; IPC requests will carry an empty token')
        self._local = threading.local()

    @staticmethod
    def set_gg_daemon_port(port: Optional[int]) -> None:
        """Make clients built from now on use this port instead of GG_DAEMON_PORT (None undoes it)."""
        IPCClient._port_override = None if port is None else int(port)

    @classmethod
    def _resolve_port(cls, port: Optional[int]) -> int:
        if port is not None:
            return int(port)
        if cls._port_override is not None:
            return cls._port_override
        text = os.environ.get('GG_DAEMON_PORT')
        if not text:
            return DEFAULT_PORT
        try:
            return int(text)
        except ValueError:
            raise ValueError('GG_DAEMON_PORT must be a port number, got {!r}'.format(text)) from None

    # --- the IPC operations ---------------------------------------------------------------------------------

    def post_work(self, function_arn: str, payload: Payload, client_context: Union[bytes, str, None],
                  invocation_type: str = 'RequestResponse') -> str:
        """Queue an invocation of ``function_arn``; return its invocation id for ``get_work_result``."""
        headers = {
            HEADER_CLIENT_CONTEXT: _header_text(client_context),
            HEADER_INVOCATION_TYPE: invocation_type,
        }
        response = self._request('POST', self._function_path(function_arn), _encode_payload(payload), headers)
        invocation_id = response.headers.get(HEADER_INVOCATION_ID)
        if invocation_id is None:
            if invocation_type == 'RequestResponse':
                raise IPCException('Greengrass runtime accepted the invocation of {} but returned no {} header'
                                   .format(function_arn, HEADER_INVOCATION_ID), status=response.status)
            invocation_id = ''  # nobody waits for an Event invocation's result
        return invocation_id

    def get_work(self, function_arn: str) -> WorkItem:
        """Wait (without time limit) for the next invocation addressed to ``function_arn``."""
        response = self._request('GET', self._function_path(function_arn) + '/work', None, {}, long_poll=True)
        deadline = response.headers.get(HEADER_DEADLINE, '')
        return WorkItem(invocation_id=response.headers.get(HEADER_INVOCATION_ID, ''),
                        payload=response.body,
                        client_context=response.headers.get(HEADER_CLIENT_CONTEXT),
                        deadline_ms=int(deadline) if deadline.isdigit() else None)

    def post_work_result(self, function_arn: str, work_item: WorkItem) -> None:
        """Hand back the result of ``work_item`` (its payload is the function's answer)."""
        self._request('POST', self._function_path(function_arn) + '/work', _encode_payload(work_item.payload),
                      {HEADER_INVOCATION_ID: work_item.invocation_id})

    def post_handler_err(self, function_arn: str, invocation_id: str, handler_err: str,
                         error_type: Optional[str] = None) -> None:
        """Report that the handler failed; the caller sees a 'Handled' function error with this message."""
        error = {'errorMessage': str(handler_err)}
        if error_type:
            error['errorType'] = error_type
        self._request('POST', self._function_path(function_arn) + '/work', json.dumps(error).encode('utf-8'),
                      {HEADER_INVOCATION_ID: invocation_id, HEADER_FUNCTION_ERROR: 'Handled'})

    def get_work_result(self, function_arn: str, invocation_id: str) -> GetWorkResultOutput:
        """Wait (without time limit) for the answer to an invocation made with ``post_work``."""
        if function_arn == ROUTER_FUNCTION_ARN:
            return GetWorkResultOutput(payload=b'', func_err='')  # the router never answers
        response = self._request('GET', self._function_path(function_arn), None,
                                 {HEADER_INVOCATION_ID: invocation_id}, long_poll=True)
        return GetWorkResultOutput(payload=response.body, func_err=response.headers.get(HEADER_FUNCTION_ERROR))

    def put_initialization_result(self, function_arn: str,
                                  error: Union[BaseException, str, None] = None) -> None:
        """Tell the core whether this function finished starting; an error makes the deployment fail."""
        if error is None:
            result = {'Success': True, 'Response': ''}
        else:
            result = {'Success': False, 'Response': _render_initialization_error(error)}
        self._request('PUT', self._function_path(function_arn) + '/initialized',
                      json.dumps(result).encode('utf-8'), {})

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's state is collected)."""
        connection = getattr(self._local, 'connection', None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # --- transport ------------------------------------------------------------------------------------------

    @staticmethod
    def _function_path(function_arn: str) -> str:
        return '/{}/functions/{}'.format(API_VERSION, function_arn)  # the ARN goes in raw, colons and all

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, 'connection', None)
        if connection is None:
            connection = http.client.HTTPConnection(self.endpoint, self.port, timeout=CONNECT_TIMEOUT_S)
            self._local.connection = connection
        return connection

    def _open(self, connection: http.client.HTTPConnection) -> None:
        connection.connect()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the server's delayed ACK
        # can hold the body's last segment back for tens of milliseconds.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _request(self, method: str, path: str, body: Optional[Union[bytes, bytearray, memoryview]],
                 headers: Mapping[str, str], long_poll: bool = False) -> _Response:
        all_headers = {HEADER_AUTH: self._auth_token}
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
                connection.request(method, path, body=body, headers=all_headers)
                raw = connection.getresponse()
            except _DROPPED as error:
                connection.close()
                if reused and attempt == 1:
                    logger.debug('IPC connection to %s was dropped while idle (%s); reconnecting', where, error)
                    continue
                raise IPCException('Connection to the Greengrass runtime at {} was closed during {} {}: {}'
                                   .format(where, method, path, error)) from error
            except ConnectionRefusedError as error:
                connection.close()
                raise IPCException('Greengrass runtime at {} is unreachable: {}'.format(where, error)) from error
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise IPCException('IPC request {} {} to the Greengrass runtime at {} failed: {}'
                                   .format(method, path, where, error)) from error
            try:
                response_body = raw.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise IPCException('Reading the Greengrass runtime\'s answer to {} {} failed: {}'
                                   .format(method, path, error)) from error
            break
        logger.debug('IPC %s %s -> %d (%d bytes)', method, path, raw.status, len(response_body))
        if raw.status >= 400:
            server_text = _server_error_text(response_body)
            raise IPCException('Greengrass runtime answered {} {} to {} {}{}'.format(
                raw.status, raw.reason, method, path, ': ' + server_text if server_text else ''),
                status=raw.status, error_message=server_text)
        return _Response(raw.status, raw.reason, raw.headers, response_body)
