"""A TCP proxy on 127.0.0.1 that holds every HTTP request for a while before passing it on.

Put in front of moto_server it makes each S3 upload slow, so tests can show that the ML Feedback connector's
callers do not wait for uploads and that its RequestLimit queue fills. Bounded: it stops with the test.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Tuple

_METHODS = (b"GET ", b"PUT ", b"POST", b"HEAD", b"DELE")


class DelayingProxy:
    def __init__(self, upstream: Tuple[str, int], delay_s: float) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._threads: List[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> "DelayingProxy":
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            server = socket.create_connection(self.upstream, timeout=10)
            self._spawn(self._pipe, client, server, True)
            self._spawn(self._pipe, server, client, False)

    def _pipe(self, source: socket.socket, target: socket.socket, delay_requests: bool) -> None:
        source.settimeout(0.2)
        try:
            while not self._stopping.is_set():
                try:
                    data = source.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                if delay_requests and data[:4] in _METHODS:  # the start of a request: hold it
                    self.requests += 1
                    time.sleep(self.delay_s)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
