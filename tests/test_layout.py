"""The inference layout: how many workers and engine threads, chosen from the cores and the memory limit.

`choose_layout` is checked as a unit over a grid of cores x limits x measured needs; then `ggic run --workers auto`
runs the real digits model and must report a layout consistent with this machine's cores and the limit, grow to it
(the first worker, loaded with every core's threads, is replaced by one with the layout's threads) and give every
answer bit for bit, with every worker taking requests (the runtime loop's concurrency follows the worker count).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Dict, List

import numpy as np
import pytest

from bench.harness import GGICRuntime, connector_entry, ggic
from bench.load import _answer_key, digits_images
from connector.contract.environment import ENGINE_THREADS_ENV
from connector.image_classification.errors import ConfigurationError
from connector.image_classification.supervisor import (
    AUTO,
    LAYOUT_MARGIN,
    Layout,
    choose_layout,
    fixed_layout,
    parse_workers,
    workers_from_environment,
)

SERVICE = "imageClassification"
MB = 1024


# --- the layout function --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("limit_kb", [100 * MB, 500 * MB, 1000 * MB, 4000 * MB, 64000 * MB])
@pytest.mark.parametrize("need_kb", [30 * MB, 250 * MB, 396 * MB, 800 * MB])
def test_auto_layout_fits_the_cores_and_the_limit_and_takes_all_that_fit(cores, limit_kb, need_kb):
    layout = choose_layout(cores, limit_kb, need_kb)
    assert layout.mode == AUTO and layout.cores == cores and layout.need_kb == need_kb
    assert layout.workers >= 1 and layout.threads >= 1
    assert layout.workers * layout.threads <= cores, "oversubscribed"
    assert layout.threads == cores // layout.workers  # the cores a worker does not take are not left idle
    if layout.workers > 1:
        assert layout.workers * need_kb * LAYOUT_MARGIN <= limit_kb, "more workers than the limit holds"
    more = layout.workers + 1
    assert more > cores or more * need_kb * LAYOUT_MARGIN > limit_kb, "one more would have fit"


def test_auto_layout_examples_from_the_bench():
    # ResNet-18 on the 2-core machine: a worker needs about 396 MB
    assert (choose_layout(2, 500_000, 396 * MB).workers, choose_layout(2, 500_000, 396 * MB).threads) == (1, 2)
    two = choose_layout(2, 1_100 * MB, 420 * MB)
    assert (two.workers, two.threads) == (2, 1)
    assert two.describe().startswith("2 workers x 1 thread: 2 cores, worker needs 420 MB, limit 1100 MB (")
    assert choose_layout(2, 1_000 * MB, 420 * MB).workers == 1  # 2 x 420 MB fit, but not with the 1.25 margin
    one = choose_layout(2, 500 * MB, 420 * MB)
    assert one.describe().startswith("1 worker x 2 threads: 2 cores, worker needs 420 MB, limit 500 MB (")
    assert "below 1.25 x the need" in one.reason
    assert choose_layout(4, 1_000 * MB, 300 * MB).workers == 2  # 3 would need 1125 MB with the margin
    assert "holds 2" in choose_layout(4, 1_000 * MB, 300 * MB).reason
    assert choose_layout(4, 1_000 * MB, 300 * MB).threads == 2
    assert choose_layout(1, 64_000 * MB, 30 * MB).workers == 1


def test_auto_layout_keeps_the_users_engine_threads_within_the_cores():
    layout = choose_layout(8, 64_000 * MB, 250 * MB, threads=3)
    assert (layout.workers, layout.threads) == (2, 3) and ENGINE_THREADS_ENV in layout.reason
    assert choose_layout(2, 64_000 * MB, 250 * MB, threads=4).workers == 1  # more threads than cores: one worker
    assert choose_layout(4, 1_000 * MB, 300 * MB, threads=1).workers == 2   # memory still decides


def test_an_unknown_need_gives_one_worker():
    assert choose_layout(8, 64_000 * MB, 0).workers == 1


def test_fixed_layout_is_cores_over_workers_threads():
    assert (fixed_layout(2, 2, 500_000).workers, fixed_layout(2, 2, 500_000).threads) == (2, 1)
    assert fixed_layout(1, 2, 500_000).threads == 2
    assert fixed_layout(3, 2, 500_000).threads == 1
    assert fixed_layout(2, 8, 500_000, threads=2).threads == 2
    assert fixed_layout(2, 2, 500_000).mode == "fixed"
    layout = fixed_layout(1, 2, 500_000)
    assert isinstance(layout, Layout) and json.loads(json.dumps(layout.to_json()))["workers"] == 1


@pytest.mark.parametrize("text, expected", [("1", 1), ("4", 4), ("auto", AUTO), (" Auto ", AUTO)])
def test_workers_setting_is_a_number_or_auto(text, expected):
    assert parse_workers(text) == expected
    assert workers_from_environment({"GGIC_WORKERS": text}) == expected


def test_workers_setting_refuses_anything_else():
    assert workers_from_environment({}) == 1
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigurationError, match="GGIC_WORKERS"):
            workers_from_environment({"GGIC_WORKERS": bad})
    result = ggic("run", "--workers", "many", "--state-dir", "/nonexistent")
    assert result.returncode == 2 and b"--workers" in result.stderr and b"'auto'" in result.stderr


# --- ggic run --workers auto ----------------------------------------------------------------------------------

def _settled(layout: dict):
    """The status predicate: the layout's workers all serve, each with the layout's engine threads."""
    def settled(status: dict) -> bool:
        supervisor = status.get("supervisor") or {}
        workers = supervisor.get("workers") or []
        chosen = supervisor.get("layout") or {}
        return (chosen.get("workers") == len(workers) and
                all(w["state"] == "ready" and w["threads"] == chosen.get("threads") for w in workers))
    return settled


def _invoke_all(bodies: List[bytes], clients: int) -> Dict[int, str]:
    import greengrass_machine_learning_sdk as ml

    answers: Dict[int, str] = {}
    lock = threading.Lock()

    def client(first: int) -> None:
        sdk = ml.client("inference")
        for index in range(first, len(bodies), clients):
            response = sdk.invoke_inference_service(AlgoType="image-classification", ServiceName=SERVICE,
                                                    ContentType="image/png", Body=bodies[index])
            with lock:
                answers[index] = response["Body"].read().decode()

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


@pytest.fixture(scope="module")
def digits_answers():
    return digits_images()[:24]


def test_auto_layout_with_room_for_several_workers_grows_to_them_and_answers_bit_for_bit(
        tmp_path, digits_model, digits_answers, sdk_env):
    cores = len(os.sched_getaffinity(0))
    limit = 2_000_000  # the digits worker needs about 240 MB (mostly libmxnet): room for several
    runtime = GGICRuntime(tmp_path, [connector_entry(digits_model, service_name=SERVICE,
                                                     LocalInferenceServiceMemoryLimitKB=str(limit))],
                          run_args=["--workers", "auto"])
    with runtime:
        sdk_env(runtime)
        layout = runtime.connector_status()["supervisor"]["layout"]
        need = layout["need_kb"]
        assert layout["mode"] == "auto" and layout["cores"] == cores and layout["limit_kb"] == limit
        assert 10_000 < need < limit
        assert layout["workers"] == max(1, min(cores, int(limit // (need * LAYOUT_MARGIN))))
        assert layout["threads"] == cores // layout["workers"] and layout["workers"] * layout["threads"] <= cores
        status = runtime.wait_for(_settled(layout), 90, "the layout in place")
        assert status["ready"] and status["supervisor"]["restarts"] == 0  # the first worker retired, not failed

        answers = _invoke_all([image.png for image in digits_answers], clients=2 * layout["workers"])
        assert len(answers) == len(digits_answers)
        for index, image in enumerate(digits_answers):
            assert _answer_key(answers[index]) == image.expected.astype(np.float32).tobytes(), index
        # every worker took requests: the runtime loop took as many at once as there are workers (the counts are
        # published at the next heartbeat)
        runtime.wait_for(lambda s: sum(w["requests"] for w in s["supervisor"]["workers"]) == len(digits_answers)
                         and all(w["requests"] > 0 for w in s["supervisor"]["workers"]), 10, "every worker used")

        report = json.loads(ggic("status", "--json", "--state-dir", str(runtime.state_dir)).stdout)
        entry = next(function for function in report["functions"] if function["connector"])
        assert entry["supervisor"]["layout"]["workers"] == layout["workers"]
        log = runtime.log_of(f"GG-ML-INF-image-classification-{SERVICE}")
    assert f"inference layout (auto) {layout['summary']}" in log
    if layout["workers"] > 1:
        assert f"retired for one with {layout['threads']}" in log


def test_auto_layout_with_room_for_one_worker_keeps_one_with_every_core(tmp_path, digits_model, sdk_env):
    cores = len(os.sched_getaffinity(0))
    runtime = GGICRuntime(tmp_path, [connector_entry(digits_model, service_name=SERVICE,
                                                     LocalInferenceServiceMemoryLimitKB="350000")],
                          run_args=["--workers", "auto"])
    with runtime:
        sdk_env(runtime)
        supervisor = runtime.connector_status()["supervisor"]
        layout = supervisor["layout"]
        assert 350_000 < 2 * layout["need_kb"] * LAYOUT_MARGIN, "the digits model grew: pick a smaller limit"
        assert (layout["workers"], layout["threads"]) == (1, cores)
        assert [worker["threads"] for worker in supervisor["workers"]] == [cores]
        answers = _invoke_all([image.png for image in digits_images()[:3]], clients=1)
        assert len(answers) == 3


def test_stopping_while_the_heartbeat_pings_raises_nothing_in_any_thread(digits_model, monkeypatch):
    """Natively hosted, the supervisor lives in the runtime's process: stopping it while its heartbeat is writing a
    ping to a worker (stop() closes the worker's input) must end quietly, not with a traceback in the runtime."""
    from connector.image_classification.parameters import ImageClassificationParameters
    from connector.image_classification.supervisor import InferenceSupervisor

    failures: List[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(f"{args.thread.name}: "
                                                                                f"{args.exc_type.__name__}"))
    environment = dict(os.environ, **connector_entry(digits_model)["Parameters"])
    parameters = ImageClassificationParameters.from_environment(environment)
    for _ in range(3):  # pings every millisecond: a stop lands on one in flight most of the time
        supervisor = InferenceSupervisor(parameters, environment, heartbeat_interval_s=0.001)
        supervisor.start()
        threading.Event().wait(0.05)
        supervisor.stop()
        assert all(worker.process.poll() is not None for worker in supervisor.workers)
    threading.Event().wait(0.1)  # the heartbeat thread's last round
    assert failures == []
