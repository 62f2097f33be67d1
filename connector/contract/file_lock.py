"""An exclusive lock on a file, held for a `with` block: how ggic's writers in different processes take turns (CLI
commands beside the runtime, a deployment's fetch beside a user's, workers converting the same model)."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Wait for, then hold, an flock on `lock_path` (created when missing; never removed, so every holder locks the
    same inode). Released when the block ends, or by the kernel when the process dies."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
