"""install/armv7l.sh and install/nvidiajtx2.sh: dry runs that print the real commands and change nothing.

Their real runs, from a bare Debian to `ggic doctor` and an answer, are `make test-platforms` (emulated devices).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.material import REPO
from tests.test_install import INSTALL, JETPACK4, RASPBIAN, commands, debian_x86_64, install, installed

TRIXIE = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\nID=debian\n'


def apt_candidate(package: str) -> bool:
    result = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    return "Candidate:" in result.stdout and "Candidate: (none)" not in result.stdout


@debian_x86_64
def test_armv7l_takes_numpy_and_opencv_from_apt_and_makes_a_venv_that_sees_them(tmp_path):
    wheel = tmp_path / "ggic-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"")
    venv = tmp_path / "venv"
    result = install("armv7l.sh", "--dry-run", "--venv", str(venv), "--wheel", str(wheel), arch="armv7l",
                     os_release=RASPBIAN, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = commands(result.stdout)
    wanted = ["ca-certificates", "python3", "python3-venv", "python3-numpy", "python3-opencv"]
    if apt_candidate("python3-onnxruntime"):
        wanted.append("python3-onnxruntime")
    else:
        assert "the archive has no python3-onnxruntime" in result.stdout
    missing = [p for p in wanted if not installed(p)]
    if missing:
        assert any(c.endswith("apt-get install -y --no-install-recommends " + " ".join(missing)) for c in printed)
    assert f"python3 -m venv --clear --system-site-packages {venv}" in printed
    pip = [c for c in printed if "/bin/pip install" in c]
    assert len(pip) == 1 and pip[0].startswith(f"{venv}/bin/pip install --disable-pip-version-check -c ")
    assert pip[0].endswith(str(wheel))  # ggic's wheel pulls only pure-Python packages from PyPI here
    assert "not PyPI (kept out of pip's constraints): numpy opencv-python-headless" in result.stdout
    assert not venv.exists()


def test_the_constraints_given_to_pip_leave_out_what_the_distribution_provides(tmp_path):
    """A pin on numpy would make pip replace Debian's numpy with a PyPI one that has no armv7l wheel."""
    out = tmp_path / "constraints.txt"
    script = (f"source {INSTALL}/common.sh; source {INSTALL}/arm.sh; "
              f"DISTRIBUTION_PYTHON_PACKAGES=(numpy opencv-python-headless onnxruntime); filtered_constraints {out}")
    subprocess.run(["bash", "-e", "-c", script], check=True, timeout=30)
    original = (INSTALL / "constraints.txt").read_text().splitlines()
    names = {line.split("==")[0].lower() for line in out.read_text().splitlines() if "==" in line}
    assert not names & {"numpy", "opencv-python-headless", "onnxruntime", "mxnet"}
    assert {"jsonschema", "boto3", "prometheus-client", "paho-mqtt"} <= {n.replace("_", "-") for n in names}
    assert len(out.read_text().splitlines()) == len(original) - 4


@debian_x86_64
def test_jetson_installs_onnxruntime_and_opencv_from_pypi_with_python38_on_jetpack4(tmp_path):
    venv = tmp_path / "venv"
    result = install("nvidiajtx2.sh", "--dry-run", "--venv", str(venv), arch="aarch64", os_release=JETPACK4,
                     tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = commands(result.stdout)
    apt = next((c for c in printed if "apt-get install" in c), "")
    for package in ("python3.8", "python3.8-venv", "ca-certificates"):
        assert package in apt.split() or installed(package)
    assert f"python3.8 -m venv --clear {venv}" in printed
    pip = [c for c in printed if "/bin/pip install" in c]
    assert pip[0].endswith(" numpy opencv-python-headless onnxruntime")
    built = sorted((REPO / "build" / "dist").glob("ggic-*.whl"), key=lambda p: p.stat().st_mtime)
    assert pip[1].endswith(str(built[-1] if built else REPO))  # no --wheel: make wheel's, else this source tree
    assert "mxnet" not in " ".join(pip)
    assert not venv.exists()


@debian_x86_64
def test_jetson_with_nvidias_onnxruntime_wheel_keeps_it(tmp_path):
    """onnxruntime-gpu provides the module under another name: ggic goes in without deps so pip keeps it."""
    ort = tmp_path / "onnxruntime_gpu-1.19.0-cp38-cp38-linux_aarch64.whl"
    ort.write_bytes(b"")
    wheel = tmp_path / "ggic-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"")
    result = install("nvidiajtx2.sh", "--dry-run", "--venv", str(tmp_path / "venv"), "--onnxruntime-wheel", str(ort),
                     "--wheel", str(wheel), arch="aarch64", os_release=JETPACK4, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    pip = [c for c in commands(result.stdout) if "/bin/pip install" in c]
    assert pip[0].endswith(str(ort))
    assert pip[1].endswith(" numpy opencv-python-headless")
    assert pip[2].endswith(f"--no-deps {wheel}")
    assert "onnxruntime" not in pip[3].split("-c", 1)[1].split(None, 1)[1]


def test_armv7l_refuses_the_jetson_only_option_and_a_missing_wheel(tmp_path):
    result = install("armv7l.sh", "--dry-run", "--onnxruntime-wheel", "x.whl", arch="armv7l",
                     os_release=TRIXIE, tmp_path=tmp_path)
    assert result.returncode == 1 and "unknown option '--onnxruntime-wheel'" in result.stderr
    result = install("armv7l.sh", "--dry-run", "--wheel", str(tmp_path / "nope.whl"), arch="armv7l",
                     os_release=TRIXIE, tmp_path=tmp_path)
    assert result.returncode == 1 and f"{tmp_path}/nope.whl is not a .whl file" in result.stderr


def test_arm_help_lists_the_options():
    usage = install("nvidiajtx2.sh", "--help")
    assert usage.returncode == 0
    for option in ("--dry-run", "--venv", "--wheel", "--python", "--onnxruntime-wheel"):
        assert option in usage.stdout
    assert "--onnxruntime-wheel" not in install("armv7l.sh", "--help").stdout


def pythons() -> list:
    """This machine's Pythons 3.8-3.13 (pyenv's, else on the PATH): the range the ARM devices run."""
    found = {}
    for version in ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13"):
        for candidate in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python3")) + [
                Path(shutil.which(f"python{version}") or "/nonexistent")]:
            if candidate.is_file():
                found[version] = candidate
                break
    return sorted(found.items())


@pytest.mark.parametrize("version, python", pythons() or [pytest.param("none", None, id="none", marks=pytest.mark.skip(
    reason="no Python 3.8-3.13 found"))], ids=str)
def test_a_package_with_files_missing_is_found_for_repair_on_every_python(version, python, tmp_path):
    """Debian Trixie's Python 3.13 leaves missing paths out of Distribution.files: RECORD itself is read."""
    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    for name, files in (("intact", ["intact/__init__.py"]), ("lost", ["lost/__init__.py", "lost/client.py"])):
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "RECORD").write_text("".join(f"{f},,\n" for f in files + [f"{info.name}/METADATA",
                                                                           f"{info.name}/RECORD"]))
        (site / name).mkdir()
        for f in files:
            (site / f).write_text("")
    (site / "lost" / "client.py").unlink()  # deleted by hand
    result = subprocess.run(["bash", "-c", f"source {INSTALL}/common.sh; VENV={venv}; broken_distributions"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lost==1.0"], f"Python {version}: {result.stdout!r} {result.stderr}"
