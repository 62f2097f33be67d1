"""Overload without a cascade (issue 16, finding 1): timeouts fail requests, not healthy workers; load is shed early.

The queue-level tests drive the core's `FunctionQueue` on its own. The others start the real runtime with a short
LocalInferenceServiceTimeoutSeconds: finding 1's 1 s, or, on a machine so busy that one request takes more than a
fifth of that, five times the measured service time (finding 1's ratio: 1 s for 0.18 s). They measure what one
client gets answered per second, then send large JPEGs open loop (as independent Lambdas do) at four times that: no
worker may be killed, each request gets exactly one answer (its own image's probabilities, or a clear busy or
timeout error, within the timeout), a refused request never reaches a worker, and goodput stays a good part of the
capacity measured beside it. A truly stuck inference (SIGSTOP) still gets its worker killed and replaced. Bounded:
about 6 s of load per hosting.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import threading
import time
from typing import Dict, List

import pytest

from bench.harness import GGICRuntime, connector_entry
from bench.overload import SERVICE_NAME, Phase, Request, closed_loop, judge, large_jpegs, open_loop, send
from connector.contract.service_time import ServiceTime
from connector.core.invocations import (
    REQUEST_RESPONSE,
    TIMEOUT_GRACE_S,
    Dispatcher,
    InvocationNotFoundError,
    OverloadedError,
    QueueFullError,
)

ARN = "arn:aws:lambda:us-west-2:aws:function:f"
SIDE = 2400            # a 2400x2400 JPEG: its decode is most of a request's service time (bench/overload.py)
FINDING_TIMEOUT_S = 1  # finding 1's LocalInferenceServiceTimeoutSeconds
TIMEOUT_PER_SERVICE = 5  # ... for a service of 0.18 s: the timeout holds about five services
CAPACITY_REQUESTS = 8  # one client, back to back: the capacity (before the load, and after)
LOAD_TIMEOUTS = 5      # then four times that rate, open loop, for this many timeouts
OVERLOAD = 4.0
# Goodput under 4x overload, as a share of the capacity measured beside it. bench/overload.py measures >= 80 %
# (docs/overload.md); the test asks less, so that a machine busy with other work does not fail it. Before the
# fix it was under 35 % (finding 1: 1 %).
MIN_GOODPUT_SHARE = 0.5
# How far past its timeout a caller may hear, measured at the caller: this, plus the spread of a lone client's
# round trips measured on this machine (a busy machine delays the IPC as well as the inference).
ANSWER_SLACK_S = 0.5


# --- the core's queue ---------------------------------------------------------------------------------------

def test_a_request_handed_over_late_is_timed_out_at_its_deadline_but_not_reported_stuck():
    dispatcher = Dispatcher()
    queue = dispatcher.add_function(ARN, timeout_s=1)
    invocation = dispatcher.submit(ARN, b"x", "", REQUEST_RESPONSE)
    invocation.received -= 0.9  # it waited 0.9 s in the queue
    assert queue.take(0.1) is invocation
    now = invocation.deadline + TIMEOUT_GRACE_S
    assert dispatcher.sweep(now) == {}  # its caller is answered; the function is not stuck for holding it 0.1 s
    assert invocation.done and "did not answer in time" in json.loads(invocation.result)["errorMessage"]
    assert queue.in_flight == 1  # the function still holds it

    stuck = dispatcher.sweep(invocation.taken + 1 + TIMEOUT_GRACE_S)  # held as long as its timeout itself
    assert stuck == {ARN: [invocation]}
    assert dispatcher.sweep(invocation.received + 60) == {}  # reported once


def test_the_late_answer_of_a_timed_out_request_is_discarded():
    dispatcher = Dispatcher()
    queue = dispatcher.add_function(ARN, timeout_s=1)
    invocation = dispatcher.submit(ARN, b"x", "", REQUEST_RESPONSE)
    invocation.received -= 0.9
    queue.take(0.1)
    dispatcher.sweep(invocation.deadline + TIMEOUT_GRACE_S)
    timeout_answer = invocation.result
    with pytest.raises(InvocationNotFoundError, match="late answer is discarded"):
        queue.complete(invocation.id, b"late")
    assert invocation.result == timeout_answer and queue.in_flight == 0


def test_a_request_whose_deadline_passed_in_the_queue_is_never_handed_out():
    dispatcher = Dispatcher()
    queue = dispatcher.add_function(ARN, timeout_s=0.05)
    first = dispatcher.submit(ARN, b"1", "", REQUEST_RESPONSE)
    time.sleep(0.1)
    second = dispatcher.submit(ARN, b"2", "", REQUEST_RESPONSE)
    assert queue.take(0.1) is second  # the first one's deadline had passed: answered, not handed out
    payload = json.loads(first.result)
    assert payload["errorType"] == "TimeoutError" and "never ran" in payload["errorMessage"]


def measured(seconds: float, times: int = 8) -> ServiceTime:
    estimate = ServiceTime()
    for _ in range(times):
        estimate.observe(seconds)
    return estimate


def test_a_connector_queue_refuses_at_once_what_it_cannot_answer_in_time():
    dispatcher = Dispatcher()
    queue = dispatcher.add_function(ARN, timeout_s=1, shed_load=True)
    queue.service_time = measured(0.4)  # bound: 0.4 s + 2 x its (small) deviation
    in_hand = dispatcher.submit(ARN, b"1", "", REQUEST_RESPONSE)  # nothing ahead: always admitted
    assert queue.take(0.1) is in_hand
    waits = dispatcher.submit(ARN, b"2", "", REQUEST_RESPONSE)  # ~0.4 s ahead, then its own: in time
    began = time.monotonic()
    with pytest.raises(OverloadedError) as refused:  # ~0.8 s ahead, then its own: past its 1 s deadline
        dispatcher.submit(ARN, b"3", "", REQUEST_RESPONSE)
    assert time.monotonic() - began < 0.1  # at once
    assert isinstance(refused.value, QueueFullError)  # the IPC server's 429: GreengrassInferenceException
    message = str(refused.value)
    for phrase in (ARN, "is busy", "1 request(s) queued and 1 in hand", "past its deadline (timeout 1 s)"):
        assert phrase in message, message
    assert len(queue) == 1 and not waits.done


def test_one_request_that_waited_out_a_restart_does_not_make_the_service_look_slow():
    estimate = measured(0.05)
    estimate.observe(3.0)  # it waited for a new worker
    assert estimate.mean < 0.1 and estimate.bound() < 0.3
    for _ in range(20):  # a service that really slows down is followed
        estimate.observe(0.5)
    assert 0.4 < estimate.mean <= 0.5


def test_a_queue_without_load_shedding_admits_everything():
    dispatcher = Dispatcher()
    queue = dispatcher.add_function(ARN, timeout_s=1)  # a user Lambda's: Greengrass queues, it does not shed
    queue.service_time = measured(0.3)
    for number in range(10):
        dispatcher.submit(ARN, str(number).encode(), "", REQUEST_RESPONSE)
    assert len(queue) == 10


# --- the real service under 4x overload ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def images() -> List[bytes]:
    return large_jpegs(SIDE)


def answers(images: List[bytes]) -> Dict[int, str]:
    """Each photo's own answer, asked one at a time (and a warm service); they must differ."""
    import greengrass_machine_learning_sdk as ml

    expected: Dict[int, str] = {}
    for number in range(len(images)):
        probe = Request(number, time.monotonic())
        send(ml.client("inference"), probe, images)
        assert probe.body is not None, probe.error or probe.lost
        expected[number] = probe.body
    assert len(set(expected.values())) == len(images), "the photos must have different answers"
    return expected


def worker_requests(runtime: GGICRuntime) -> int:
    """Requests handed to inference workers, as the status reports them (summed over the workers)."""
    supervisor = runtime.connector_status()["supervisor"] or {}
    return sum(int(worker.get("requests") or 0) for worker in supervisor.get("workers") or [])


def worker_kills(runtime: GGICRuntime) -> int:
    """Inference workers that ended, as the connector's log says (under both hostings: a function process's
    supervisor is seen only through its log), and function process restarts."""
    log = runtime.log_of(f"GG-ML-INF-image-classification-{SERVICE_NAME}")
    ended = sum(1 for line in log.splitlines() if "inference worker" in line and " ended: " in line)
    return ended + int(runtime.connector_status().get("restarts") or 0)


def overload_runtime(tmp_path_factory, model, hosting: str, timeout_s: int) -> GGICRuntime:
    entry = connector_entry(model, service_name=SERVICE_NAME, LocalInferenceServiceTimeoutSeconds=str(timeout_s),
                            LocalInferenceServiceMemoryLimitKB="1000000")
    return GGICRuntime(tmp_path_factory.mktemp(f"overload-{hosting}"), [entry],
                       run_args=["--workers", "1", "--connector-hosting", hosting])


@pytest.fixture(scope="module")
def timeout_s(tmp_path_factory, digits_model, images) -> int:
    """Finding 1's 1 s, unless this machine is too busy for it: then five times the measured service time."""
    with overload_runtime(tmp_path_factory, digits_model, "native", 10) as runtime:
        env = dict(os.environ)
        os.environ.update(runtime.client_env)
        try:
            answers(images)
            lone = closed_loop(1, 0.0, images, requests=CAPACITY_REQUESTS)
        finally:
            os.environ.clear()
            os.environ.update(env)
    service = statistics.median(request.latency_s for request in lone)
    chosen = max(FINDING_TIMEOUT_S, math.ceil(TIMEOUT_PER_SERVICE * service))
    print(f"one request alone: {service:.3f} s (median of {len(lone)}): LocalInferenceServiceTimeoutSeconds "
          f"{chosen} s")
    return chosen


@pytest.mark.parametrize("hosting", ["native", "lambda"])
def test_four_times_capacity_kills_no_worker_and_keeps_answering(tmp_path_factory, digits_model, sdk_env, images,
                                                                 timeout_s, hosting):
    with overload_runtime(tmp_path_factory, digits_model, hosting, timeout_s) as runtime:
        sdk_env(runtime)
        expected = answers(images)
        def capacity() -> Phase:
            began = time.monotonic()
            alone = closed_loop(1, 0.0, images, requests=CAPACITY_REQUESTS)
            lone = judge("capacity", alone, time.monotonic() - began, timeout_s, expected, 0)
            # alone, a request is answered, unless a hiccup of the machine held it too long (busy or timed out)
            assert lone.lost == lone.misrouted == lone.other_errors == 0, lone
            assert lone.answered_in_time >= len(alone) // 2, lone
            lone.examples["spread"] = str(max(r.latency_s for r in alone) - min(r.latency_s for r in alone))
            return lone

        first = capacity()
        process = runtime.connector_status()["pid"]
        kills, reached = worker_kills(runtime), worker_requests(runtime)

        seconds = LOAD_TIMEOUTS * timeout_s
        requests = open_loop(first.goodput_per_s * OVERLOAD, seconds, timeout_s, images)
        time.sleep(timeout_s + 0.5)  # an abandoned inference finishes (at most the timeout) and frees its worker
        status = runtime.connector_status()
        handed = worker_requests(runtime) - reached
        phase = judge("4x", requests, seconds, timeout_s, expected, worker_kills(runtime) - kills)
        after = capacity()  # a machine shared with other work changes speed: the capacity around the load
        rate = (first.goodput_per_s + after.goodput_per_s) / 2
        # what this machine's load adds to a round trip: the spread of a lone client's, measured
        slack = ANSWER_SLACK_S + max(float(first.examples["spread"]), float(after.examples["spread"]))
        summary = (f"{hosting}, timeout {timeout_s} s: capacity {first.goodput_per_s:.2f}/s then "
                   f"{after.goodput_per_s:.2f}/s, 4x offered "
                   f"{phase.offered_per_s:.2f}/s: {phase.answered_in_time} answered in time, {phase.answered_late} "
                   f"late, {phase.busy} busy, {phase.timeouts} timeouts, goodput {phase.goodput_per_s:.2f}/s, "
                   f"p99 {phase.p99_ms} ms; {phase.examples}")
        print(summary)

        assert phase.worker_kills == 0 and status["pid"] == process, summary  # no worker, no function process
        assert phase.lost == phase.unsent == phase.misrouted == phase.other_errors == 0, summary
        assert phase.busy > 0, summary  # it was overloaded, and said so
        slowest = max(request.latency_s for request in requests)
        assert slowest <= timeout_s + slack, f"a caller waited {slowest:.2f} s (slack {slack:.2f} s); {summary}"
        assert phase.goodput_per_s >= MIN_GOODPUT_SHARE * rate, summary
        if hosting == "native":  # the workers' counts are in the status (a function process's are not)
            # A refused request never reached a worker: the workers were handed the answered requests and those
            # whose caller's deadline passed while a worker ran them (that worker went on), nothing else.
            abandoned = sum(1 for request in requests if request.error and "the worker goes on" in request.error)
            assert handed == phase.answered_in_time + phase.answered_late + abandoned, summary
            assert status["supervisor"]["abandoned"] == abandoned, summary  # the status says the same
            assert status["supervisor"]["service_time_s"] > 0


def test_a_stuck_inference_still_gets_its_worker_killed_and_what_waited_never_reaches_a_worker(
        tmp_path_factory, digits_model, sdk_env, images, timeout_s):
    with overload_runtime(tmp_path_factory, digits_model, "native", timeout_s) as runtime:
        sdk_env(runtime)
        import greengrass_machine_learning_sdk as ml

        lone = [Request(number % len(images), time.monotonic()) for number in range(5)]
        for request in lone:  # warm, and what this machine's load adds to a round trip now: their spread
            send(ml.client("inference"), request, images)
            assert request.body is not None, request.error
        slack = ANSWER_SLACK_S + max(r.latency_s for r in lone) - min(r.latency_s for r in lone)
        old_pid = runtime.worker_pid()
        os.kill(old_pid, signal.SIGSTOP)  # frozen mid-flight, as a worker stuck in native code
        requests = [Request(number % len(images), time.monotonic()) for number in range(3)]

        def call(request: Request) -> None:
            send(ml.client("inference"), request, images)

        threads = [threading.Thread(target=call, args=(requests[0],), daemon=True)]
        threads[0].start()
        runtime.wait_for(lambda s: s["in_flight"] == 1, 10, "the first request in the worker's hands")
        threads += [threading.Thread(target=call, args=(request,), daemon=True) for request in requests[1:]]
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(30)

        held, waited = requests[0], requests[1:]
        assert held.error and f"did not finish within LocalInferenceServiceTimeoutSeconds ({timeout_s} s)" in \
            held.error, held.error
        for request in requests:
            assert request.latency_s <= timeout_s + slack, (slack, request)
        for request in waited:  # behind the stuck one: refused in time, as busy or timed out
            assert request.kind in ("busy", "timeout"), request.error or request.body
        status = runtime.wait_for(lambda s: (s["supervisor"] or {}).get("worker", {}).get("state") == "ready"
                                  and s["supervisor"]["worker"]["pid"] != old_pid, 60, "a new worker")
        assert status["supervisor"]["restart_reasons"] == {"timeout": 1}
        assert status["supervisor"]["worker"]["requests"] == 0  # what waited behind the stuck one never reached it
        after = Request(1, time.monotonic())
        send(ml.client("inference"), after, images)
        assert after.body is not None, after.error
