"""What the operating system says about a process: its resident memory and how it ended.

Resident memory (RSS) is what LocalInferenceServiceMemoryLimitKB is held against: what the kernel's OOM logic and a
Greengrass core's cgroup count. Address-space limits (RLIMIT_AS) would count MXNet's and OpenMP's reserved but
untouched virtual memory and refuse models that fit comfortably.
"""

from __future__ import annotations

import os
import signal
from typing import Optional, Union

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kb(pid: Union[int, str] = "self") -> Optional[int]:
    """Resident set size in KB, or None when the process is gone (one reading; `RSSWatch` for many)."""
    watch = RSSWatch(pid)
    try:
        return watch.read_kb()
    finally:
        watch.close()


class RSSWatch:
    """Reads one process's RSS many times a second, cheaply.

    It keeps /proc/<pid>/statm open and re-reads it with pread: opening a /proc file of a process checks access
    against that process on every open, and at 200 opens a second that slowed the watched worker's first inference
    from 0.1 s to 0.4-2 s (measured); re-reading an open file costs the watched process nothing.
    """

    def __init__(self, pid: Union[int, str]) -> None:
        self.pid = pid
        try:
            self._fd: Optional[int] = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read_kb(self) -> Optional[int]:
        """RSS in KB, or None once the process is gone."""
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 256, 0).split()[1]) * _PAGE_KB
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def available_memory_kb() -> Optional[int]:
    """What the kernel says could be allocated without swapping (MemAvailable), or None where it does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_exit(returncode: int) -> str:
    """`exit code 3` or `killed by signal SIGKILL`, from a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
