"""`ggic doctor` and the ELF reader under it, on this machine's real libraries."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess

import pytest

from bench.harness import ggic
from bench.material import REPO
from connector.devices import doctor
from connector.devices.elf import ElfError, newest_of_family, read_elf

x86_64_glibc = pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("ldconfig"),
                                  reason="these checks copy this machine's x86_64 glibc libraries")


def ldconfig_path(soname: str) -> str:
    """Where ldconfig says a library is: an oracle independent of the doctor's own search."""
    output = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    for line in output.splitlines():
        match = re.match(rf"\s+{re.escape(soname)} \(([^)]*)\) => (\S+)$", line)
        if match and ("x86-64" in match.group(1)) == (platform.machine() == "x86_64"):
            return match.group(2)
    pytest.skip(f"{soname} is not in ldconfig's cache")


@x86_64_glibc
def test_the_version_definitions_of_this_machines_libc_are_read():
    info = read_elf(ldconfig_path("libc.so.6"))
    assert info.soname == "libc.so.6"
    assert info.machine == "x86_64" and info.bits == 64
    assert info.defines("GLIBC_2.17") and info.defines("GLIBC_2.2.5")
    assert "libc.so.6" not in info.version_definitions  # the base entry is the soname, not a version
    assert newest_of_family(info.version_definitions, "GLIBC") >= "GLIBC_2.17"
    if shutil.which("readelf"):  # binutils, where installed, must agree name for name
        dump = subprocess.run(["readelf", "-V", info.path], capture_output=True, text=True, check=True).stdout
        section = dump.split(".gnu.version_d", 1)[1].split(".gnu.version_r", 1)[0]
        names = re.findall(r"Flags: (\w+)\s+Index: \d+\s+Cnt: \d+\s+Name: (\S+)", section)
        assert set(info.version_definitions) == {name for flags, name in names if flags != "BASE"}


def test_the_installed_libmxnet_needs_are_read():
    package = doctor.mxnet_package_dir()
    info = read_elf(package / "libmxnet.so")
    assert "libc.so.6" in info.needed and "libstdc++.so.6" in info.needed
    assert any(v.startswith("GLIBCXX_3.4") for v in info.version_requirements["libstdc++.so.6"])


def test_non_elf_and_truncated_files_are_refused_with_the_reason(tmp_path):
    text = tmp_path / "libnot.so.1"
    text.write_text("INPUT(-lc)\n")  # a linker script, as /usr/lib/.../libc.so is
    with pytest.raises(ElfError, match="not an ELF file"):
        read_elf(text)
    source = doctor.mxnet_package_dir() / "libmxnet.so"
    truncated = tmp_path / "libtruncated.so"
    truncated.write_bytes(source.read_bytes()[:4096])
    with pytest.raises(ElfError, match="truncated or corrupt"):
        read_elf(truncated)


def test_the_pins_the_doctor_checks_are_the_constraints_file():
    pins = dict(line.split("==") for line in (REPO / "install" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, version in doctor.PINNED.items():
        assert pins[name] == version, name


def test_doctor_passes_on_this_machine():
    result = ggic("doctor", "--json")
    report = json.loads(result.stdout)
    failed = [c for c in report["checks"] if c["status"] == "FAIL"]
    assert result.returncode == 0 and report["ok"], failed
    names = [c["name"] for c in report["checks"]]
    if platform.machine() == "x86_64":
        assert report["checks"][1]["found"] == "mxnet (the x86_64 default)"
    for expected in ("platform", "engine", "libc.so.6", "libstdc++.so.6", "libmxnet.so needs", "python", "mxnet", "numpy",
                     "opencv", "gpu"):
        assert expected in names
    text = ggic("doctor")
    assert text.returncode == 0
    assert text.stdout.decode().splitlines()[-1].startswith(f"{report['platform']}: ready (")


@x86_64_glibc
def test_a_library_lacking_a_version_and_a_missing_one_fail_with_advice(tmp_path):
    """A device sysroot where libstdc++ predates GLIBCXX_3.4.21 and librt.so.1 is gone."""
    libmxnet = read_elf(doctor.mxnet_package_dir() / "libmxnet.so")
    sonames = {lib.soname for lib in doctor.REQUIREMENTS["x86_64"]} | set(libmxnet.needed)
    for soname in sorted(sonames - {"librt.so.1", "libgfortran.so.3", "libopenblas.so.0"}):
        shutil.copy(ldconfig_path(soname), tmp_path / soname)
    old = tmp_path / "libstdc++.so.6"
    data = old.read_bytes()
    assert b"GLIBCXX_3.4.21\0" in data
    old.write_bytes(data.replace(b"GLIBCXX_3.4.21\0", b"GLIBCXX_3.4.2X\0"))  # same length: offsets unchanged

    result = ggic("doctor", "--json", "--platform", "x86_64", "--library-path", str(tmp_path))
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    stdcxx = checks["libstdc++.so.6"]
    assert stdcxx["status"] == "FAIL"
    assert "lacks GLIBCXX_3.4.21" in stdcxx["found"] and str(tmp_path) in stdcxx["found"]
    assert "libstdc++6" in stdcxx["advice"]
    assert checks["librt.so.1"]["status"] == "FAIL" and "not found" in checks["librt.so.1"]["found"]
    assert "install libc6" in checks["librt.so.1"]["advice"]
    assert checks["libc.so.6"]["status"] == "OK"
    assert checks["libmxnet.so needs"]["status"] == "FAIL"
    assert "librt.so.1 not found" in checks["libmxnet.so needs"]["found"]

    text = ggic("doctor", "--platform", "x86_64", "--library-path", str(tmp_path)).stdout.decode()
    assert re.search(r"^FAIL\s+libstdc\+\+\.so\.6\s+.*lacks GLIBCXX_3\.4\.21", text, re.M)
    assert re.search(r"^\s+-> this libstdc\+\+\.so\.6 is too old: upgrade libstdc\+\+6", text, re.M)
    assert "x86_64: NOT ready" in text.splitlines()[-1]


def test_another_platform_than_this_machines_fails_the_platform_check():
    other = "armv7l" if platform.machine() != "armv7l" else "x86_64"
    result = ggic("doctor", "--json", "--platform", other)
    assert result.returncode == 1
    check = json.loads(result.stdout)["checks"][0]
    assert check["name"] == "platform" and check["status"] == "FAIL"
    assert f"the {other} connector cannot run on this" in check["advice"]
