"""The runtime's bookkeeping on its own: deadlines, answers nobody collects, rotating logs."""

from __future__ import annotations

import json
import time

import pytest

from connector.core.invocations import (
    REQUEST_RESPONSE,
    RESULT_TTL_S,
    TIMEOUT_GRACE_S,
    Dispatcher,
    InvocationNotFoundError,
    QueueFullError,
)
from connector.core.logfiles import RotatingLogFile

ARN = "arn:aws:lambda:us-west-2:aws:function:f"


def test_queued_invocations_time_out_at_their_deadline_with_an_answer():
    answered = []
    dispatcher = Dispatcher(on_finished=answered.append)
    queue = dispatcher.add_function(ARN, timeout_s=2)
    first = dispatcher.submit(ARN, b"1", "", REQUEST_RESPONSE)
    second = dispatcher.submit(ARN, b"2", "", REQUEST_RESPONSE)
    assert dispatcher.sweep(time.monotonic()) == {}
    assert not first.done

    dispatcher.sweep(second.received + 2.0001)  # both past their deadline (however far apart they came)
    assert first.done and second.done and len(queue) == 0
    payload = json.loads(dispatcher.result(first.id).result)
    assert payload["errorType"] == "TimeoutError" and "waited in the queue" in payload["errorMessage"]
    assert first.function_error == "Unhandled" and answered == [first, second]


def test_an_invocation_held_past_timeout_and_grace_is_answered_and_reported_stuck():
    dispatcher = Dispatcher()
    queue = dispatcher.add_function(ARN, timeout_s=1)
    invocation = dispatcher.submit(ARN, b"x", "", REQUEST_RESPONSE)
    assert queue.take(0.1) is invocation
    assert 0 < invocation.remaining_ms() <= 1000
    assert dispatcher.sweep(invocation.taken + 1 + TIMEOUT_GRACE_S / 2) == {}  # its own answer may still come
    stuck = dispatcher.sweep(invocation.taken + 1 + TIMEOUT_GRACE_S)
    assert stuck == {ARN: [invocation]}
    assert "did not answer in time" in json.loads(invocation.result)["errorMessage"]
    with pytest.raises(InvocationNotFoundError, match="late answer is discarded"):
        queue.complete(invocation.id, b"late")
    assert invocation.result != b"late"


def test_a_function_without_timeout_keeps_its_invocations():
    dispatcher = Dispatcher()
    dispatcher.add_function(ARN)
    invocation = dispatcher.submit(ARN, b"x", "", REQUEST_RESPONSE)
    dispatcher.sweep(time.monotonic() + 3600)
    assert not invocation.done and invocation.remaining_ms() is None


def test_answers_nobody_collects_are_dropped_after_the_ttl():
    dispatcher = Dispatcher()
    queue = dispatcher.add_function(ARN)
    invocation = dispatcher.submit(ARN, b"x", "", REQUEST_RESPONSE)
    queue.complete(queue.take(0.1).id, b"answer")
    dispatcher.sweep(invocation.finished + RESULT_TTL_S - 1)
    assert dispatcher.uncollected == 1
    dispatcher.sweep(invocation.finished + RESULT_TTL_S + 1)
    assert dispatcher.uncollected == 0
    with pytest.raises(InvocationNotFoundError):
        dispatcher.result(invocation.id)


def test_a_full_queue_refuses_and_keeps_no_result_slot():
    dispatcher = Dispatcher()
    dispatcher.add_function(ARN, max_items=1)
    dispatcher.submit(ARN, b"1", "", REQUEST_RESPONSE)
    with pytest.raises(QueueFullError, match="busy: 1 requests are queued"):
        dispatcher.submit(ARN, b"2", "", REQUEST_RESPONSE)
    assert dispatcher.uncollected == 1


def test_an_invocation_is_answered_once():
    dispatcher = Dispatcher()
    invocation = dispatcher.submit(dispatcher.add_function(ARN).function_arn, b"x", "", REQUEST_RESPONSE)
    assert invocation.finish(b"first")
    assert not invocation.finish(b"second")
    assert invocation.result == b"first"


def test_log_files_rotate_by_size_and_keep_a_bounded_number(tmp_path):
    path = tmp_path / "f.log"
    log = RotatingLogFile(path, max_bytes=100, backups=2)
    for index in range(40):
        log.write(f"line {index:03d} ........\n".encode())
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["f.log", "f.log.1", "f.log.2"]
    assert all(p.stat().st_size <= 100 for p in files)
    assert path.read_text().splitlines()[-1] == "line 039 ........"
    newest_backup = (tmp_path / "f.log.1").read_text().splitlines()
    assert int(newest_backup[-1].split()[1]) + 1 == int(path.read_text().split()[1])


def test_the_summary_gives_the_mean_latency_of_answered_invocations():
    """`ggic status`'s "mean latency": the histogram's sum over its count (Prometheus gives the count first)."""
    from connector.core.invocations import Invocation
    from connector.core.metrics import RuntimeMetrics

    metrics = RuntimeMetrics(lambda: [])
    for waited_s in (0.2, 0.4):
        invocation = Invocation(ARN, b"", "", received=time.monotonic() - waited_s, listener=metrics.observe)
        invocation.finish(b"[0.5,0.5]")
    mean = metrics.summary()["f"]["mean_latency_s"]
    assert 0.3 <= mean < 0.35 and metrics.summary()["f"]["ok"] == 2
