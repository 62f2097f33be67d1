"""A hostile local process against the real `ggic run` IPC server (issue 16, findings 2, 5 and 6).

Everything goes over loopback to one real runtime (the digits model, a 200 kB body cap, 16 connections at most, 4 s
idle and request timeouts, two user Lambdas: `echo` and `hostile`); every attack is bounded in bytes and time and
stops by itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from sklearn.datasets import load_digits

from bench.harness import GGICRuntime, connector_entry
from examples.models.digits import digit_png

REPO = Path(__file__).resolve().parent.parent
SERVICE = "imageClassification"
CONNECTOR_ARN = f"arn:aws:lambda:us-west-2:aws:function:GG-ML-INF-image-classification-{SERVICE}"
ECHO_ARN = "arn:aws:lambda:us-west-2:000000000000:function:echo"
HOSTILE_ARN = "arn:aws:lambda:us-west-2:000000000000:function:hostile"
BODY_CAP = 200_000
MAX_CONNECTIONS = 16
TIMEOUT_S = 4.0  # --ipc-idle-timeout and --ipc-request-timeout
HEALTH = "/2016-11-01/health/workers"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, digits_model):
    with GGICRuntime(tmp_path_factory.mktemp("ipc-abuse"), [connector_entry(digits_model, "imageClassification")],
                     lambdas=[str(REPO / "tests" / "lambdas" / "echo.py"),
                              str(REPO / "tests" / "lambdas" / "hostile.py")],
                     run_args=["--max-request-bytes", str(BODY_CAP), "--max-connections", str(MAX_CONNECTIONS),
                               "--ipc-idle-timeout", str(TIMEOUT_S), "--ipc-request-timeout", str(TIMEOUT_S)],
                     extra_env={"AWS_REGION": "us-west-2"}) as rt:
        yield rt


def rss_kb(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")))


def threads(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Threads:")))


def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = 10) -> Tuple[int, str]:
    """Send `head` (and `body`) as they are; the status and text of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def clients(runtime) -> List[str]:
    """Two `ggic env` runs: two clients, each with a token of its own."""
    return [runtime.client_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] for _ in range(2)]


def invoke_raw(port: int, token: str, arn: str, payload: bytes) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", f"/2016-11-01/functions/{arn}", body=payload, headers={"Authorization": token})
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
    return response.getheader("X-Amz-InvocationId")


def collect_raw(port: int, token: str, arn: str, invocation_id: str) -> Tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/2016-11-01/functions/{arn}",
                       headers={"Authorization": token, "X-Amz-InvocationId": invocation_id})
    response = connection.getresponse()
    return response.status, response.read()


# --- finding 2: framing and unbounded reads ------------------------------------------------------------------

@pytest.mark.parametrize("lengths, status, words", [
    (["-1"], 400, "Content-Length '-1' is not a non-negative decimal number"),
    (["abc"], 400, "Content-Length 'abc' is not a non-negative decimal number"),
    (["5", "10"], 400, "2 Content-Length headers"),
    (["5", "5"], 400, "2 Content-Length headers"),
], ids=["negative", "non-numeric", "conflicting", "duplicated"])
def test_a_content_length_that_cannot_be_trusted_is_400_on_every_route(runtime, clients, lengths, status, words):
    for path, token in ((HEALTH, None), (f"/2016-11-01/functions/{ECHO_ARN}", clients[0])):
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"Content-Length: {value}\r\n" for value in lengths)
        head += f"Authorization: {token}\r\n" if token else ""
        answer = raw_exchange(runtime.port, (head + "\r\n").encode(), b"hello")
        assert answer[0] == status and words in answer[1], (path, answer)


def test_a_transfer_encoding_is_refused_with_the_reason(runtime, clients):
    head = (f"POST /2016-11-01/functions/{ECHO_ARN} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: {clients[0]}\r\n\r\n")
    status, text = raw_exchange(runtime.port, head.encode(), b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 501 and "Transfer-Encoding 'chunked' is not supported" in text, text


def test_streaming_to_the_health_route_with_a_negative_length_does_not_grow_the_server(runtime):
    """Finding 2: `Content-Length: -1` made the server read until the client closed (200 MB grew it by 206 MB)."""
    pid = runtime.process.pid
    before = rss_kb(pid)
    streamed, chunk = 0, b"{" * (1 << 20)
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
        sock.sendall(f"POST {HEALTH} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".encode())
        try:
            while streamed < 96 << 20 and time.monotonic() - began < 30:
                sock.sendall(chunk)
                streamed += len(chunk)
        except OSError:  # the server answered and closed: the rest of the stream is refused
            pass
    grown = rss_kb(pid) - before
    print(f"streamed {streamed >> 20} MiB before the server closed; its RSS grew by {grown} KB")
    assert streamed < 32 << 20, f"the server kept reading: {streamed >> 20} MiB"
    assert grown < 16 * 1024, f"the server grew by {grown} KB"
    assert raw_exchange(runtime.port, f"GET {HEALTH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())[0] == 200


def test_the_token_free_health_route_caps_its_body(runtime):
    body = json.dumps({"FuncArns": [ECHO_ARN] * 20_000}).encode()  # ~1 MB of ARNs
    head = f"POST {HEALTH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    status, text = raw_exchange(runtime.port, head, body)
    assert status == 413 and f"request body of {len(body)} bytes exceeds this route's limit of 65536" in text, text
    small = json.dumps({"FuncArns": [ECHO_ARN]}).encode()
    head = f"POST {HEALTH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(small)}\r\n\r\n".encode()
    status, text = raw_exchange(runtime.port, head, small)
    assert status == 200 and json.loads(text)["Workers"][0]["FuncArn"] == ECHO_ARN


def test_a_head_over_its_limit_is_431(runtime):
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (n, b"a" * 8000)
                                                             for n in range(40)) + b"\r\n"
    status, text = raw_exchange(runtime.port, head)
    assert status == 431 and "larger than 262144 bytes" in text, text


def test_idle_connections_are_capped_and_a_normal_invoke_is_still_answered(runtime, sdk_env):
    """Finding 2: 500 idle connections held 507 threads. Beyond --max-connections the longest-idle connection is
    closed to make room, so the server's threads stay bounded and a real caller still gets in."""
    pid = runtime.process.pid
    time.sleep(0.5)  # connections of earlier tests are closed by now
    baseline = threads(pid)
    held: List[socket.socket] = []
    try:
        for number in range(4 * MAX_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", runtime.port), timeout=10)
            if number % 2:  # half of them a slowloris: a request line, then nothing
                sock.sendall(b"POST /2016-11-01/functions/x HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        time.sleep(1.0)
        grown = threads(pid) - baseline
        print(f"{len(held)} idle connections: the server's threads grew by {grown}")
        assert grown <= MAX_CONNECTIONS + 2, f"{grown} threads for {len(held)} idle connections"
        closed = 0
        for sock in held:
            sock.settimeout(0.05)
            try:  # closed to make room, or (none idle) answered 503 and closed
                closed += sock.recv(1) in (b"", b"H")
            except socket.timeout:  # still open: one of the connections holding a slot
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= len(held) - MAX_CONNECTIONS, f"only {closed} of {len(held)} closed by the server"

        sdk_env(runtime)
        import greengrass_machine_learning_sdk as ml

        png = digit_png(load_digits().images[0])
        answer = ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName=SERVICE, ContentType="image/png", Body=png)
        assert len(json.loads(answer["Body"].read())) == 10
    finally:
        for sock in held:
            sock.close()


def closed_after(sock: socket.socket, limit_s: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes `sock` (sending `trickle` every 0.5 s meanwhile); fails after `limit_s`."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        readable, _, _ = select.select([sock], [], [], 0.5)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - began
            except ConnectionResetError:
                return time.monotonic() - began
        elif trickle:
            try:
                sock.sendall(trickle)
            except OSError:
                return time.monotonic() - began
    raise AssertionError(f"the server kept the connection open for {limit_s} s")


def test_an_idle_connection_is_closed_after_the_idle_timeout(runtime):
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
        waited = closed_after(sock, TIMEOUT_S + 20)
    assert TIMEOUT_S - 0.5 <= waited <= TIMEOUT_S + 10, waited


def test_a_request_trickled_in_is_cut_at_the_request_timeout(runtime):
    """A slowloris: the request line, then a header every 0.5 s. The deadline covers the whole request, so
    trickling does not extend it."""
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
        sock.sendall(f"POST {HEALTH} HTTP/1.1\r\n".encode())
        waited = closed_after(sock, TIMEOUT_S + 20, trickle=b"X-Slow: 1\r\n")
    assert TIMEOUT_S - 0.5 <= waited <= TIMEOUT_S + 10, waited


# --- finding 6: a body over the cap reaches the caller as the documented error ------------------------------

def test_a_body_over_the_cap_reaches_the_sdk_as_an_inference_exception_naming_the_limit(runtime, sdk_env):
    sdk_env(runtime)
    import greengrass_machine_learning_sdk as ml

    oversized = b"\xff\xd8\xff" + bytes(8 << 20)  # 8 MiB: far more than the sockets buffer
    with pytest.raises(ml.GreengrassInferenceException) as info:
        ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName=SERVICE, ContentType="image/jpeg", Body=oversized)
    assert f"request body of {len(oversized)} bytes exceeds the runtime's limit of {BODY_CAP} bytes" in \
        str(info.value), info.value
    png = digit_png(load_digits().images[1])  # the same client, the same thread: the next call is answered
    answer = ml.client("inference").invoke_inference_service(
        AlgoType="image-classification", ServiceName=SERVICE, ContentType="image/png", Body=png)
    assert len(json.loads(answer["Body"].read())) == 10


# --- finding 5: one token for everyone --------------------------------------------------------------------

def invoke_hostile(runtime, token: str, victim: str, invocation_id: str = "forged") -> Dict[str, dict]:
    event = json.dumps({"victim": victim, "invocation_id": invocation_id}).encode()
    invocation = invoke_raw(runtime.port, token, HOSTILE_ARN, event)
    status, body = collect_raw(runtime.port, token, HOSTILE_ARN, invocation)
    assert status == 200, body
    return json.loads(body)


def test_a_function_cannot_take_answer_initialize_or_publish_as_another_function(runtime, clients):
    token = clients[0]
    for victim in (ECHO_ARN, CONNECTOR_ARN):
        outcome = invoke_hostile(runtime, token, victim)
        for attempt, action in (("take_work", "take its work"), ("post_result", "answer its invocations"),
                                ("initialized", "report its initialization")):
            result = outcome[attempt]
            assert result["status"] == 403, (victim, attempt, result)
            assert f"only function {victim} itself may {action}" in result["body"], result
            assert f"this token belongs to function {HOSTILE_ARN}" in result["body"], result
        forged = outcome["publish_as"]  # a publish whose source names the victim: subscriptions would trust it
        assert forged["status"] == 403, forged
        assert f"must be the publisher's own function ARN, {HOSTILE_ARN}; this one says {victim}" in forged["body"]
        assert outcome["publish_as_itself"]["status"] == 202, outcome["publish_as_itself"]
    # the victims still serve, and the runtime logged the attempts without the token
    echo = invoke_raw(runtime.port, token, ECHO_ARN, b'{"n": 1}')
    status, body = collect_raw(runtime.port, token, ECHO_ARN, echo)
    assert status == 200 and json.loads(body)["event"] == {"n": 1}
    system_log = runtime.output()
    assert f"refused GET /2016-11-01/functions/{ECHO_ARN}/work from function {HOSTILE_ARN}" in system_log
    assert outcome["token_prefix"] not in system_log


def test_a_client_cannot_take_a_functions_work_or_collect_another_clients_result(runtime, clients):
    first, second = clients
    assert first != second
    status, text = raw_exchange(runtime.port, f"GET /2016-11-01/functions/{CONNECTOR_ARN}/work HTTP/1.1\r\n"
                                              f"Host: x\r\nAuthorization: {first}\r\n\r\n".encode())
    assert status == 403 and "this token belongs to client" in text, text
    invocation = invoke_raw(runtime.port, first, ECHO_ARN, b'{"secret": 1}')
    status, body = collect_raw(runtime.port, second, ECHO_ARN, invocation)
    assert status == 403 and b"was made by another caller" in body, body
    status, body = collect_raw(runtime.port, first, ECHO_ARN, invocation)
    assert status == 200 and json.loads(body)["event"] == {"secret": 1}


def test_tokens_are_per_process_private_and_only_the_control_token_issues_them(runtime, clients):
    token = clients[0]
    control = (runtime.state_dir / "control-token").read_text().strip()
    assert (runtime.state_dir / "control-token").stat().st_mode & 0o077 == 0
    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN" not in (runtime.state_dir / "env").read_text()
    for holder, status in ((token, 403), ("not-a-token", 401), (control, 201)):
        answer = raw_exchange(runtime.port, f"POST /2016-11-01/ggic/clients HTTP/1.1\r\nHost: x\r\n"
                                            f"Authorization: {holder}\r\nContent-Length: 0\r\n\r\n".encode())
        assert answer[0] == status, answer
    # the control token issues tokens, it does not invoke
    head = (f"POST /2016-11-01/functions/{ECHO_ARN} HTTP/1.1\r\nHost: x\r\nAuthorization: {control}\r\n"
            f"Content-Length: 2\r\n\r\n{{}}").encode()
    assert raw_exchange(runtime.port, head)[0] == 403
    issued = base64.b64encode(token.encode())  # nothing of a token reaches the logs, in any form
    logs = runtime.output() + "".join(path.read_text(errors="replace")
                                      for path in runtime.state_dir.rglob("*.log"))
    assert token not in logs and control not in logs and issued.decode() not in logs
