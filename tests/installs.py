"""ggic installed as users install it: the wheel `make wheel` builds, installed by install/x86_64.sh into a clean venv.

Shared by tests/test_wheel_install.py, tests/test_install.py and tests/test_greengrass.py (fixtures in conftest.py):
the wheel and the Python 3.11 venv are built once per session. Installing resolves with the pins
(install/constraints.txt, or install/constraints/pyXY.txt for that Python) offline, from build/wheelhouse/
(`make wheelhouse`, tests/wheelhouse.py). Everything an installed ggic runs is started from the venv's own `bin/`, in a directory outside
the checkout and without PYTHONPATH, so nothing is imported from the source tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from bench.harness import START_TIMEOUT_S, connector_entry
from bench.material import REPO
from tests.wheelhouse import WHEELHOUSE

INSTALL_SCRIPTS = REPO / "install"
INSTALL_TIMEOUT_S = 600  # from the wheelhouse: about a minute on 2 busy cores
SERVICE = "imageClassification"


def build_wheel() -> Path:
    """`make wheel`: the wheel the install scripts and the ARM chroots install (build/dist/ggic-*.whl)."""
    result = subprocess.run(["make", "-s", "wheel", f"PYTHON={sys.executable}"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = sorted((REPO / "build" / "dist").glob("ggic-*.whl"))
    return wheel


def base_python() -> str:
    """This venv's interpreter outside any venv (what a device's python3 is)."""
    version = "%d.%d" % sys.version_info[:2]
    return str(Path(sys.base_prefix) / "bin" / f"python{version}")


def clean_env(extra_path: Optional[Path] = None) -> Dict[str, str]:
    """This process's environment without what would point an installed ggic at the checkout or at this venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("GGIC_INSTALL_")}
    paths = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(sys.executable).parent]
    if extra_path is not None:
        paths.insert(0, str(extra_path))
    env["PATH"] = os.pathsep.join(paths)
    # Offline: pip installs from the wheelhouse `make test` downloaded (tests/wheelhouse.py), never from an index.
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE))
    return env


def run_install_script(script: Path, venv: Path, *args: str,
                       env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    # Not compiling every module at install (Python compiles what it imports): the same files, in half the time.
    env = dict(env or clean_env(), PIP_NO_COMPILE="1")
    started = time.monotonic()
    result = subprocess.run(["bash", str(script), "--venv", str(venv), *args], capture_output=True, text=True,
                            env=env, cwd=venv.parent, timeout=INSTALL_TIMEOUT_S)
    result.seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def venv_python(venv: Path, code: str) -> str:
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                            env=clean_env(), cwd=venv.parent, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def serve_and_invoke(venv: Path, state_dir: Path, model_dir: Path, images: List[Path]) -> List[List[float]]:
    """`ggic create-connector-definition`, `ggic run` and one `ggic invoke` per image, all from the venv's bin/."""
    ggic = str(venv / "bin" / "ggic")
    env = clean_env()
    state_dir.mkdir(parents=True, exist_ok=True)
    created = subprocess.run([ggic, "create-connector-definition", "--state-dir", str(state_dir), "--name", "wheel",
                              "--initial-version", json.dumps({"Connectors": [connector_entry(model_dir)]})],
                             capture_output=True, text=True, env=env, cwd=state_dir, timeout=120)
    assert created.returncode == 0, created.stderr
    log = state_dir / "ggic-run.out"
    with open(log, "wb") as out:
        process = subprocess.Popen([ggic, "run", "--state-dir", str(state_dir), "--port", "0",
                                    "--connector-definition", json.loads(created.stdout)["Id"]],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=state_dir)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (state_dir / "env").is_file():
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        answers = []
        for image in images:
            answer = subprocess.run([ggic, "invoke", "--state-dir", str(state_dir), "--service-name", SERVICE,
                                     "--content-type", "image/png", "--body", f"fileb://{image}"],
                                    capture_output=True, text=True, env=env, cwd=state_dir, timeout=120)
            assert answer.returncode == 0, answer.stderr + log.read_text(errors="replace")
            answers.append(json.loads(answer.stdout))
        return answers
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) == 0, log.read_text(errors="replace")
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
