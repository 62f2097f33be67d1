"""Limits and isolation with the real runtime and a real model: memory, time, crashes, a full queue, a body cap.

Faults are made the way they happen in the field, on the real worker process: an image whose decoding outgrows the
memory limit, a worker frozen with SIGSTOP (stuck in inference), SIGKILL and SIGSEGV. No test hook in our code.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import threading
import time
import urllib.request
from typing import Callable, Dict, List

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from bench.harness import GGICRuntime, connector_entry, ggic
from examples.models.digits import digit_png

SERVICE = "imageClassification"
CONNECTOR_LOG = f"GG-ML-INF-image-classification-{SERVICE}"


# --- helpers ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> List[bytes]:
    return [digit_png(image) for image in load_digits().images[:8]]


def big_jpeg(side: int) -> bytes:
    """A smooth side×side photo-like JPEG: small on the wire, side*side*3 bytes once decoded."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    image = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side))],
                     axis=-1).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return encoded.tobytes()


class Outcome:
    def __init__(self) -> None:
        self.probabilities = None
        self.error = None
        self.sent = time.monotonic()
        self.elapsed = None


def invoke(body: bytes, content_type: str = "image/png") -> Outcome:
    import greengrass_machine_learning_sdk as ml

    outcome = Outcome()
    try:
        response = ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName=SERVICE, ContentType=content_type, Body=body)
        outcome.probabilities = json.loads(response["Body"].read())
    except Exception as exc:  # collected and asserted by the test
        outcome.error = exc
    outcome.elapsed = time.monotonic() - outcome.sent
    return outcome


def in_background(body: bytes, content_type: str = "image/png") -> Callable[[], Outcome]:
    """Start one request in a thread; the returned function waits for its outcome."""
    box: Dict[str, Outcome] = {}
    thread = threading.Thread(target=lambda: box.setdefault("outcome", invoke(body, content_type)), daemon=True)
    thread.start()

    def join() -> Outcome:
        thread.join(60)
        assert "outcome" in box, "the request was never answered"
        return box["outcome"]
    return join


def assert_answered(outcome: Outcome, classes: int = 10) -> None:
    assert outcome.error is None, f"expected probabilities, got {outcome.error!r}"
    assert len(outcome.probabilities) == classes and abs(sum(outcome.probabilities) - 1) < 1e-3


def assert_refused(outcome: Outcome, *phrases: str) -> str:
    from greengrass_machine_learning_sdk.exception import GreengrassInferenceException

    assert isinstance(outcome.error, GreengrassInferenceException), f"expected a refusal, got {outcome.error!r}"
    message = str(outcome.error)
    for phrase in phrases:
        assert phrase in message, f"{phrase!r} not in {message!r}"
    return message


def limits_runtime(tmp_path_factory, model, run_args=(), **parameters) -> GGICRuntime:
    """A runtime serving `model` with these connector parameters (`with` starts and stops it)."""
    return GGICRuntime(tmp_path_factory.mktemp("limits"), [connector_entry(model, service_name=SERVICE,
                                                                            **parameters)],
                       run_args=list(run_args))


def start_failure(runtime: GGICRuntime) -> str:
    """Start a runtime that must refuse to come up; return what it said."""
    runtime.start(expect_ready=False)
    try:
        assert runtime.wait_exit() == 1
    finally:
        runtime.stop()
    return runtime.output()


def worker_ready(status: dict) -> bool:
    worker = (status.get("supervisor") or {}).get("worker") or {}
    return status["ready"] and worker.get("state") == "ready"


def new_worker(runtime: GGICRuntime, old_pid: int, timeout: float = 60) -> dict:
    return runtime.wait_for(lambda s: worker_ready(s) and s["supervisor"]["worker"]["pid"] != old_pid, timeout,
                            f"a new worker replacing {old_pid}")


def metrics(runtime: GGICRuntime) -> Dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{runtime.port}/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(values: Dict[tuple, float], name: str, **labels: str) -> float:
    return sum(value for (sample_name, sample_labels), value in values.items()
               if sample_name == name and all(item in sample_labels for item in labels.items()))


# --- memory -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured_model(tmp_path_factory, digits_model) -> Dict[str, float]:
    """What the loaded digits model really needs, and how long a worker takes to load it, measured by a first
    runtime on this machine as it is now."""
    with limits_runtime(tmp_path_factory, digits_model) as runtime:
        need = runtime.connector_status()["supervisor"]["worker"]["model_rss_kb"]
        loaded = re.search(r"inference worker \d+ ready in ([\d.]+) s", runtime.log_of(CONNECTOR_LOG))
    assert 10_000 < need < 500_000 and loaded
    return {"need_kb": need, "load_s": float(loaded.group(1))}


@pytest.fixture(scope="module")
def model_need_kb(measured_model) -> int:
    return int(measured_model["need_kb"])


@pytest.fixture(scope="module")
def timeout_s(measured_model) -> int:
    """The shared runtime's LocalInferenceServiceTimeoutSeconds: four times the measured model load (at least 3 s),
    so that the requests queued behind a killed worker outlive the new worker's load on a busy machine too."""
    return max(3, math.ceil(4 * measured_model["load_s"]))


def test_memory_breach_fails_the_request_and_a_new_worker_serves_the_queue(
        tmp_path_factory, digits_model, model_need_kb, digits, sdk_env):
    limit = model_need_kb + 60_000  # room for ordinary images, not for a 36 MP decode (216 MB at its peak)
    # An explicit --max-image-pixels is honoured even where it cannot fit (the start-up log warns): without it the
    # connector would refuse the image from its header (tests/test_abuse_inputs.py) and no worker would breach.
    with limits_runtime(tmp_path_factory, digits_model, run_args=["--max-image-pixels", str(6000 * 6000)],
                        LocalInferenceServiceMemoryLimitKB=str(limit)) as runtime:
        sdk_env(runtime)
        old_pid = runtime.worker_pid()
        assert_answered(invoke(digits[0]))
        big = big_jpeg(6000)
        os.kill(old_pid, signal.SIGSTOP)  # hold the worker until the queue behind the big image is in place
        breach = in_background(big, "image/jpeg")
        runtime.wait_for(lambda s: s["in_flight"] == 1, 10, "the big image in flight")
        queued = [in_background(body) for body in digits[1:4]]
        runtime.wait_for(lambda s: s["queued"] == 3, 10, "three requests queued behind it")
        os.kill(old_pid, signal.SIGCONT)

        message = assert_refused(breach(), "LocalInferenceServiceMemoryLimitKB", f"({limit} KB)", "new worker")
        for outcome in queued:
            assert_answered(outcome())
        status = new_worker(runtime, old_pid)
        assert status["supervisor"]["restart_reasons"] == {"memory": 1}
        log = runtime.log_of(CONNECTOR_LOG)
        assert "consumed all allocated memory" in log and f"{SERVICE}: " in log
        assert "--max-image-pixels 36000000 (GGIC_MAX_IMAGE_PIXELS) cannot fit in" in log
        print(f"memory breach: {message}")


def test_a_limit_below_what_the_loaded_model_needs_fails_at_start_with_the_need(
        tmp_path_factory, digits_model, model_need_kb):
    limit = int(model_need_kb * 0.8)
    output = start_failure(limits_runtime(tmp_path_factory, digits_model,
                                          LocalInferenceServiceMemoryLimitKB=str(limit)))
    assert "MemoryLimitTooSmallError" in output or "the loaded model needs" in output, output
    need = int(output.split("the loaded model needs ", 1)[1].split(" KB", 1)[0])
    assert abs(need - model_need_kb) < 0.2 * model_need_kb
    assert f"LocalInferenceServiceMemoryLimitKB is {limit} KB" in output
    assert_the_suggested_limit_works(tmp_path_factory, digits_model, output)


@pytest.mark.parametrize("limit", ["1000", "30000"])
def test_a_limit_far_below_the_model_stops_the_load_and_says_which_limit_works(tmp_path_factory, digits_model,
                                                                                 limit):
    output = start_failure(limits_runtime(tmp_path_factory, digits_model, LocalInferenceServiceMemoryLimitKB=limit))
    assert "loading the model needs more than LocalInferenceServiceMemoryLimitKB allows" in output, output
    assert f"limit of {limit} KB" in output
    assert "Measured with room to spare, the model needs" in output, output
    assert_the_suggested_limit_works(tmp_path_factory, digits_model, output)


def assert_the_suggested_limit_works(tmp_path_factory, model, output: str) -> None:
    """The start-up error's "set it to at least N": with N, the same connector starts and answers."""
    suggested = re.search(r"set it to at least (\d+)", output)
    assert suggested, output
    with limits_runtime(tmp_path_factory, model, LocalInferenceServiceMemoryLimitKB=suggested.group(1)) as rt:
        assert rt.health()["ready"]


# --- time, crashes, queue, body cap ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runtime(tmp_path_factory, digits_model, timeout_s):
    """Timeout `timeout_s`, at most 2 queued requests, bodies up to 200 kB, logs rotated at 20 kB."""
    with limits_runtime(tmp_path_factory, digits_model,
                       run_args=["--max-queued-requests", "2", "--max-request-bytes", "200000",
                                 "--log-max-bytes", "20000"],
                       LocalInferenceServiceTimeoutSeconds=str(timeout_s)) as rt:
        yield rt


@pytest.fixture
def serving(runtime, sdk_env, digits):
    """The shared runtime with a ready worker that answers (each test leaves it recovered for the next)."""
    sdk_env(runtime)
    runtime.wait_for(worker_ready, 90, "a ready worker")
    assert_answered(invoke(digits[0]))
    return runtime


def test_stuck_inference_times_out_within_the_timeout_and_the_worker_is_replaced(serving, digits, timeout_s):
    old_pid = serving.worker_pid()
    os.kill(old_pid, signal.SIGSTOP)  # frozen mid-flight, as a worker stuck in native code
    pending = [in_background(digits[0])]
    serving.wait_for(lambda s: s["in_flight"] == 1, 10, "the first request in the worker's hands")
    pending += [in_background(body) for body in digits[1:3]]  # these two wait in the queue (it holds 2)
    outcomes = [join() for join in pending]
    for outcome in outcomes:
        assert_refused(outcome, str(timeout_s))
        assert outcome.elapsed < timeout_s + 1.5, f"answered after {outcome.elapsed:.2f} s, timeout is {timeout_s} s"
    messages = " | ".join(str(outcome.error) for outcome in outcomes)
    assert f"did not finish within LocalInferenceServiceTimeoutSeconds ({timeout_s} s)" in messages, messages
    status = new_worker(serving, old_pid)
    assert status["supervisor"]["restart_reasons"].get("timeout") == 1
    for body in digits[3:6]:
        assert_answered(invoke(body))


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_a_worker_killed_mid_request_fails_that_request_and_the_queue_is_served(serving, digits, signum, timeout_s):
    old_pid = serving.worker_pid()
    os.kill(old_pid, signal.SIGSTOP)
    held = in_background(digits[1])
    serving.wait_for(lambda s: s["in_flight"] == 1, 10, "the request in the worker's hands")
    queued = [in_background(body) for body in digits[2:4]]
    serving.wait_for(lambda s: s["queued"] == 2, 10, "two queued requests")
    time.sleep(0.2)  # the supervisor has written the request to the frozen worker
    killed_at = time.monotonic()
    os.kill(old_pid, signum)
    os.kill(old_pid, signal.SIGCONT)  # a pending SEGV is delivered when the process runs again

    message = assert_refused(held(), "died while handling this request", "a new worker is starting")
    if signum == signal.SIGKILL:
        assert "killed by signal SIGKILL" in message
    else:  # MXNet's own handler logs the segfault, then exits with 255 (or aborts)
        assert "killed by signal SIG" in message or "exit code 255" in message, message
        assert "killed by signal SIGSEGV" in message or "Segmentation fault" in serving.log_of(CONNECTOR_LOG)
    for outcome in queued:
        assert_answered(outcome())
    status = new_worker(serving, old_pid)
    restart_s = time.monotonic() - killed_at
    print(f"{signal.Signals(signum).name}: replacement worker answering {restart_s:.2f} s after the kill "
          f"(model load in the worker: uptime {status['supervisor']['worker']['uptime_s']} s)")
    assert restart_s < max(15, timeout_s)


def test_a_full_queue_refuses_at_once_with_busy_and_loses_nothing(serving, digits):
    before = metrics(serving)
    pid = serving.worker_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        held = in_background(digits[1])
        serving.wait_for(lambda s: s["in_flight"] == 1, 10, "one request in hand")
        queued = [in_background(body) for body in digits[2:4]]
        serving.wait_for(lambda s: s["queued"] == 2, 10, "a full queue")
        refused = invoke(digits[4])
        assert_refused(refused, "busy", "maxWorkItemCount 2")
        assert refused.elapsed < 1.0
    finally:
        os.kill(pid, signal.SIGCONT)
    for outcome in [held()] + [join() for join in queued]:
        assert_answered(outcome)
    after = metrics(serving)
    assert sample(after, "ggic_requests_refused_total", reason="busy") - \
        sample(before, "ggic_requests_refused_total", reason="busy") == 1


def test_a_body_over_the_cap_is_refused_before_it_is_read(serving, digits):
    oversized = big_jpeg(1200)
    while len(oversized) <= 200_000:
        oversized += oversized
    outcome = invoke(oversized, "image/jpeg")
    assert_refused(outcome, f"request body of {len(oversized)} bytes", "limit of 200000 bytes")
    assert_answered(invoke(digits[2]))


def test_crash_loop_backs_off_and_shows_in_health_status_and_logs(serving, digits):
    pid = serving.worker_pid()
    for _ in range(3):  # three failures in a row: restart at once, then after 1 s, then after 2 s
        os.kill(pid, signal.SIGKILL)
        status = serving.wait_for(lambda s: not s["ready"] or s["supervisor"]["worker"]["pid"] != pid, 10,
                                  "the worker to be reaped")
        if status["supervisor"]["consecutive_failures"] >= 3:
            break
        pid = new_worker(serving, pid)["supervisor"]["worker"]["pid"]
    status = serving.wait_for(lambda s: s["supervisor"]["consecutive_failures"] == 3, 10, "three failures")
    assert status["ready"] is False or status["supervisor"]["worker"]["state"] != "ready"
    report = serving.health()
    assert report["ready"] is False
    problem = report["functions"][0]["problem"] or ""
    assert "after 3 failure(s) in a row" in problem and "killed by signal SIGKILL" in problem, problem

    shown = ggic("status", "--state-dir", str(serving.state_dir))
    assert shown.returncode == 3 and b"NOT READY" in shown.stdout, shown.stdout

    new_worker(serving, pid, timeout=30)
    assert_answered(invoke(digits[5]))
    assert serving.connector_status()["supervisor"]["consecutive_failures"] == 0
    shown = ggic("status", "--state-dir", str(serving.state_dir))
    assert shown.returncode == 0 and b"runtime: READY" in shown.stdout, shown.stdout
    assert b"inference worker" in shown.stdout and b"MiB limit" in shown.stdout
    assert re.search(rb"\n  layout 1 worker x \d+ threads?: \d+ cores", shown.stdout), shown.stdout
    log = serving.log_of(CONNECTOR_LOG) + "".join(
        path.read_text(errors="replace") for path in serving.state_dir.rglob(f"{CONNECTOR_LOG}.log.*"))
    assert "3 failure(s) in a row; new worker in 2 s" in log


def test_an_idle_worker_that_stops_answering_heartbeats_is_replaced(serving):
    pid = serving.worker_pid()
    os.kill(pid, signal.SIGSTOP)
    status = new_worker(serving, pid, timeout=30)
    assert status["supervisor"]["restart_reasons"].get("heartbeat", 0) >= 1


# --- telling the truth ------------------------------------------------------------------------------------

def test_metrics_count_requests_errors_latency_queue_and_worker(serving, digits):
    before = metrics(serving)
    for body in digits[:3]:
        assert_answered(invoke(body))
    assert_refused(invoke(b"", "image/png"), "empty")
    after = metrics(serving)
    delta = lambda name, **labels: sample(after, name, **labels) - sample(before, name, **labels)  # noqa: E731
    assert delta("ggic_requests_total", outcome="ok") == 3
    assert delta("ggic_request_errors_total", reason="empty-body") == 1
    assert delta("ggic_request_duration_seconds_count") == 4
    assert sample(after, "ggic_queue_depth") == 0
    assert sample(after, "ggic_ready") == 1
    rss = sample(after, "ggic_worker_rss_bytes")
    assert 10e6 < rss < sample(after, "ggic_worker_memory_limit_bytes")
    assert sample(after, "ggic_worker_restarts_total") == serving.connector_status()["supervisor"]["restarts"]


def test_logs_are_in_greengrass_format_with_the_service_prefix_and_rotate(serving, digits):
    for _ in range(60):  # refused requests log one line each
        assert_refused(invoke(b"not an image", "image/png"), "not a PNG")
    log_dir = serving.state_dir / "greengrass" / "ggc" / "var" / "log"
    connector_logs = sorted((log_dir / "user" / "us-west-2" / "aws").glob(f"{CONNECTOR_LOG}.log*"))
    assert len(connector_logs) >= 2, connector_logs  # rotated at 20 kB
    assert all(path.stat().st_size <= 20_000 + 2_000 for path in connector_logs)
    current = connector_logs[0].read_text()
    assert "[WARN]-endpoint.py:" in current and f",{SERVICE}: request " in current
    system_log = (log_dir / "system" / "runtime.log").read_text()
    assert "[INFO]-runtime.py:" in system_log and "runtime ready" in system_log


# --- security ---------------------------------------------------------------------------------------------

def test_every_start_has_a_fresh_token_and_the_old_one_is_refused(tmp_path_factory, digits_model):
    runtime = limits_runtime(tmp_path_factory, digits_model)
    tokens = []
    for _ in range(2):
        with runtime:
            tokens.append(runtime.client_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"])
            assert (runtime.state_dir / "env").stat().st_mode & 0o077 == 0
    assert tokens[0] != tokens[1] and min(len(token) for token in tokens) >= 40
    with runtime:
        connection = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=10)
        arn = f"arn:aws:lambda:us-west-2:aws:function:{CONNECTOR_LOG}"
        connection.request("POST", f"/2016-11-01/functions/{arn}", body=b"x", headers={"Authorization": tokens[1]})
        assert connection.getresponse().status == 401  # the previous start's token opens nothing now


# --- several workers --------------------------------------------------------------------------------------

def test_two_workers_share_the_load_and_one_crash_leaves_the_other_serving(
        tmp_path_factory, digits_model, model_need_kb, digits, sdk_env):
    limit = 2 * model_need_kb + 200_000
    with limits_runtime(tmp_path_factory, digits_model, run_args=["--workers", "2"],
                        LocalInferenceServiceMemoryLimitKB=str(limit)) as runtime:
        sdk_env(runtime)
        workers = runtime.connector_status()["supervisor"]["workers"]
        pids = {worker["pid"] for worker in workers}
        assert len(pids) == 2 and all(worker["state"] == "ready" for worker in workers)
        for join in [in_background(body) for body in digits * 2]:
            assert_answered(join())

        killed = sorted(pids)[0]
        os.kill(killed, signal.SIGKILL)
        runtime.wait_for(lambda s: all(w["pid"] != killed or w["state"] != "ready"
                                       for w in s["supervisor"]["workers"]), 10, "the dead worker noticed")
        assert_answered(invoke(digits[1]))  # the other worker serves while its sibling is replaced
        status = runtime.wait_for(
            lambda s: killed not in {w["pid"] for w in s["supervisor"]["workers"]}
            and all(w["state"] == "ready" for w in s["supervisor"]["workers"]), 60, "the killed worker replaced")
        assert status["ready"] and status["supervisor"]["restart_reasons"] == {"crash": 1}
        log = runtime.log_of(CONNECTOR_LOG)
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert log.count(f"{threads} engine thread(s)") >= 3  # cores / 2 workers each, the replacement included
    assert f"(limit {limit // 2} KB)" in log
