"""Which Pythons the pins serve: resolve ggic's runtime dependencies for each Python and platform against PyPI.

For each Python (a real interpreter, so that dependency markers are evaluated for that version) and each platform,
`pip install --dry-run --only-binary=:all: --platform ...` resolves the requirements of the built wheel (its
install_requires, markers evaluated for that platform: pip itself would evaluate them for this machine) under the
constraints file that the install scripts and the Makefile choose for that Python (`constraints_for`). Prints a table
and writes JSON. Needs the internet; a maintainer's tool, not a test.

    python install/constraints/resolve.py build/dist/ggic-*.whl --python ~/.pyenv/versions/3.8.18/bin/python ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

INSTALL = Path(__file__).resolve().parents[1]
#: The platforms PyPI has wheels for, as `pip --platform` names them (manylinux2014 and the newer glibc tags).
PLATFORMS = {
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64"],
    "aarch64": ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                "manylinux_2_28_aarch64"],
}


def constraints_for(version: str) -> Path:
    """What install/common.sh and the Makefile pick: install/constraints/pyXY.txt if present, else the main file."""
    specific = INSTALL / "constraints" / f"py{version.replace('.', '')}.txt"
    return specific if specific.is_file() else INSTALL / "constraints.txt"


def runtime_requirements(wheel: Path, machine: str, version: str) -> list[str]:
    """The wheel's Requires-Dist without extras, markers evaluated for `machine` and Python `version`."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    environment = {"platform_machine": machine, "python_version": version, "extra": ""}
    wanted = []
    for line in lines:
        if line.startswith("Requires-Dist: "):
            requirement = Requirement(line[len("Requires-Dist: "):])
            if requirement.marker is None or requirement.marker.evaluate(environment):
                wanted.append(str(Requirement(f"{requirement.name}{requirement.specifier}")))
    return wanted


def resolve(python: str, machine: str, wheel: Path) -> dict:
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    constraints = constraints_for(version)
    requirements = runtime_requirements(wheel, machine, version)
    platforms = [argument for tag in PLATFORMS[machine] for argument in ("--platform", tag)]
    with tempfile.TemporaryDirectory() as target:
        report = Path(target) / "report.json"
        # Only PyPI: no pip configuration (this machine's local indexes and caps), no local wheels.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        started = time.monotonic()
        done = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "--dry-run",
                               "--ignore-installed", "--only-binary=:all:", *platforms, "--target", target,
                               "--report", str(report), "-c", str(constraints), *requirements],
                              capture_output=True, text=True, env=env, timeout=600)
        seconds = time.monotonic() - started
        installed = {}
        if done.returncode == 0:
            for item in json.loads(report.read_text())["install"]:
                installed[item["metadata"]["name"]] = item["metadata"]["version"]
    error = ""
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        error = " ".join(lines[:2])[:400]
    return {"python": version, "machine": machine, "constraints": str(constraints.relative_to(INSTALL.parent)),
            "requirements": requirements, "resolved": done.returncode == 0, "installs": installed,
            "error": error, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--python", action="append", required=True, help="an interpreter (repeatable)")
    parser.add_argument("--machine", action="append", choices=sorted(PLATFORMS), help="default: all")
    parser.add_argument("--json", type=Path, default=Path("build/constraints-resolution.json"))
    args = parser.parse_args(argv)
    results = [resolve(python, machine, args.wheel) for python in args.python
               for machine in (args.machine or sorted(PLATFORMS))]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    sys.stdout.write(f"{'Python':<7} {'machine':<8} {'constraints':<34} {'resolves':<9} key versions / error\n")
    for r in results:
        keys = ", ".join(f"{name} {r['installs'][name]}" for name in ("numpy", "mxnet", "onnxruntime",
                                                                        "opencv-python-headless")
                         if name in r["installs"])
        sys.stdout.write(f"{r['python']:<7} {r['machine']:<8} {r['constraints']:<34} "
                         f"{'yes' if r['resolved'] else 'NO':<9} {keys or r['error']}\n")
    return 0 if all(r["resolved"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
