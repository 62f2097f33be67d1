"""Start-up as a user lives it: Ctrl-C while the model loads stops `ggic run` at once and quietly.

(A shape on which the training job and model-shapes.json disagree is in tests/test_training_job.py; the memory
limits' start-up errors, each with the limit that would work, in tests/test_limits.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from bench.harness import GGIC, REPO, connector_entry, ggic
from conftest import process_running

SERVICE_LOG = "GG-ML-INF-image-classification-imageClassification.log"
# A bound for waiting on lines the runtime writes within a second or two here; the test never sleeps for it.
BOUND_S = 120


def _wait_for(predicate, what: str):
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what} not seen within {BOUND_S} s")


def test_ctrl_c_while_the_model_loads_stops_quietly(tmp_path: Path, digits_model):
    state = tmp_path / "state"
    created = ggic("create-connector-definition", "--state-dir", str(state), "--name", "quick",
                   "--initial-version", json.dumps({"Connectors": [connector_entry(digits_model)]}))
    assert created.returncode == 0, created.stderr.decode()
    # Its own session, as a terminal's foreground job: Ctrl-C sends SIGINT to the whole process group.
    runtime = subprocess.Popen(GGIC + ["run", "--state-dir", str(state), "--port", "0",
                                       "--connector-definition", "quick"], cwd=REPO, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def worker_starting():
            for log in (state / "greengrass").rglob(SERVICE_LOG):
                match = re.search(r"inference worker (\d+) starting", log.read_text(errors="replace"))
                if match:
                    return int(match.group(1))
            return None

        worker = _wait_for(worker_starting, "the inference worker starting")
        assert not (state / "env").exists(), "the runtime was ready before Ctrl-C: nothing was interrupted"
        os.killpg(runtime.pid, signal.SIGINT)
        output, _ = runtime.communicate(timeout=BOUND_S)
    finally:
        if runtime.poll() is None:
            runtime.kill()
    assert runtime.returncode == 128 + signal.SIGINT, output
    assert "interrupted by SIGINT while starting" in output, output
    for noise in ("Traceback", "KeyboardInterrupt", "failed to initialize", "failed to start", "ERROR"):
        assert noise not in output, output
    _wait_for(lambda: not process_running(worker), f"inference worker {worker} gone")
    assert not (state / "env").exists() and not (state / "runtime.json").exists()
