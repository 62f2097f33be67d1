"""What the operating system says about a process: its resident memory and how it ended.

Resident memory (RSS) is what LocalInferenceServiceMemoryLimitKB is held against. RSS is what the kernel's OOM logic and a Greengrass core's cgroup count; address-space limits (RLIMIT_AS) would
count MXNet's and OpenMP's reserved-but-untouched virtual memory and refuse models that fit comfortably.
"""

from __future__ import annotations

import os
import signal
from typing import Optional, Union

_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kb(pid: Union[int, str] = "self") -> Optional[int]:
    """Resident set size in KB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return None


def describe_exit(returncode: int) -> str:
    """`exit code 3` or `killed by signal SIGKILL`, from a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
