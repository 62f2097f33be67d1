"""What the operating system says about a process: its resident memory (alone or with its descendants), how it
ended, and a watchdog that holds processes to memory limits.

Resident memory (RSS) is what LocalInferenceServiceMemoryLimitKB is held against: what the kernel's OOM logic and a
Greengrass core's cgroup count. Address-space limits (RLIMIT_AS) would count MXNet's and OpenMP's reserved but
untouched virtual memory and refuse models that fit comfortably.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable, Dict, List, Optional, Set, Union

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


def children(pid: int) -> List[int]:
    """The pids of a process's children (every thread's), from /proc; [] when it is gone."""
    found: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found.extend(int(child) for child in listing.read().split())
        except (OSError, ValueError):
            continue
    return found


class ProcessTreeRSS:
    """The RSS of a process and all its descendants (what a core's cgroup holds a Lambda's MemorySize against).

    The root's statm stays open (`RSSWatch`); descendants are found again on every reading (a child may come and go
    between two), and each one's statm is kept open while it lives."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._watches: Dict[int, RSSWatch] = {pid: RSSWatch(pid)}

    def read_kb(self) -> Optional[int]:
        """RSS of the whole tree in KB, or None once the root is gone."""
        root = self._watches[self.pid].read_kb()
        if root is None:
            return None
        tree: Set[int] = set()
        pending = children(self.pid)
        while pending:
            pid = pending.pop()
            if pid not in tree:
                tree.add(pid)
                pending.extend(children(pid))
        for pid in set(self._watches) - tree - {self.pid}:
            self._watches.pop(pid).close()
        total = root
        for pid in tree:
            watch = self._watches.get(pid) or self._watches.setdefault(pid, RSSWatch(pid))
            total += watch.read_kb() or 0
        return total

    def close(self) -> None:
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()


class MemoryWatchdog:
    """One thread that holds processes to memory limits: each watched process's RSS (with its descendants', for
    `tree`) is read every `interval_s`, and `on_breach(used_kb)` is called once when it goes over its limit (the
    caller kills it; the process is watched no more).

    The core holds its function processes to their MemorySize with it (the process tree, as a core's cgroup
    counts), the image classification connector its inference workers to their share of
    LocalInferenceServiceMemoryLimitKB (the worker alone, read 200 times a second: see `RSSWatch`). A limit may be
    a function, read at every reading (a worker loading its model may use more); `on_reading(used_kb)` sees every
    reading (for status and peaks)."""

    def __init__(self, interval_s: float = 0.05, name: str = "memory-watchdog") -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._watched: Dict[int, _Watched] = {}
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._name = name

    def watch(self, pid: int, limit_kb: Union[int, Callable[[], int]], on_breach: Callable[[int], None],
              on_reading: Optional[Callable[[int], None]] = None, tree: bool = True) -> None:
        reader: Union[ProcessTreeRSS, RSSWatch] = ProcessTreeRSS(pid) if tree else RSSWatch(pid)
        with self._lock:
            if self._stopping.is_set():
                reader.close()
                return
            previous = self._watched.pop(pid, None)
            self._watched[pid] = _Watched(reader, limit_kb, on_breach, on_reading)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        if previous is not None:
            previous.reader.close()

    def unwatch(self, pid: int) -> None:
        with self._lock:
            entry = self._watched.pop(pid, None)
        if entry is not None:
            entry.reader.close()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            entries, self._watched = list(self._watched.values()), {}
        for entry in entries:
            entry.reader.close()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            with self._lock:
                entries = list(self._watched.items())
            for pid, entry in entries:
                try:
                    used = entry.reader.read_kb()
                    if used is None:  # it is gone
                        self.unwatch(pid)
                        continue
                    if entry.on_reading is not None:
                        entry.on_reading(used)
                    limit = entry.limit_kb() if callable(entry.limit_kb) else entry.limit_kb
                    if used > limit:
                        self.unwatch(pid)  # reported once
                        entry.on_breach(used)
                except Exception:  # one process's trouble must never stop the watchdog
                    logging.getLogger("ggic.memory").exception("cannot hold process %d to its memory limit", pid)


class _Watched:
    def __init__(self, reader: Union["ProcessTreeRSS", RSSWatch], limit_kb: Union[int, Callable[[], int]],
                 on_breach: Callable[[int], None], on_reading: Optional[Callable[[int], None]]) -> None:
        self.reader = reader
        self.limit_kb = limit_kb
        self.on_breach = on_breach
        self.on_reading = on_reading


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
