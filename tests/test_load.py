"""Load: 2,000 requests from 16 concurrent Lambdas through the real runtime, each answer checked bit for bit.

The run itself is bench/load.py (`python -m bench.load`), so the suite and the 10,000-request benchmark are the
same code; here it runs as a user runs it, and its JSON is read back. The checker is also fed known-bad outcomes,
so a load run that passes is known to be able to fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from bench.load import check, plan
from bench.material import REPO

REQUESTS = 2000
CLIENTS = 16
DEADLINE_S = 300


def test_2000_requests_from_16_clients_are_each_answered_once_with_their_own_image(tmp_path):
    result_path = tmp_path / "load.json"
    run = subprocess.run([sys.executable, "-m", "bench.load", "--requests", str(REQUESTS), "--clients",
                          str(CLIENTS), "--json", str(result_path), "--deadline", str(DEADLINE_S)],
                         cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S + 60)
    print(run.stdout)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"
    result = json.loads(result_path.read_text())
    counts = {name: result[name] for name in ("requests", "answered", "correct", "lost", "misrouted",
                                              "duplicated", "wrong", "errors", "unsent")}
    assert counts == {"requests": REQUESTS, "answered": REQUESTS, "correct": REQUESTS, "lost": 0,
                      "misrouted": 0, "duplicated": 0, "wrong": 0, "errors": 0, "unsent": 0}
    assert result["passed"] is True and result["deadline_reached"] is False
    assert result["clients"] == CLIENTS and result["model"] == "digits"
    assert result["distinct_images"] >= 2 * CLIENTS
    assert result["peak_in_flight"] >= CLIENTS // 2, "the clients never overlapped"
    assert result["requests_per_s"] > 0
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert result["error_messages"] == {} and result["lost_messages"] == {}
    for name, value in (("answered", REQUESTS), ("lost", 0), ("misrouted", 0), ("duplicated", 0)):
        assert re.search(rf"^\s+{name}\s+{value}$", run.stdout, re.M), f"no {name} count printed"


def test_concurrent_requests_carry_different_images():
    per_client = plan(REQUESTS, CLIENTS, 1797)
    ids = sorted(o.request_id for outcomes in per_client for o in outcomes)
    assert ids == list(range(REQUESTS))
    for round_ in range(REQUESTS // CLIENTS):  # the k-th requests of all clients may be in flight together
        images = [outcomes[round_].image for outcomes in per_client]
        assert len(set(images)) == CLIENTS
    owners = {}
    for client, outcomes in enumerate(per_client):
        for earlier, later in zip(outcomes, outcomes[1:]):
            assert earlier.image != later.image
        for outcome in outcomes:
            assert owners.setdefault(outcome.image, client) == client


def _text(vector: np.ndarray) -> str:
    """An answer written as the connector writes it."""
    return "[" + ",".join(str(float(value)) for value in vector.astype(np.float32)) + "]"


@pytest.fixture
def expected():
    rng = np.random.default_rng(0)
    return [rng.dirichlet(np.ones(10)).astype(np.float32) for _ in range(4)]


def test_checker_passes_only_own_answers(expected):
    per_client = plan(8, 2, 4)
    for outcomes in per_client:
        for outcome in outcomes:
            outcome.sent = True
            outcome.answers.append(_text(expected[outcome.image]))
    counts = check(per_client, expected)
    assert counts.passed and counts.correct == counts.answered == 8


def test_checker_counts_every_kind_of_bad_outcome(expected):
    # client 0 sends images 0, 2, 0, 2, ...; client 1 sends images 1, 3, 1, 3, ...
    per_client = plan(16, 2, 4)
    zero, one = per_client
    for outcome in zero + one:
        outcome.sent = True
        outcome.answers.append(_text(expected[outcome.image]))
    zero[1].answers[:] = [_text(expected[0])]  # the answer client 0 got for its request before: repeated
    zero[2].answers[:] = [_text(expected[1])]  # image 1 is only ever sent by client 1: misrouted
    zero[3].answers.append(zero[3].answers[0])  # answered twice
    zero[4].answers[:] = ["[0.5,0.5]"]  # nobody's answer
    zero[5].answers.clear()
    zero[5].lost = "GreengrassDependencyException: connection closed"
    zero[6].answers.clear()
    zero[6].error = "GreengrassInferenceException: busy"
    one[7].sent = False
    one[7].answers.clear()
    counts = check(per_client, expected)
    assert (counts.requests, counts.answered, counts.correct) == (16, 13, 10)
    assert (counts.misrouted, counts.duplicated, counts.wrong) == (1, 2, 1)
    assert (counts.lost, counts.errors, counts.unsent) == (1, 1, 1)
    assert counts.lost_messages == {"GreengrassDependencyException: connection closed": 1}
    assert counts.error_messages == {"GreengrassInferenceException: busy": 1}
    assert not counts.passed


def test_a_near_miss_is_not_an_answer(expected):
    """Answers are compared bit for bit: one float32 step away from the expected vector is wrong."""
    per_client = plan(2, 1, 2)
    for outcome in per_client[0]:
        outcome.sent = True
        vector = expected[outcome.image].copy()
        vector[0] = np.nextafter(vector[0], np.float32(1))
        outcome.answers.append(_text(vector))
    counts = check(per_client, expected)
    assert counts.wrong == 2 and not counts.passed
