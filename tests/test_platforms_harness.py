"""The fast parts of `make test-platforms` (tests/platforms/): answers compared, steps bounded, mounts undone.

The emulated runs themselves take minutes per platform and need root and the network: `make test-platforms`.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.platforms.emulated import (PlatformResult, compare, connector_definition, parse_answer,
                                      summary_table)
from tests.platforms.rootfs import (PLATFORMS, Mounts, PlatformError, StepTimeout, mounted_under, run_step,
                                    unmount_leftovers)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_the_connectors_answer_is_parsed_and_compared_by_largest_difference_and_top1():
    here = parse_answer("[0.1,0.7,0.2]")
    assert here == [0.1, 0.7, 0.2]
    worst, top1 = compare({"a.png": here}, {"a.png": [0.1, 0.69999, 0.20001]})
    assert worst == pytest.approx(1e-5, rel=1e-3)
    assert top1 == {"a.png": [1, 1]}
    _, top1 = compare({"a.png": [0.5, 0.4, 0.1]}, {"a.png": [0.4, 0.5, 0.1]})
    assert top1 == {"a.png": [0, 1]}  # a changed top-1 is seen


def test_an_error_instead_of_an_answer_is_reported_with_what_came():
    with pytest.raises(PlatformError, match="not the connector's .* answer: 'ValueError: bad image'"):
        parse_answer("ValueError: bad image")
    with pytest.raises(PlatformError, match="2 classes, x86_64 answered 3"):
        compare({"a.png": [0.5, 0.5]}, {"a.png": [0.2, 0.3, 0.5]})


def test_each_platform_runs_its_devices_connector_and_install_script():
    assert {p.machine: p.install_script for p in PLATFORMS.values()} == {
        "aarch64": "install/nvidiajtx2.sh", "armv7l": "install/armv7l.sh"}
    for platform in PLATFORMS.values():
        assert (Path(__file__).parent.parent / platform.install_script).is_file()
    arn = connector_definition("armv7l", "/m")["Connectors"][0]["ConnectorArn"]
    assert "/connectors/ImageClassificationARMv7/" in arn


def test_a_step_past_its_limit_is_killed_with_everything_it_started(tmp_path):
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(StepTimeout, match="still running after 1 s"):
        run_step(["bash", "-c", f"sleep 60 & echo $! > {marker}; wait"], 1, tmp_path / "log", "sleeper")
    assert time.monotonic() - started < 10
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel reaps the killed grandchild (re-parented) asynchronously
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split(") ", 1)[1][0] == "Z"


def test_a_failing_step_says_which_and_shows_its_output(tmp_path):
    with pytest.raises(PlatformError, match=r"(?s)apt step: exit status 3 .*E: no such package"):
        run_step(["bash", "-c", "echo 'E: no such package' >&2; exit 3"], 30, tmp_path / "log", "apt step")


@needs_root
def test_every_mount_is_undone_even_when_the_step_inside_fails(tmp_path):
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="the step failed"):
        with Mounts(root) as mounts:
            mounts.device_mounts("arm64")
            points = mounted_under(root)
            assert {str(root / p) for p in ("proc", "sys", "dev", "dev/pts", "dev/shm", "proc/cpuinfo")} <= set(points)
            # the device sees an ARM CPU; the host's own /proc/cpuinfo is untouched (private mounts)
            assert "CPU architecture: 8" in (root / "proc" / "cpuinfo").read_text()
            assert "CPU architecture: 8" not in Path("/proc/cpuinfo").read_text()
            raise RuntimeError("the step failed")
    assert mounted_under(root) == []
    assert str(root) not in Path("/proc/mounts").read_text()


@needs_root
def test_the_cleanup_kills_what_still_runs_inside_the_device(tmp_path):
    """A process whose root is the device (a chroot) would keep its mounts busy: close() kills it first."""
    root = tmp_path / "root"
    for directory in ("usr", "lib", "lib64", "bin"):
        if Path(f"/{directory}").is_symlink():
            (root / directory).parent.mkdir(parents=True, exist_ok=True)
            (root / directory).symlink_to(os.readlink(f"/{directory}"))
    (root / "usr").mkdir(parents=True, exist_ok=True)
    mounts = Mounts(root)
    mounts._mount(["--bind", "-o", "ro", "/usr"], root / "usr")
    sleeper = subprocess.Popen(["chroot", str(root), "/usr/bin/sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{sleeper.pid}/root") != str(root.resolve()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mounts.close() == []
        assert sleeper.wait(timeout=10) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        mounts.close()


def test_the_summary_table_has_every_step_the_answers_and_the_verdict():
    passed = PlatformResult("arm64-bookworm", "bookworm", "arm64", "install/nvidiajtx2.sh", passed=True,
                            steps={"unpack": 2.04, "install script": 400.0}, engine="onnxruntime",
                            versions={"python": "3.11.2", "numpy": "1.23.5", "cv2": "4.10.0", "onnxruntime": "1.32.0"},
                            max_abs_dp=3.2e-7, top1={"digit-7.png": [7, 7]})
    failed = PlatformResult("armhf-bookworm", "bookworm", "armhf", "install/armv7l.sh", error="x",
                            steps={"unpack": 3.0})
    table = summary_table([passed, failed], {"ggic run until ready": 9.0})
    lines = table.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:4]] == ["step", "arm64-bookworm", "armhf-bookworm"]
    assert "| unpack " in table and "2.0 s" in table and "400.0 s" in table
    install_row = next(line for line in lines if line.startswith("| install script"))
    assert install_row.rstrip(" |").endswith("-")  # not reached on armhf
    assert "3.2e-07" in table and "digit-7.png: 7/7" in table
    assert "3.11.2 / 1.23.5 / 4.10.0 / 1.32.0" in table
    result_row = next(line for line in lines if line.startswith("| result"))
    assert [cell.strip() for cell in result_row.split("|")[2:4]] == ["PASS", "FAIL"]
    assert "x86_64 reference (MXNet, this host): ggic run until ready 9.0 s" in table


@needs_root
def test_mounts_left_by_a_killed_run_are_undone_by_the_next(tmp_path):
    """SIGKILL leaves no cleanup: the next run unmounts what is left under its directory before it starts."""
    outer, inner = tmp_path / "run" / "root" / "proc", tmp_path / "run" / "root" / "proc" / "x"
    outer.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "left", str(outer)], check=True)
    inner.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "left", str(inner)], check=True)
    assert unmount_leftovers(tmp_path / "run") == [str(inner), str(outer)]  # the deepest first
    assert mounted_under(tmp_path) == []
