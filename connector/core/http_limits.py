"""What keeps the IPC server's HTTP layer bounded against a hostile local process.

The request head and body are parsed by the standard library's `http.server` (measured against h11 and httptools
in `bench/http_parsing.py`, see docs/security.md); this module adds what it leaves open:

- **framing**: one `Content-Length`, decimal digits only, no `Transfer-Encoding` (`framing_problem`);
- **head size**: the request line and headers together at most `MAX_HEAD_BYTES` (`RequestReader`);
- **time**: a connection waiting for its next request is closed after `IDLE_TIMEOUT_S`; once a request line has
  arrived, its headers and body must arrive within `REQUEST_TIMEOUT_S` (a deadline for the whole request, not per
  read, so trickling bytes does not extend it); a response that the peer does not read in `SEND_TIMEOUT_S` ends
  the connection;
- **connections**: at most `max_connections` at once (`ConnectionSlots`); when all are taken, the connection that
  has waited longest for its next request (or for the rest of its head) is closed to make room, and when every
  one is busy with a request the newcomer gets an immediate 503.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from typing import Dict, List, Optional

MAX_HEAD_BYTES = 256 * 1024      # request line + headers (a feedback publish's client context is ~20 KB)
IDLE_TIMEOUT_S = 120.0           # a keep-alive connection with no request in progress
REQUEST_TIMEOUT_S = 30.0         # from the request line to the last byte of the body
SEND_TIMEOUT_S = 30.0            # a response the peer does not read
DEFAULT_MAX_CONNECTIONS = 256
SMALL_BODY_BYTES = 64 * 1024     # the token-free routes' bodies (a health check's list of ARNs)
LINGER_S = 2.0                   # after refusing a body, how long its bytes are read and dropped
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")


class RequestTimeout(Exception):
    """The peer did not send its request (head and body) in time."""


class HeadTooLarge(Exception):
    """The request line and headers exceed MAX_HEAD_BYTES."""


class _DeadlineSocket(io.RawIOBase):
    """The socket's reading side, under a deadline that covers every read of one request."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline: Optional[float] = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeout()
            self._sock.settimeout(remaining)
        try:
            return self._sock.recv_into(buffer)
        except socket.timeout:
            raise RequestTimeout() from None


class RequestReader:
    """The handler's `rfile`: buffered reads under a per-request deadline, and a byte budget for the head."""

    def __init__(self, sock: socket.socket) -> None:
        self._raw = _DeadlineSocket(sock)
        self._buffered = io.BufferedReader(self._raw, 64 * 1024)
        self._head_budget: Optional[int] = None

    def expect_request(self, idle_s: float) -> None:
        """Waiting for the next request line: at most `idle_s`, and the head budget starts."""
        self._raw.deadline = time.monotonic() + idle_s
        self._head_budget = MAX_HEAD_BYTES

    def request_started(self, timeout_s: float) -> None:
        """The request line is in: the rest of the request must arrive within `timeout_s`."""
        self._raw.deadline = time.monotonic() + timeout_s

    def head_done(self) -> None:
        self._head_budget = None

    def no_deadline(self) -> None:
        self._raw.deadline = None

    def readline(self, limit: int = -1) -> bytes:
        if self._head_budget is not None:
            cap = self._head_budget + 1
            limit = cap if limit is None or limit < 0 else min(limit, cap)
        line = self._buffered.readline(limit)
        if self._head_budget is not None:
            self._head_budget -= len(line)
            if self._head_budget < 0:
                raise HeadTooLarge()
        return line

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise ValueError("the IPC server never reads a body to the end of the connection")
        return self._buffered.read(size)

    def close(self) -> None:
        self._buffered.close()


class FramingError(Exception):
    """A request whose body cannot be delimited safely; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def content_length(headers) -> int:
    """The body's length from the headers (0 when none is declared); FramingError when it cannot be trusted."""
    codings = headers.get_all("Transfer-Encoding") or []
    if codings:
        raise FramingError(501, f"Transfer-Encoding {', '.join(codings)!r} is not supported by this runtime: "
                                f"send the body with a Content-Length")
    lengths = headers.get_all("Content-Length") or []
    if len(lengths) > 1:
        raise FramingError(400, f"{len(lengths)} Content-Length headers ({', '.join(map(repr, lengths))}): "
                                f"send exactly one")
    if not lengths:
        return 0
    text = lengths[0].strip()
    if not _CONTENT_LENGTH.fullmatch(text):
        raise FramingError(400, f"Content-Length {lengths[0]!r} is not a non-negative decimal number")
    return int(text)


class ConnectionSlots:
    """At most `limit` connections at once; each is idle (between requests) or busy (a request in progress)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._idle_since: Dict[socket.socket, Optional[float]] = {}  # None: busy with a request
        self.evicted = 0
        self.refused = 0

    def admit(self, sock: socket.socket) -> bool:
        """Take a slot for a new connection, closing the longest-idle one when all are taken; False when every
        connection is busy with a request (the caller refuses the newcomer)."""
        with self._lock:
            if len(self._idle_since) >= self.limit:
                idle: List[socket.socket] = sorted(
                    (s for s, since in self._idle_since.items() if since is not None),
                    key=lambda s: self._idle_since[s])
                if not idle:
                    self.refused += 1
                    return False
                victim = idle[0]
                del self._idle_since[victim]
                self.evicted += 1
                try:  # wakes the handler's blocked read with end-of-file; its thread then ends
                    victim.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._idle_since[sock] = time.monotonic()
            return True

    def busy(self, sock: socket.socket) -> bool:
        """The connection's request line is in; False when the connection was closed to make room meanwhile."""
        with self._lock:
            if sock not in self._idle_since:
                return False
            self._idle_since[sock] = None
            return True

    def idle(self, sock: socket.socket) -> None:
        with self._lock:
            if sock in self._idle_since:
                self._idle_since[sock] = time.monotonic()

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._idle_since.pop(sock, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle_since)


def refuse_connection(sock: socket.socket, message: str) -> None:
    """Answer 503 on a connection that gets no thread, without waiting for the peer; then close it."""
    body = ('{"errorMessage": "%s"}' % message.replace('"', "'")).encode("utf-8")
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode("ascii")
    try:
        sock.setblocking(False)
        sock.send(head + body)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def linger(sock: socket.socket, unread: int, seconds: float = LINGER_S) -> None:
    """After answering a request whose body was refused: stop sending, then read and drop up to `unread` bytes
    of it for at most `seconds`, so the peer, still sending, gets to read the answer instead of a reset."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline = time.monotonic() + seconds
    chunk = bytearray(256 * 1024)
    while unread > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            sock.settimeout(remaining)
            got = sock.recv_into(chunk, min(len(chunk), unread))
        except OSError:
            return
        if not got:
            return
        unread -= got
