"""HTTP request parsing for the IPC server: the standard library (what `ipc_server.py` uses, with
`http_limits.py`'s checks) against h11 and httptools, side by side in one run.

Two measures, each in interleaved rounds (stdlib, h11, httptools, stdlib, ...) so that a busy machine slows all
alike:

- `parse`: the request head and body of an SDK invoke (`Authorization`, `X-Amz-Client-Context`,
  `X-Amz-Invocation-Type`, `Content-Length`, a 20 kB JPEG-sized body) parsed from bytes in memory, µs per request;
- `round trip`: a loopback server of each kind (a thread per connection, as the IPC server runs) answering that
  request with a 200 over one keep-alive connection from `http.client` (what the IPC SDK uses), µs per request.

`python -m bench.http_parsing [--requests N] [--rounds R] [--json PATH]` prints a table and writes JSON. h11 and
httptools are not dependencies of ggic: a library that is not installed is reported as such.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import io
import json
import socket
import socketserver
import statistics
import threading
import time
from typing import Callable, Dict, List, Optional

from connector.core.http_limits import RequestReader, content_length

BODY = bytes(range(256)) * 80  # 20 kB
HEADERS = {
    "Host": "localhost:8000",
    "Accept-Encoding": "identity",
    "Authorization": "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6",
    "X-Amz-Client-Context": "eyJjdXN0b20iOiB7IkNvbnRlbnQtVHlwZSI6ICJpbWFnZS9qcGVnIn19",
    "X-Amz-Invocation-Type": "RequestResponse",
    "Content-Length": str(len(BODY)),
}
PATH = "/2016-11-01/functions/arn:aws:lambda:us-west-2:aws:function:GG-ML-INF-image-classification-svc"
REQUEST = (f"POST {PATH} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()) + "\r\n").encode() \
    + BODY


# --- parsing in memory ------------------------------------------------------------------------------------

def parse_stdlib(data: bytes) -> int:
    """What http.server does with a request (request line, `http.client.parse_headers`), plus our framing check."""
    stream = io.BytesIO(data)
    request_line = stream.readline(65537).decode("iso-8859-1").rstrip("\r\n")
    method, path, version = request_line.split()
    headers = http.client.parse_headers(stream)
    length = content_length(headers)
    body = stream.read(length)
    assert method == "POST" and len(body) == len(BODY) and headers["Authorization"]
    return len(body)


def parse_h11(data: bytes) -> int:
    import h11

    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    size = 0
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Request):
            assert dict(event.headers)[b"authorization"]
        elif isinstance(event, h11.Data):
            size += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
    assert size == len(BODY)
    return size


class _HttptoolsRequest:
    def __init__(self) -> None:
        self.headers: Dict[bytes, bytes] = {}
        self.body: List[bytes] = []
        self.url = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def parse_httptools(data: bytes) -> int:
    import httptools

    request = _HttptoolsRequest()
    httptools.HttpRequestParser(request).feed_data(data)
    size = sum(map(len, request.body))
    assert request.complete and size == len(BODY) and request.headers[b"authorization"]
    return size


# --- loopback servers --------------------------------------------------------------------------------------

class _StdlibHandler(http.server.BaseHTTPRequestHandler):
    """The IPC server's HTTP layer: http.server with RequestReader and the framing check."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.rfile = RequestReader(self.connection)  # type: ignore[assignment]

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(content_length(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _h11_connection(sock: socket.socket) -> None:
    import h11

    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connection = h11.Connection(h11.SERVER)
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            if not data:
                return
            connection.receive_data(data)
        elif isinstance(event, h11.EndOfMessage):
            sock.sendall(connection.send(h11.Response(status_code=200, headers=[("Content-Length", "0")])) +
                         connection.send(h11.EndOfMessage()))
            connection.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return


def _httptools_connection(sock: socket.socket) -> None:
    import httptools

    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    class Protocol:
        def on_message_complete(self) -> None:
            sock.sendall(answer)

    parser = httptools.HttpRequestParser(Protocol())
    while True:
        data = sock.recv(65536)
        if not data:
            return
        parser.feed_data(data)


def _socket_server(serve_connection: Callable[[socket.socket], None]) -> socketserver.TCPServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            serve_connection(self.request)

    return _Server(("127.0.0.1", 0), Handler)


def round_trips(port: int, count: int) -> float:
    """µs per request over one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    began = time.perf_counter()
    for _ in range(count):
        connection.request("POST", PATH, BODY, {k: v for k, v in HEADERS.items() if k not in ("Host",)})
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    elapsed = time.perf_counter() - began
    connection.close()
    return elapsed / count * 1e6


def available(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and kind")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    kinds = {"stdlib": (parse_stdlib, _Server(("127.0.0.1", 0), _StdlibHandler))}
    versions = {"stdlib": "http.server"}
    if available("h11"):
        import h11
        kinds["h11"] = (parse_h11, _socket_server(_h11_connection))
        versions["h11"] = h11.__version__
    if available("httptools"):
        import httptools
        kinds["httptools"] = (parse_httptools, _socket_server(_httptools_connection))
        versions["httptools"] = httptools.__version__
    for _, server in kinds.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()

    parse_us: Dict[str, List[float]] = {name: [] for name in kinds}
    trip_us: Dict[str, List[float]] = {name: [] for name in kinds}
    for _ in range(args.rounds):
        for name, (parse, server) in kinds.items():
            began = time.perf_counter()
            for _ in range(args.requests):
                parse(REQUEST)
            parse_us[name].append((time.perf_counter() - began) / args.requests * 1e6)
            trip_us[name].append(round_trips(server.server_address[1], args.requests // 4))
    for _, server in kinds.values():
        server.shutdown()

    results = {name: {"version": versions[name], "parse_us": round(statistics.median(parse_us[name]), 2),
                      "round_trip_us": round(statistics.median(trip_us[name]), 1)} for name in kinds}
    base = results["stdlib"]
    for entry in results.values():
        entry["parse_vs_stdlib"] = round(entry["parse_us"] / base["parse_us"], 2)
        entry["round_trip_vs_stdlib"] = round(entry["round_trip_us"] / base["round_trip_us"], 2)
    missing = [name for name in ("h11", "httptools") if name not in kinds]

    print(f"IPC request parsing, median of {args.rounds} interleaved rounds of {args.requests} requests "
          f"(round trips: {args.requests // 4}); a {len(REQUEST)}-byte invoke")
    print(f"{'parser':<12}{'version':<14}{'parse (us)':>12}{'x stdlib':>10}{'round trip (us)':>18}{'x stdlib':>10}")
    for name, entry in results.items():
        print(f"{name:<12}{entry['version']:<14}{entry['parse_us']:>12.2f}{entry['parse_vs_stdlib']:>10.2f}"
              f"{entry['round_trip_us']:>18.1f}{entry['round_trip_vs_stdlib']:>10.2f}")
    for name in missing:
        print(f"{name:<12}not installed")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"request_bytes": len(REQUEST), "rounds": args.rounds, "requests": args.requests,
                       "results": results, "not_installed": missing}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
