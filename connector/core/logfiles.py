"""Log files the way a Greengrass core keeps them: one file per function plus `system/runtime.log`, each rotated by
size (`<name>.log` → `<name>.log.1` → ...), so a chatty or crash-looping function cannot fill the disk.

A function's stdout and stderr (its own log lines, native libraries' output, its inference worker's lines) come to
the runtime through a pipe and are written here, line by line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import threading
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_BACKUPS = 3


class RotatingLogFile:
    """An append-only file that rolls over to numbered backups past `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.max_bytes and self._file.tell() + len(data) > self.max_bytes and self._file.tell():
                self._roll_over()
            self._file.write(data)
            self._file.flush()

    def _roll_over(self) -> None:
        self._file.close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = open(self.path, "ab")

    def close(self) -> None:
        with self._lock:
            self._file.close()


def pump(stream: BinaryIO, log_file: RotatingLogFile) -> threading.Thread:
    """Copy a process's output into its log file until the process (and its children) close the pipe."""
    def copy() -> None:
        with stream:
            for line in iter(stream.readline, b""):
                log_file.write(line)
    thread = threading.Thread(target=copy, name=f"log-{log_file.path.name}", daemon=True)
    thread.start()
    return thread


class FunctionLogHandler(logging.Handler):
    """A logging handler that writes Greengrass-format lines into a function's log file (a connector hosted in the
    runtime's process logs here, beside its workers' output)."""

    def __init__(self, log_file: RotatingLogFile) -> None:
        from connector.contract.logformat import GreengrassFormatter

        super().__init__()
        self.log_file = log_file
        self.setFormatter(GreengrassFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log_file.write((self.format(record) + "\n").encode("utf-8", "replace"))
        except Exception:
            self.handleError(record)


def system_log_handler(path: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                       backups: int = DEFAULT_BACKUPS) -> logging.Handler:
    """`<root>/ggc/var/log/system/runtime.log`, in the Greengrass line format, rotated by size."""
    from connector.contract.logformat import GreengrassFormatter

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(GreengrassFormatter())
    return handler
