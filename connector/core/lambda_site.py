"""The Lambda site: the one directory of Python code this core gives every function process, on any Python.

A Greengrass core gives each Lambda runtime its own `lambda_runtime.py` with the core-side modules beside it,
`greengrass_common` and `greengrass_ipc_python_sdk`; a Lambda's package brings the rest (greengrasssdk, the ML SDK,
numpy). The site holds exactly those, plus this project's `greengrass_machine_learning_sdk` as a fallback for a
Lambda that does not bundle one (a bundled copy comes first on the path and wins). All of it runs on Python 2.7 and
3.7+, which is why the site is a copy of just these files: the runtime's own site-packages are for its own Python.

The copy is made once per content (`<state-dir>/lambda-site/<digest>/`), so runtimes of different versions that
share a state directory never change each other's files under a running function. `ggic env` puts it on
PYTHONPATH, so a plain process on any Python can act as a Lambda.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import List, Tuple

from connector.contract import environment, logformat

PACKAGES = ("greengrass_common", "greengrass_ipc_python_sdk", "greengrass_machine_learning_sdk")
RUNTIME_SCRIPT = "lambda_runtime.py"
# The contract's modules the runtime loop imports (both written for Python 2.7 and 3), by their names in the site.
CONTRACT_MODULES = ((environment, "ggic_environment.py"), (logformat, "ggic_logformat.py"))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the core-side package {name} is not installed with ggic")
    return Path(list(spec.submodule_search_locations)[0])


def site_files() -> List[Tuple[Path, str]]:
    """(source file, name in the site) for everything a function process imports from the core."""
    files = [(Path(__file__).with_name(RUNTIME_SCRIPT), RUNTIME_SCRIPT),
             *((Path(module.__file__), name) for module, name in CONTRACT_MODULES)]
    for package in PACKAGES:
        directory = _package_dir(package)
        files += [(path, f"{package}/{path.name}") for path in sorted(directory.glob("*.py"))]
    return files


def build_lambda_site(parent: Path) -> Path:
    """The site directory for the installed code under `parent`, made (atomically) when it is not there yet."""
    files = [(source, name, source.read_bytes()) for source, name in site_files()]
    digest = hashlib.sha256()
    for _, name, content in files:
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    site = parent / digest.hexdigest()[:16]
    if site.is_dir():
        return site
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{site.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for _, name, content in files:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    try:
        staging.rename(site)
    except OSError:  # another runtime made the same site first: theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
        if not site.is_dir():
            raise
    return site
