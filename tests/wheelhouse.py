"""The packages the install tests install, downloaded once by `make test` (`make wheelhouse`) into build/wheelhouse/.

tests/test_install.py, test_wheel_install.py and test_greengrass.py run install/x86_64.sh for real, and pip
resolves its pins there; the tests themselves reach no network: they run pip with `PIP_NO_INDEX=1` and
`PIP_FIND_LINKS=build/wheelhouse` (tests/installs.py `clean_env`), as a device with a local package mirror does.
This step is setup, like `make clients`: it downloads from PyPI, for this venv's Python and for Python 3.8 (the
Greengrass v1 step the tests run), what the built wheel needs under that Python's pins, plus the build backend for
the source install of the v2 recipe. A Python this machine lacks is skipped with the reason; a rerun with the same
pins does nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script (`make wheelhouse`)
    sys.path.insert(0, str(REPO))
from install.constraints.resolve import constraints_for  # noqa: E402  (the pins the install scripts choose)

WHEELHOUSE = REPO / "build" / "wheelhouse"
PYTHONS = (sys.executable, "python3.8")  # the first by path, the other by its Lambda runtime name
BUILD_BACKEND = ("setuptools", "wheel")


def python_version(python: str) -> str:
    """"3.8": that interpreter's version, as the pins are chosen by it."""
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                          text=True, check=True).stdout.strip()


def download(python: str, wheel: Path) -> Optional[str]:
    """Download for one Python; the reason when skipped."""
    if Path(python).is_absolute():
        found = python
    else:  # found as the runtime finds a Lambda's Python (pyenv's versions included)
        from connector.core.interpreters import InterpreterNotFoundError, resolve

        try:
            found = resolve(python).path
        except InterpreterNotFoundError as exc:
            return str(exc)
    constraints = constraints_for(python_version(found))
    digest = hashlib.sha256(constraints.read_bytes() + (REPO / "setup.py").read_bytes()).hexdigest()[:16]
    stamp = WHEELHOUSE / f".{Path(found).name}-{digest}"
    if stamp.exists():
        return None
    print(f"wheelhouse: the wheel's dependencies for {found} under {constraints.relative_to(REPO)}", flush=True)
    subprocess.run([found, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--only-binary=:all:",
                    "-d", str(WHEELHOUSE), "-c", str(constraints), str(wheel), *BUILD_BACKEND], check=True)
    stamp.touch()
    return None


def main() -> int:
    [wheel] = sorted((REPO / "build" / "dist").glob("ggic-*.whl"))
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    for python in PYTHONS:
        reason = download(python, wheel)
        if reason:
            print(f"wheelhouse: skipping {python}: {reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
