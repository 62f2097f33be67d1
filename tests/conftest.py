"""Shared fixtures: no test reaches AWS, the internet or the instance metadata service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.material import DIGITS_MODEL, REPO

sys.path.insert(0, str(REPO))
from bench.load import offline_env  # noqa: E402  (the same clean environment the load bench gives its runtime)

# Before anything imports boto3: no real credentials, no metadata service, no endpoint overrides, no GGIC_ knobs.
_clean = offline_env({name: value for name, value in os.environ.items() if not name.startswith("GGIC_")})
os.environ.clear()
os.environ.update(_clean)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (ended, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="session")
def efficientnet_model(tmp_path_factory) -> Path:
    """The demo's real ImageNet model (EfficientNet-Lite0 from its PyPI wheel) in the SageMaker layout."""
    from examples.models.efficientnet_lite0 import build

    return build(tmp_path_factory.mktemp("efficientnet-lite0"))


@pytest.fixture(scope="session")
def digits_model() -> Path:
    assert (DIGITS_MODEL / "image-classification-symbol.json").is_file()
    return DIGITS_MODEL


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real moto_server on 127.0.0.1, for SageMaker (and later S3) calls."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail("moto_server exited at start")
            time.sleep(0.2)
    else:
        pytest.fail("moto_server did not listen within 60 s")
    yield endpoint
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory):
    """A real MQTT broker (mosquitto) on 127.0.0.1: yields (host, port)."""
    from mosquitto import MosquittoBroker, MosquittoMissingError

    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"), free_port())
    try:
        broker.start()
    except MosquittoMissingError as exc:
        pytest.fail(str(exc))
    yield broker.address
    broker.stop()


@pytest.fixture
def sdk_env(monkeypatch):
    """Make this test process a Lambda of the given runtime (what `eval "$(ggic env)"` does)."""
    def apply(runtime) -> None:
        for name, value in runtime.client_env.items():
            monkeypatch.setenv(name, value)
    return apply


@pytest.fixture(scope="session")
def ggic_wheel() -> Path:
    """`make wheel` (build/dist/ggic-*.whl), built once per session from this checkout."""
    from tests.installs import build_wheel

    return build_wheel()


@pytest.fixture(scope="session")
def installed_venv(tmp_path_factory, ggic_wheel):
    """install/x86_64.sh --wheel (the built wheel, not editable) into a clean venv: (venv, the script's run)."""
    if os.uname().machine != "x86_64" or not (Path("/usr/bin/dpkg-query").exists() or Path("/usr/bin/rpm").exists()):
        pytest.skip("install/x86_64.sh is for x86_64 Debian, Ubuntu or Amazon Linux machines")
    from tests.installs import INSTALL_SCRIPTS, base_python, run_install_script

    venv = tmp_path_factory.mktemp("installed") / "venv"
    run = run_install_script(INSTALL_SCRIPTS / "x86_64.sh", venv, "--python", base_python(), "--wheel",
                             str(ggic_wheel))
    return venv, run
