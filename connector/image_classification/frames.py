"""Length-prefixed frames between the connector's supervisor and its inference worker (over a pipe).

A frame is `!II` (header length, body length), a JSON header (never evaluated, never unpickled), then the raw body
bytes: image bytes go one way, the answer text the other, with no base64 and no pickling.
"""

from __future__ import annotations

import json
import os
import struct
from typing import BinaryIO, Dict, Tuple

_PREFIX = struct.Struct("!II")
MAX_HEADER_BYTES = 1 << 20
_JOIN_MAX_BYTES = 1 << 20  # bodies up to this size are sent in one write with their header


class FrameError(EOFError):
    """The pipe ended or carried something that is not a frame: the peer is gone or broken."""


def write_frame(stream: BinaryIO, header: Dict[str, object], body: bytes = b"") -> None:
    """One write for a frame of ordinary size: the peer, asleep in `read`, wakes once with the whole frame (two
    writes woke it for the header, then again for the body). A larger body goes on its own, not copied."""
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head = _PREFIX.pack(len(encoded), len(body)) + encoded
    if len(body) <= _JOIN_MAX_BYTES:
        stream.write(head + body)
    else:
        stream.write(head)
        stream.write(body)
    stream.flush()


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise FrameError("the pipe ended in the middle of a frame" if chunks else "the pipe ended")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Tuple[Dict[str, object], bytes]:
    """Read one frame from a file descriptor (unbuffered, so `select` on it stays truthful)."""
    header_size, body_size = _PREFIX.unpack(_read_exactly(fd, _PREFIX.size))
    if header_size > MAX_HEADER_BYTES:
        raise FrameError(f"a frame header of {header_size} bytes is not from our peer")
    header = json.loads(_read_exactly(fd, header_size))
    if not isinstance(header, dict):
        raise FrameError("a frame header must be a JSON object")
    return header, _read_exactly(fd, body_size) if body_size else b""
