"""Emulated ARM Debian root filesystems: built once with debootstrap under qemu-user, cached as tarballs.

A chroot shares the host's kernel, so everything mounted into it is tracked by `Mounts` and undone in reverse order
on the way out, whatever happened (error, timeout, Ctrl-C, SIGTERM); processes still running inside are killed first
so nothing keeps a mount busy. Needs root, qemu-user-static with binfmt_misc handlers (flag F), and debootstrap.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

log = logging.getLogger(__name__)

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_ARCH_FOR_QEMU = {"arm64": "aarch64", "armhf": "arm"}
MACHINE_FOR_ARCH = {"arm64": "aarch64", "armhf": "armv7l"}

# What an ARM /proc/cpuinfo looks like to ONNX Runtime's cpuinfo library (>= 1.28 aborts on the host's x86 one).
ARM_CPUINFO = {
    "arm64": "".join(
        f"processor\t: {n}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
        for n in range(2)
    ),
    "armhf": "".join(
        f"processor\t: {n}\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\n"
        "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n"
        "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
        for n in range(2)
    ) + "Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n",
}


class PlatformError(Exception):
    """A step of the emulated platform run failed; the message names the step and what went wrong."""


class StepTimeout(PlatformError):
    """A step ran past its time limit and was killed."""


@dataclass(frozen=True)
class Platform:
    """One emulated device: a Debian suite and architecture, and the install script that serves it."""

    name: str
    suite: str
    arch: str
    install_script: str

    @property
    def machine(self) -> str:
        return MACHINE_FOR_ARCH[self.arch]

    def tarball(self, cache: Path) -> Path:
        return cache / f"rootfs-{self.suite}-{self.arch}.tar"


PLATFORMS: Dict[str, Platform] = {
    p.name: p
    for p in (
        Platform("arm64-bookworm", "bookworm", "arm64", "install/nvidiajtx2.sh"),
        Platform("armhf-bookworm", "bookworm", "armhf", "install/armv7l.sh"),
        Platform("armhf-trixie", "trixie", "armhf", "install/armv7l.sh"),
    )
}


def missing_prerequisites(platform: Platform) -> List[str]:
    """Why this machine cannot emulate `platform` (empty when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (chroot, mount)")
    if shutil.which("debootstrap") is None:
        problems.append("debootstrap is not installed (apt-get install debootstrap)")
    handler = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{DEBIAN_ARCH_FOR_QEMU[platform.arch]}"
    if not handler.exists() and os.geteuid() == 0 and shutil.which("update-binfmts"):
        # debootstrap can leave a fresh, empty binfmt_misc mount stacked over the registered one: register again
        subprocess.run(["update-binfmts", "--enable", handler.name], capture_output=True, timeout=60)
    if not handler.exists():
        problems.append(
            f"no binfmt_misc handler {handler} (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
            "apt-get install qemu-user-static binfmt-support)"
        )
    elif "F" not in _handler_flags(handler):
        problems.append(f"{handler} lacks flag F, so the interpreter is not usable inside a chroot")
    return problems


def _handler_flags(handler: Path) -> str:
    for line in handler.read_text().splitlines():
        if line.startswith("flags:"):
            return line.split(":", 1)[1].strip()
    return ""


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_step(argv: Sequence[str], timeout: float, log_file: Path, what: str,
             env: Optional[Dict[str, str]] = None) -> float:
    """Run `argv` in its own process group, output appended to `log_file`; killed after `timeout` s. Returns secs."""
    started = time.monotonic()
    with open(log_file, "ab") as out:
        out.write(f"\n### {what}: {argv[-1] if argv[0] == 'chroot' else ' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.wait()
            raise StepTimeout(f"{what}: still running after {timeout:.0f} s, killed (log: {log_file})") from None
        except BaseException:
            _kill_group(process)
            process.wait()
            raise
    if returncode != 0:
        raise PlatformError(f"{what}: exit status {returncode} (last lines of {log_file}):\n{tail(log_file)}")
    return time.monotonic() - started


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def mounted_under(root: Path) -> List[str]:
    """Mount points at or below `root`, from /proc/mounts (octal escapes decoded)."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


def processes_inside(root: Path) -> List[int]:
    """PIDs whose root directory is `root` (processes started by chroot into it)."""
    target = str(root.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "root") == target:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Mounts:
    """The mounts made into one chroot; `close()` kills what still runs inside, then unmounts them all."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.points: List[Path] = []

    def _mount(self, argv: Sequence[str], point: Path) -> None:
        if not point.exists():
            point.mkdir(parents=True)
        subprocess.run(["mount", *argv, str(point)], check=True, timeout=30)
        self.points.append(point)
        # Private: nothing mounted inside propagates back to the host, and the host's mounts stay out.
        subprocess.run(["mount", "--make-private", str(point)], check=True, timeout=30)

    def device_mounts(self, arch: str, arm_cpuinfo: bool = True) -> None:
        """/proc, /sys, /dev (+ /dev/pts, a fresh /dev/shm) and, over the x86 one, an ARM /proc/cpuinfo."""
        self._mount(["-t", "proc", "proc"], self.root / "proc")
        self._mount(["-t", "sysfs", "sysfs"], self.root / "sys")
        self._mount(["--bind", "/dev"], self.root / "dev")
        self._mount(["--bind", "/dev/pts"], self.root / "dev" / "pts")
        self._mount(["-t", "tmpfs", "-o", "mode=1777,size=512m", "shm"], self.root / "dev" / "shm")
        if arm_cpuinfo:
            cpuinfo = self.root / "run" / "ggic-arm-cpuinfo"
            cpuinfo.parent.mkdir(parents=True, exist_ok=True)
            cpuinfo.write_text(ARM_CPUINFO[arch])
            self._mount(["--bind", str(cpuinfo)], self.root / "proc" / "cpuinfo")

    def close(self) -> List[str]:
        """Kill what runs inside, unmount everything (reverse order). Returns mount points still there (none)."""
        for attempt in range(20):
            pids = processes_inside(self.root)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1 * (attempt + 1))
        for point in reversed(self.points):
            if str(point) not in mounted_under(point):
                continue  # already gone (debootstrap's second stage unmounts /proc and /sys itself)
            result = subprocess.run(["umount", str(point)], capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                log.warning("umount %s: %s; lazy unmount instead", point, result.stderr.strip())
                subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=60)
        self.points.clear()
        return mounted_under(self.root)

    def __enter__(self) -> "Mounts":
        return self

    def __exit__(self, *exc) -> None:
        left = self.close()
        if left:
            raise PlatformError(f"still mounted after cleanup: {left}")


def unmount_leftovers(root: Path) -> List[str]:
    """Unmount what an earlier run killed with SIGKILL (which no cleanup survives) left mounted below `root`,
    deepest first. Returns what was unmounted."""
    left = sorted(mounted_under(root), key=len, reverse=True)
    for point in left:
        log.warning("unmounting %s, left mounted by an earlier run", point)
        if subprocess.run(["umount", point], capture_output=True, timeout=60).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)
    return left


def remove_tree(root: Path) -> None:
    """Delete an unpacked root filesystem, refusing while anything is mounted below it."""
    if not root.exists():
        return
    left = mounted_under(root)
    if left:
        raise PlatformError(f"refusing to delete {root}: still mounted {left}")
    shutil.rmtree(root)


def sources_list(suite: str) -> str:
    """Debian's archive for `suite`: main, plus updates and security (what a fresh installation configures)."""
    return (f"deb {MIRROR} {suite} main\n"
            f"deb {MIRROR} {suite}-updates main\n"
            f"deb {SECURITY_MIRROR} {suite}-security main\n")


def build_rootfs(platform: Platform, cache: Path, log_file: Path, timeout: float = 1800) -> Dict[str, float]:
    """debootstrap --foreign (host) + --second-stage (under qemu) a minbase Debian, then tar it into the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / f"building-{platform.suite}-{platform.arch}"
    deadline = time.monotonic() + timeout
    times: Dict[str, float] = {}
    if mounted_under(root):
        raise PlatformError(f"{root} has mounts from an earlier run: {mounted_under(root)}; unmount them first")
    remove_tree(root)
    root.mkdir(parents=True)
    try:
        times["debootstrap first stage"] = run_step(
            ["debootstrap", f"--arch={platform.arch}", "--foreign", "--variant=minbase", platform.suite, str(root),
             MIRROR],
            deadline - time.monotonic(), log_file, f"{platform.name}: debootstrap first stage")
        with Mounts(root) as mounts:
            mounts.device_mounts(platform.arch, arm_cpuinfo=False)
            times["debootstrap second stage (qemu)"] = run_step(
                ["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"],
                deadline - time.monotonic(), log_file, f"{platform.name}: debootstrap second stage")
        (root / "etc" / "apt" / "sources.list").write_text(sources_list(platform.suite))
        partial = platform.tarball(cache).with_suffix(".tar.partial")
        times["tar"] = run_step(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."],
                                deadline - time.monotonic(), log_file, f"{platform.name}: tar the root filesystem")
        partial.rename(platform.tarball(cache))
    finally:
        remove_tree(root)
    return times


if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.platforms.rootfs NAME
    import sys

    logging.basicConfig(level=logging.INFO)
    cache_dir = Path(__file__).resolve().parents[2] / "build" / "platforms"
    for name in sys.argv[1:]:
        target = PLATFORMS[name]
        problems = missing_prerequisites(target)
        if problems:
            raise SystemExit("; ".join(problems))
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(name, build_rootfs(target, cache_dir, cache_dir / f"{name}-rootfs.log"))
