"""The Greengrass v1 Lambda IPC HTTP server (API version 2016-11-01).

Routes, all under `/2016-11-01/functions/<function ARN, raw>` and all requiring `Authorization: <token>`, a token
of this runtime (`credentials.py`: one per hosted function, one per client):

| method | path suffix    | who calls it                | what it does                                           |
|--------|----------------|-----------------------------|--------------------------------------------------------|
| POST   | (none)         | a caller (SDK `invoke`)     | queue an invocation, answer `X-Amz-InvocationId`       |
| GET    | (none)         | the caller, with that id    | long-poll the result; `X-Amz-Function-Error` always set |
| GET    | `/work`        | the function's runtime loop | long-poll the next invocation                          |
| POST   | `/work`        | the function's runtime loop | post the result (or a Handled error)                   |
| PUT    | `/initialized` | the function's runtime loop | report whether the handler module loaded               |

Any token may invoke; a result is collected only with the token that made the invocation; `/work` and
`/initialized` take only the token of that function itself. Anything else is a 403 naming why, logged (without the
token). `POST /2016-11-01/ggic/clients` with the control token issues a client token (`ggic env`).

The HTTP layer is bounded (`http_limits.py`): one decimal `Content-Length` per request, no `Transfer-Encoding`, the
head at most `MAX_HEAD_BYTES`, every body capped (function routes: `--max-request-bytes`; the token-free routes:
`SMALL_BODY_BYTES`), idle and per-request read deadlines, and at most `max_connections` connections. A body that is
refused is answered first and then read and dropped for a bounded time, so that a client still sending gets the
answer (413 naming the limit) rather than a reset connection.

A POST to the router function (`arn:aws:lambda:::function:GGRouter`, what greengrasssdk's `iot-data` publish
sends) goes to the `router.Router` instead of a queue: 202 with a fresh `X-Amz-InvocationId` when routed, 400 when
the client context is not a publish's, 429 when an AllOrError publish finds a target full.

Errors are answered as JSON `{"errorMessage": ...}` with a 4xx/5xx status; the IPC client raises on them.

Read-only routes answer without a token (the server listens on loopback): the Greengrass health check API
`GET`/`POST /2016-11-01/health/workers` (every function's worker, as a core reports it), `GET /health` (200 when
every function, and every connector's inference worker, can answer; 503 with the reasons otherwise) and
`GET /metrics` (Prometheus).

Each work item handed to a function with a timeout carries `Lambda-Runtime-Deadline-Ms` (epoch milliseconds, as
the AWS Lambda runtime API sends it), so the function knows how much of its time the queue has already used.
"""

from __future__ import annotations

import http.server
import json
import logging
import select
import socket
import socketserver
import sys
import time
import uuid
from typing import Callable, Dict, List, Optional, Tuple

from connector.core.credentials import CLIENT, CONTROL, FUNCTION, Credentials, Principal
from connector.core.http_limits import (
    DEFAULT_MAX_CONNECTIONS,
    IDLE_TIMEOUT_S,
    MAX_HEAD_BYTES,
    REQUEST_TIMEOUT_S,
    SEND_TIMEOUT_S,
    SMALL_BODY_BYTES,
    ConnectionSlots,
    FramingError,
    HeadTooLarge,
    RequestReader,
    RequestTimeout,
    content_length,
    linger,
    refuse_connection,
)
from connector.core.invocations import (
    EVENT,
    HANDLED,
    INVOCATION_TYPES,
    Dispatcher,
    FunctionNotFoundError,
    InvocationNotFoundError,
    QueueFullError,
    unqualified_arn,
)
from connector.core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from connector.core.metrics import RuntimeMetrics
from connector.contract.greengrass import ROUTER_FUNCTION_ARN
from connector.core.router import PublishRefusedError, PublishRejectedError, Router, parse_publish

log = logging.getLogger("ggic.ipc")

API_PREFIX = "/2016-11-01/functions/"
HEALTH_PATH = "/2016-11-01/health/workers"
READINESS_PATH = "/health"
METRICS_PATH = "/metrics"
CLIENTS_PATH = "/2016-11-01/ggic/clients"
DEADLINE_HEADER = "Lambda-Runtime-Deadline-Ms"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_POLL_SLICE_S = 1.0

# The client ARN a `ggic env` process invokes as (MY_FUNCTION_ARN), given the runtime's region and account.
ClientArn = Callable[[], str]
# Called with (function_arn, success, response_text) when a function reports its initialization.
InitializationListener = Callable[[str, bool, str, str], None]  # (function ARN, success, response, worker)
# Returns {function ARN: worker health information object} for the health check API.
HealthReporter = Callable[[], Dict[str, dict]]
# Returns the runtime's readiness report: {"ready": bool, "functions": [...]}.
ReadinessReporter = Callable[[], dict]


class IPCError(Exception):
    """An error answered to the IPC client with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def split_path(path: str) -> Tuple[str, str]:
    """`/2016-11-01/functions/<arn>[/work|/initialized]` → (arn, suffix)."""
    if not path.startswith(API_PREFIX):
        raise IPCError(404, f"no such route: {path}")
    rest = path[len(API_PREFIX):].split("?", 1)[0]
    for suffix in ("/work", "/initialized"):
        if rest.endswith(suffix):
            return rest[: -len(suffix)], suffix
    return rest, ""


class IPCServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """One thread per connection, at most `max_connections` of them; connections are kept alive, long polls hold
    their thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], dispatcher: Dispatcher, credentials: Credentials,
                 on_initialized: Optional[InitializationListener] = None,
                 workers: Optional[HealthReporter] = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 readiness: Optional[ReadinessReporter] = None,
                 metrics: Optional[RuntimeMetrics] = None,
                 router: Optional[Router] = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 client_arn: Optional[ClientArn] = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.dispatcher = dispatcher
        self.router = router
        self.credentials = credentials
        self.on_initialized = on_initialized or (lambda arn, ok, text, worker: None)
        self.workers = workers or dict
        self.max_body_bytes = max_body_bytes
        self.readiness = readiness or (lambda: {"ready": True, "functions": []})
        self.metrics = metrics
        self.client_arn = client_arn or (lambda: "arn:aws:lambda:us-east-1:000000000000:function:ggic-client")
        self.slots = ConnectionSlots(max_connections)
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self.stopping = False
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def shutdown(self) -> None:
        self.stopping = True
        super().shutdown()

    def process_request(self, request, client_address) -> None:
        """A thread for the connection when a slot is free (or an idle connection gave its slot up); else 503."""
        if not self.slots.admit(request):
            log.warning("refused a connection from %s: all %d connections are busy with requests",
                        client_address, self.slots.limit)
            refuse_connection(request, f"the Greengrass runtime is serving its limit of {self.slots.limit} "
                                       f"connections (--max-connections); retry later")
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        self.slots.release(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """A peer that went away mid-request (a stopped function's long poll) is normal: no traceback on stderr."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, socket.timeout, RequestTimeout)):
            log.debug("connection from %s closed by the peer", client_address)
            return
        log.exception("IPC connection from %s failed", client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the second waits for the peer's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: IPCServer
    principal: Optional[Principal] = None
    body: bytes = b""

    # --- plumbing ------------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.reader = RequestReader(self.connection)
        self.rfile = self.reader  # type: ignore[assignment]

    def log_message(self, fmt: str, *args) -> None:  # route access logs through logging, at DEBUG
        log.debug("%s %s", self.address_string(), fmt % args)

    def handle_one_request(self) -> None:
        """http.server's, with the deadlines, the head's size limit and the connection's slot kept."""
        slots = self.server.slots
        self.reader.expect_request(self.server.idle_timeout_s)
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            self.reader.request_started(self.server.request_timeout_s)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self._refuse_head(414, "the request line is longer than 65536 bytes")
                return
            if not self.parse_request():  # it answered the error (e.g. 431 for too many headers)
                return
            self.reader.head_done()
            if not slots.busy(self.connection):  # closed meanwhile to make room: a head that came too slowly
                self.close_connection = True
                return
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self._refuse_head(501, f"method {self.command!r} is not supported")
                return
            method()
            self.wfile.flush()
        except HeadTooLarge:
            self._refuse_head(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
        except RequestTimeout:
            self.close_connection = True
            log.debug("closed a connection from %s: no complete request in time", self.address_string())
        finally:
            self.reader.no_deadline()
            slots.idle(self.connection)

    def _refuse_head(self, status: int, message: str) -> None:
        self.close_connection = True
        self._send_error(status, message)

    def _dispatch(self, method: str) -> None:
        unread = 0  # body bytes not read yet: a connection with some cannot carry another request
        self.body, self.principal = b"", None
        try:
            try:
                unread = content_length(self.headers)
            except FramingError as exc:  # the body cannot be delimited: answer and close, reading none of it
                self.close_connection = True
                raise IPCError(exc.status, str(exc)) from None
            path = self.path.split("?", 1)[0]
            if path in (HEALTH_PATH, READINESS_PATH, METRICS_PATH):
                self.body, unread = self._read_body(unread, SMALL_BODY_BYTES, "this route's"), 0
                {HEALTH_PATH: self._health, READINESS_PATH: self._readiness, METRICS_PATH: self._metrics}[path](method)
                return
            self.principal = self._authorize()
            if path == CLIENTS_PATH:
                self.body, unread = self._read_body(unread, SMALL_BODY_BYTES, "this route's"), 0
                self._issue_client(method)
                return
            arn, suffix = split_path(self.path)
            route = {
                ("POST", ""): self._invoke,
                ("GET", ""): self._get_result,
                ("GET", "/work"): self._get_work,
                ("POST", "/work"): self._post_result,
                ("PUT", "/initialized"): self._initialized,
            }.get((method, suffix))
            if route is None:
                raise IPCError(405, f"{method} is not supported on {self.path}")
            try:
                self.body, unread = self._read_body(unread, self.server.max_body_bytes, "the runtime's",
                                                    "; `ggic run --max-request-bytes N` sets the limit"), 0
            except IPCError as exc:
                if exc.status == 413 and suffix == "" and method == "POST":
                    self._refuse(arn, "too-large")
                raise
            route(arn)
        except IPCError as exc:
            self.close_connection = self.close_connection or bool(unread)
            self._send_error(exc.status, str(exc))
            if unread and exc.status in (401, 403, 413):  # answered before the body: let the sender read it
                linger(self.connection, unread)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # never let one request take the server down
            log.exception("IPC request %s %s failed", method, self.path)
            self.close_connection = self.close_connection or bool(unread)
            self._send_error(500, f"internal error in the Greengrass runtime: {exc}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _authorize(self) -> Principal:
        supplied = self.headers.get("Authorization", "")
        principal = self.server.credentials.principal(supplied)
        if principal is None:
            self.close_connection = True  # the body, if any, is left unread
            reason = "missing" if not supplied else "not valid for this runtime"
            raise IPCError(401, f"the Authorization token is {reason}: use the AWS_CONTAINER_AUTHORIZATION_TOKEN "
                                f"a function of this runtime was given (see `ggic env`)")
        return principal

    def _forbid(self, message: str) -> None:
        """A token used for what its holder may not do: 403, and a line in the runtime's log (never the token)."""
        log.warning("refused %s %s from %s: %s", self.command, self.path, self.principal, message)
        raise IPCError(403, message)

    def _require_function(self, arn: str, action: str) -> None:
        """Only the function itself (its own token) may take its work, answer it or report its initialization."""
        principal = self.principal
        assert principal is not None
        if principal.kind == FUNCTION:
            if principal.name == arn:
                return
            if unqualified_arn(principal.name) == unqualified_arn(arn):
                try:
                    if self.server.dispatcher.queue(arn) is self.server.dispatcher.queue(principal.name):
                        return
                except FunctionNotFoundError:
                    pass
        self._forbid(f"only function {arn} itself may {action}; this token belongs to {principal}")

    def _read_body(self, length: int, limit: int, whose: str, remedy: str = "") -> bytes:
        """The request's body of `length` bytes (its Content-Length); IPCError 413 when over `limit`."""
        if length > limit:
            self.close_connection = True  # refuse before reading a byte of it
            raise IPCError(413, f"request body of {length} bytes exceeds {whose} limit of {limit} bytes{remedy}")
        if not length:
            return b""
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise IPCError(400, f"the request body ended after {len(body)} of its {length} bytes")
        return body

    def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None) -> None:
        self.connection.settimeout(SEND_TIMEOUT_S)
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _send_error(self, status: int, message: str) -> None:
        body = json.dumps({"errorMessage": message}).encode("utf-8")
        try:
            self._send(status, body, {"Content-Type": "application/json"})
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    def _client_gone(self) -> bool:
        """True when the peer closed its end (a long-polling process that died)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # --- routes --------------------------------------------------------------------------------------------

    def _health(self, method: str) -> None:
        workers = self.server.workers()
        if method == "GET":
            answer: object = list(workers.values())
        elif method == "POST":
            try:
                wanted = json.loads(self.body)["FuncArns"]
                if not isinstance(wanted, list) or not all(isinstance(arn, str) for arn in wanted):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise IPCError(400, 'Invalid request: use {"FuncArns":["function-1-arn","function-2-arn"]}')
            found: List[dict] = []
            invalid: List[str] = []
            for arn in wanted:
                worker = workers.get(unqualified_arn(arn))
                if worker is None:
                    invalid.append(arn)
                else:
                    found.append(worker)
            answer = {"Workers": found, "InvalidArns": invalid}
        else:
            raise IPCError(405, f"{method} is not supported on {HEALTH_PATH}")
        self._send(200, json.dumps(answer).encode("utf-8"), {"Content-Type": "application/json"})

    def _readiness(self, method: str) -> None:
        if method != "GET":
            raise IPCError(405, f"{method} is not supported on {READINESS_PATH}")
        report = self.server.readiness()
        self._send(200 if report.get("ready") else 503, json.dumps(report).encode("utf-8"),
                   {"Content-Type": "application/json"})

    def _metrics(self, method: str) -> None:
        if method != "GET" or self.server.metrics is None:
            raise IPCError(405 if method != "GET" else 404, f"{method} {METRICS_PATH} is not available")
        self._send(200, self.server.metrics.render(), {"Content-Type": METRICS_CONTENT_TYPE})

    def _refuse(self, arn: str, reason: str) -> None:
        if self.server.metrics is not None:
            self.server.metrics.refuse(unqualified_arn(arn), reason)

    def _issue_client(self, method: str) -> None:
        """`ggic env`: a token of its own for an outside process, issued to the holder of the control token."""
        if method != "POST":
            raise IPCError(405, f"{method} is not supported on {CLIENTS_PATH}")
        if self.principal is None or self.principal.kind != CONTROL:
            self._forbid("only the runtime's control token (in its state directory) may issue client tokens")
        arn = self.server.client_arn()
        token = self.server.credentials.issue_client(arn)
        self._send(201, json.dumps({"Token": token, "FunctionArn": arn}).encode("utf-8"),
                   {"Content-Type": "application/json", "Cache-Control": "no-store"})

    def _invoke(self, arn: str) -> None:
        if unqualified_arn(arn) == ROUTER_FUNCTION_ARN:
            self._publish()
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if invocation_type not in INVOCATION_TYPES:
            raise IPCError(400, f"X-Amz-Invocation-Type {invocation_type!r} is not one of {INVOCATION_TYPES}")
        if self.principal is None or self.principal.kind not in (FUNCTION, CLIENT):
            self._forbid(f"{self.principal} may not invoke functions")
        client_context = self.headers.get("X-Amz-Client-Context", "")
        try:
            invocation = self.server.dispatcher.submit(arn, self.body, client_context, invocation_type,
                                                       owner=self.principal.name)
        except FunctionNotFoundError as exc:
            raise IPCError(404, str(exc)) from None
        except QueueFullError as exc:
            self._refuse(arn, "busy")
            raise IPCError(429, str(exc)) from None
        status = 202 if invocation_type == EVENT else 200
        self._send(status, headers={"X-Amz-InvocationId": invocation.id})

    def _publish(self) -> None:
        """greengrasssdk's `iot-data` publish: route the body through the subscription table."""
        payload = self.body
        if self.server.router is None:
            raise IPCError(404, "this Greengrass runtime routes no publishes (it has no router)")
        try:
            publish = parse_publish(self.headers.get("X-Amz-Client-Context", ""), payload)
            self._check_source(publish.source)
            self.server.router.publish(publish)
        except PublishRejectedError as exc:
            raise IPCError(400, str(exc)) from None
        except PublishRefusedError as exc:
            self._refuse(ROUTER_FUNCTION_ARN, "busy")
            raise IPCError(429, str(exc)) from None
        self._send(202, headers={"X-Amz-InvocationId": str(uuid.uuid4())})  # greengrasssdk does not use it

    def _check_source(self, source: str) -> None:
        """A publish comes from its caller: its `source` (what subscriptions match) must be the caller's own ARN.
        A client (a process made a Lambda by `ggic env`) may also act as a Lambda this runtime does not host, as
        a plain process standing in for one does; it may not pass for a hosted function."""
        principal = self.principal
        if principal is None or principal.kind not in (FUNCTION, CLIENT):
            self._forbid(f"{principal} may not publish")
        own = principal.function_arn or principal.name
        if unqualified_arn(source) == unqualified_arn(own):
            return
        if principal.kind == CLIENT:
            try:
                self.server.dispatcher.queue(source)
            except FunctionNotFoundError:
                return
        if principal.kind == CLIENT:
            self._forbid(f"a publish's source must be the publisher's own function ARN, {own}, or a function this "
                         f"runtime does not host; this one says {source}, a function hosted here")
        self._forbid(f"a publish's source must be the publisher's own function ARN, {own}; this one says {source}")

    def _get_result(self, arn: str) -> None:
        if unqualified_arn(arn) == ROUTER_FUNCTION_ARN:
            raise IPCError(404, "a publish to GGRouter has no result to collect")
        invocation_id = self.headers.get("X-Amz-InvocationId", "")
        try:
            invocation = self.server.dispatcher.result(invocation_id)
        except InvocationNotFoundError as exc:
            raise IPCError(404, str(exc)) from None
        if self.principal is None or invocation.owner != self.principal.name:
            self._forbid(f"invocation {invocation_id} was made by another caller: only the token that made an "
                         f"invocation may collect its result")
        while not invocation.wait(_POLL_SLICE_S):
            if self.server.stopping:
                raise IPCError(503, "the Greengrass runtime is stopping")
            if self._client_gone():  # nobody will come back for this answer
                self.server.dispatcher.forget(invocation_id)
                self.close_connection = True
                return
        self._send(200, invocation.result or b"", {"X-Amz-Function-Error": invocation.function_error})
        self.server.dispatcher.forget(invocation_id)

    def _get_work(self, arn: str) -> None:
        self._require_function(arn, "take its work")
        try:
            queue = self.server.dispatcher.queue(arn)
        except FunctionNotFoundError as exc:
            raise IPCError(404, str(exc)) from None
        while True:
            if self.server.stopping:
                raise IPCError(503, "the Greengrass runtime is stopping")
            invocation = queue.take(_POLL_SLICE_S, still_wanted=lambda: not self._client_gone(),
                                    worker=self.principal.worker if self.principal else "")
            if invocation is not None:
                break
            if self._client_gone():
                self.close_connection = True
                return
        headers = {"X-Amz-InvocationId": invocation.id, "X-Amz-Client-Context": invocation.client_context}
        remaining_ms = invocation.remaining_ms()
        if remaining_ms is not None:
            headers[DEADLINE_HEADER] = str(int(time.time() * 1000) + remaining_ms)
        self._send(200, invocation.payload, headers)

    def _post_result(self, arn: str) -> None:
        self._require_function(arn, "answer its invocations")
        payload = self.body
        invocation_id = self.headers.get("X-Amz-InvocationId", "")
        function_error = self.headers.get("X-Amz-Function-Error", "")
        if function_error not in ("", HANDLED):
            raise IPCError(400, f"X-Amz-Function-Error {function_error!r} is not 'Handled'")
        try:
            queue = self.server.dispatcher.queue(arn)
            queue.complete(invocation_id, payload, function_error)
        except (FunctionNotFoundError, InvocationNotFoundError) as exc:
            raise IPCError(404, str(exc)) from None
        self._send(202)

    def _initialized(self, arn: str) -> None:
        self._require_function(arn, "report its initialization")
        body = self.body
        try:
            report = json.loads(body or b"{}")
            success, response = bool(report.get("Success")), str(report.get("Response", ""))
        except (ValueError, AttributeError):
            raise IPCError(400, "the initialization result must be JSON {\"Success\": bool, \"Response\": str}")
        try:
            self.server.dispatcher.queue(arn)
        except FunctionNotFoundError as exc:
            raise IPCError(404, str(exc)) from None
        self.server.on_initialized(arn, success, response, self.principal.worker if self.principal else "")
        self._send(202)
