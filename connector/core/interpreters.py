"""Which Python runs a Lambda: a runtime name as AWS Lambda spells it (`python2.7`, `python3.7`, ...) or an
interpreter's path, resolved to an interpreter on this machine.

A Greengrass v1 core ran each Lambda on the Python its runtime named (python2.7 and python3.7, python3.8 on later
cores), whatever Python the core itself used. Here a name is looked up on PATH, then among pyenv's versions
(`$PYENV_ROOT/versions/X.Y.*`, newest patch first); every candidate is run once to learn its version, because a
pyenv shim on PATH fails for a version that is not active, and a `python3` may be any 3.x.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Tuple

SUPPORTED = "python2.7, or python3.7 and newer"
_RUNTIME_NAME = re.compile(r"python(\d)\.(\d{1,2})\Z")
_PROBE = "import sys; sys.stdout.write('%d.%d.%d' % sys.version_info[:3])"
PROBE_TIMEOUT_S = 30.0


class RuntimeNotSupportedError(ValueError):
    """The runtime is not a Python this core runs Lambdas on."""


class InterpreterNotFoundError(LookupError):
    """No interpreter on this machine answers to the runtime's name."""


@dataclass(frozen=True)
class Interpreter:
    """A Python that runs Lambdas: `runtime` is its AWS name (python3.7), `path` the executable."""

    runtime: str
    path: str
    version: Tuple[int, int, int]


def is_supported(version: Tuple[int, ...]) -> bool:
    """The Pythons the core-side modules, the ML SDK and the runtime loop are written for."""
    return tuple(version[:2]) == (2, 7) or tuple(version[:2]) >= (3, 7)


def runtime_name(version: Tuple[int, ...]) -> str:
    return f"python{version[0]}.{version[1]}"


def probe(path: str) -> Tuple[int, int, int]:
    """Run `path` once and return its version; OSError or ValueError (with what it said) when it cannot run."""
    try:
        result = subprocess.run([path, "-E", "-c", _PROBE], capture_output=True, timeout=PROBE_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ValueError(f"did not answer within {PROBE_TIMEOUT_S:.0f} s") from None
    text = result.stdout.decode("ascii", "replace").strip()
    if result.returncode != 0 or not re.fullmatch(r"\d+\.\d+\.\d+", text):
        said = (result.stderr or result.stdout).decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"exit status {result.returncode}" + (f": {said[0]}" if said else ""))
    major, minor, micro = (int(part) for part in text.split("."))
    return major, minor, micro


def pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _candidates(major: int, minor: int) -> Iterator[str]:
    """`pythonX.Y` on PATH, then pyenv's X.Y.* versions, newest first; each path once."""
    seen = set()
    name = f"python{major}.{minor}"
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            seen.add(os.path.realpath(path))
            yield path
    versions = []
    for directory in (pyenv_root() / "versions").glob(f"{major}.{minor}.*"):
        match = re.fullmatch(rf"{major}\.{minor}\.(\d+)", directory.name)
        path = directory / "bin" / name
        if match and path.is_file():
            versions.append((int(match.group(1)), str(path)))
    for _, path in sorted(versions, reverse=True):
        if os.path.realpath(path) not in seen:
            yield path


@functools.lru_cache(maxsize=None)
def resolve(runtime: str) -> Interpreter:
    """The interpreter for `runtime`: a name (`python3.8`) or an interpreter's path (`/usr/bin/python3.8`)."""
    if os.sep in runtime:
        return _explicit(runtime)
    match = _RUNTIME_NAME.fullmatch(runtime)
    if match is None:
        raise RuntimeNotSupportedError(f"runtime {runtime!r} is not supported: Lambdas here run on {SUPPORTED} "
                                       f"(a runtime name such as python3.8, or an interpreter's path)")
    major, minor = int(match.group(1)), int(match.group(2))
    if not is_supported((major, minor)):
        raise RuntimeNotSupportedError(f"runtime {runtime} is not supported: Lambdas here run on {SUPPORTED}")
    failures: List[str] = []
    for path in _candidates(major, minor):
        try:
            version = probe(path)
        except (OSError, ValueError) as exc:
            failures.append(f"{path} ({exc})")
            continue
        if version[:2] == (major, minor):
            return Interpreter(runtime, path, version)
        failures.append(f"{path} (is Python {'.'.join(map(str, version))})")
    tried = f"; tried {', '.join(failures)}" if failures else ""
    raise InterpreterNotFoundError(
        f"runtime {runtime}: no Python {major}.{minor} interpreter found on PATH or in {pyenv_root() / 'versions'}"
        f"{tried}. Install Python {major}.{minor} (e.g. `pyenv install {major}.{minor}`) or give the interpreter's "
        f"path instead of the runtime name (PATH.py@/path/to/python{major}.{minor})")


def _explicit(path_text: str) -> Interpreter:
    path = os.path.abspath(os.path.expanduser(path_text))
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise InterpreterNotFoundError(f"runtime {path_text}: no executable file {path}")
    try:
        version = probe(path)
    except (OSError, ValueError) as exc:
        raise InterpreterNotFoundError(f"runtime {path_text}: {path} does not run as Python: {exc}") from None
    if not is_supported(version):
        raise RuntimeNotSupportedError(f"runtime {path_text} is Python {'.'.join(map(str, version))}, which is not "
                                       f"supported: Lambdas here run on {SUPPORTED}")
    return Interpreter(runtime_name(version), path, version)
