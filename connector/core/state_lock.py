"""One runtime per state directory: an OS lock on `<state-dir>/runtime.lock`.

The runtime writes `runtime.json` and `env` into its state directory and deletes them when it stops; a second
runtime on the same directory would overwrite the first one's and then delete them, leaving the first serving but
unreachable. So the runtime holds an exclusive `flock` on the lock file from before it writes anything until after
it has removed its files. The kernel drops the lock when the process ends, however it ends: a crashed runtime's lock
is simply taken by the next one (the file itself stays; only the lock matters). The file holds the holder's pid and,
once it listens, its address, so that the refused runtime can name them.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

LOCK_FILE = "runtime.lock"


class StateDirectoryInUseError(RuntimeError):
    """Another live runtime holds this state directory."""


class StateDirectoryLock:
    """The held lock of one state directory: `acquire`, `record` the address once known, `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: Optional[int] = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> "StateDirectoryLock":
        """Take the lock at once or raise StateDirectoryInUseError naming the runtime that holds it."""
        path = state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by the processes the runtime starts
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirectoryInUseError(_in_use_message(state_dir, holder)) from None
        lock = cls(path, fd)
        lock.record(pid=os.getpid())
        return lock

    def record(self, **holder: Any) -> None:
        """Write what the refused runtime will name (pid, host, port) into the lock file."""
        assert self._fd is not None, "the lock was released"
        current = _read_holder(self._fd)
        current.update(holder)
        data = json.dumps(current).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Give the lock up (idempotent); the file stays, holding nothing that matters."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_holder(fd: int) -> Dict[str, Any]:
    try:
        size = os.fstat(fd).st_size
        data = json.loads(os.pread(fd, size, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _in_use_message(state_dir: Path, holder: Dict[str, Any]) -> str:
    pid = holder.get("pid", "unknown")
    if holder.get("port") is not None:
        where = f"listening on {holder.get('host', '127.0.0.1')}:{holder['port']}"
    else:
        where = "still starting (not listening yet)"
    return (f"state directory {state_dir} is in use by the runtime of pid {pid}, {where}: stop it first "
            f"(kill {pid}), or give this one another --state-dir")
