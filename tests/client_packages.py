"""The real packages a user's Lambda bundles, for tests/test_real_clients.py: every greengrasssdk release on PyPI,
and numpy for each Python the connector documentation's usage examples run on.

`make test` runs this file (`make clients`): each package is installed from PyPI, once, into a folder of its own
under build/clients/ (a Lambda's deployment package holds such folders beside its code). A Python that this machine
lacks is skipped with the reason; the tests skip its cells the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "build" / "clients"

# greengrasssdk: every release on PyPI (all declare Python 2.7; 1.4.0 and later also 3.7).
SDK_VERSIONS = ("1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.6.1")
# The Pythons a Greengrass v1 Lambda ran on (2.7 for version 1 of the connector, 3.7 for version 2, 3.8 on later
# cores), and every later one up to the newest here (3.11 is the runtime's own).
PYTHONS = ("python2.7", "python3.7", "python3.8", "python3.9", "python3.10", "python3.11", "python3.12",
           "python3.13")
# numpy for the usage examples, the newest release with a wheel for each Python.
NUMPY = {"python2.7": "1.16.6", "python3.7": "1.21.6", "python3.8": "1.24.4"}


def sdk_dir(version: str) -> Path:
    """Holds `greengrasssdk/` of that release."""
    return ROOT / f"greengrasssdk-{version}"


def numpy_dir(runtime: str) -> Path:
    """Holds `numpy/` built for that Python."""
    return ROOT / f"numpy-{runtime}"


def interpreter(runtime: str):
    """The Interpreter for `runtime`, or the reason there is none (a str)."""
    from connector.core.interpreters import InterpreterNotFoundError, resolve

    try:
        return resolve(runtime)
    except InterpreterNotFoundError as exc:
        return str(exc)


def _pip_install(python: str, requirement: str, target: Path, *options: str) -> None:
    """`pip install --target` into a staging folder renamed into place, so a broken install leaves nothing."""
    if target.is_dir():
        return
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"clients: {requirement} for {Path(python).name} -> {target.relative_to(REPO)}", flush=True)
    # Run from ROOT: from the repository, pip would also check the editable ggic it finds there.
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                    "--target", str(staging), *options, requirement], check=True, cwd=ROOT,
                   env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore", "PIP_NO_PYTHON_VERSION_WARNING": "1"})
    staging.rename(target)


def install() -> Dict[str, Optional[str]]:
    """Install what is missing; return {python: None when present, else why it is skipped}."""
    ROOT.mkdir(parents=True, exist_ok=True)
    for version in SDK_VERSIONS:  # pure-Python wheels (py2.py3): one folder serves every Python
        _pip_install(sys.executable, f"greengrasssdk=={version}", sdk_dir(version), "--no-deps")
    skipped: Dict[str, Optional[str]] = {}
    for runtime in PYTHONS:
        found = interpreter(runtime)
        skipped[runtime] = found if isinstance(found, str) else None
        if isinstance(found, str):
            print(f"clients: skipping {runtime}: {found}", flush=True)
        elif runtime in NUMPY:
            _pip_install(found.path, f"numpy=={NUMPY[runtime]}", numpy_dir(runtime), "--only-binary", ":all:")
    return skipped


if __name__ == "__main__":
    install()
