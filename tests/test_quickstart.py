"""The README's quick start, followed word by word from a fresh clone.

The shell blocks of the README's "Quick start" section are run as written, in order, in real shells: the first
terminal (clone, `make run`, activate, the connector definition), the runtime it starts (`ggic run`, stopped with
Ctrl-C as a user would), and the second terminal (`ggic invoke`, `ggic status`). The only substitution is the
clone URL, which becomes this repository (its committed HEAD). The state directory is a temporary one
(`GGIC_STATE_DIR`), so the user's `~/.ggic` is not touched, and no AWS credentials are visible, so nothing reaches
AWS.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parent.parent
CLONE_URL = "<URL of this repository>"
# How long `ggic run` may take to say it is ready (the digits model loads in about 2 s here); a bound, not a
# measurement: the test waits for the log line and fails only if it never comes.
READY_BOUND_S = 180


def quickstart_blocks() -> List[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _environment(tmp_path: Path) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AWS_", "MAKE", "VIRTUAL_ENV", "GGIC_")) and key not in ("MFLAGS", "PYTHONPATH")}
    env.update(GGIC_STATE_DIR=str(tmp_path / "state"), AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def _bash(script: str, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_the_readme_quick_start_word_by_word(tmp_path: Path):
    blocks = quickstart_blocks()
    assert len(blocks) == 5, f"the quick start's shell blocks changed ({len(blocks)}): update this test"
    clone_and_demo, activate, definition, run, second_terminal = blocks
    assert CLONE_URL in clone_and_demo
    env = _environment(tmp_path)

    # Terminal 1: everything before `ggic run`, in one shell (so `cd ggic` and `source` carry on).
    first = _bash(clone_and_demo.replace(CLONE_URL, str(REPO)) + activate + definition, tmp_path, env, 900)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-4000:]
    # make run shows its progress and ends with the demo's answer.
    assert "==> installing ggic and what the demo needs" in output or "==> running the demo" in output, output[-3000:]
    assert "top prediction for test.jpg: espresso" in first.stdout, output[-3000:]
    version = re.search(r"^ggic/\d+\.\d+\.\d+ Python/", first.stdout, re.M)
    assert version, f"ggic --version printed: {first.stdout[-500:]}"
    assert '"LatestVersionArn"' in first.stdout
    clone = tmp_path / "ggic"

    # Terminal 1 goes on: the runtime in the foreground, until Ctrl-C.
    runtime = subprocess.Popen(["bash", "-e", "-c", "source .venv/bin/activate\n" + run], cwd=clone, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines: List[str] = []
    reader = threading.Thread(target=lambda: lines.extend(runtime.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_BOUND_S
        while not any("runtime ready" in line for line in lines):
            assert runtime.poll() is None and time.monotonic() < deadline, "".join(lines)[-4000:]
            time.sleep(0.1)

        # Terminal 2.
        second = _bash(second_terminal, clone, env, 120)
        assert second.returncode == 0, second.stdout + second.stderr
        top = second.stdout.splitlines()[0].split()
        assert top[1] == "7", f"the README's digit-7.png was answered with class {top[1]}:\n{second.stdout}"
        assert 0.5 < float(top[0]) <= 1.0
        assert "ready" in second.stdout.lower()
    finally:
        # Ctrl-C, as the README says: the terminal sends SIGINT to the foreground process group.
        os.killpg(runtime.pid, signal.SIGINT)
        runtime.wait(timeout=60)
        reader.join(10)
    log = "".join(lines)
    assert runtime.returncode == 0, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
