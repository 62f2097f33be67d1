"""Read-once, file-like view of a response body, shaped like botocore's StreamingBody.

Callers written against SageMaker-style responses do ``resp['Body'].read()``; keeping that interface lets the
same code run against the local connector.
"""
from __future__ import annotations

import io
from typing import Iterator, List, Optional

_DEFAULT_CHUNK_SIZE = 1024


class StreamingBody:
    """Wraps bytes already received; iteration yields chunks, ``iter_lines`` yields lines."""

    def __init__(self, raw: bytes) -> None:
        self._length = len(raw)
        self._stream = io.BytesIO(raw)  # shares the bytes object's buffer until written to, so no copy

    def read(self, amt: Optional[int] = None) -> bytes:
        """Return up to ``amt`` bytes (all that is left when omitted or None)."""
        return self._stream.read(amt)

    def readable(self) -> bool:
        return not self._stream.closed

    def readlines(self) -> List[bytes]:
        return self._stream.readlines()

    def tell(self) -> int:
        return self._stream.tell()

    @property
    def content_length(self) -> int:
        return self._length

    def iter_chunks(self, chunk_size: int = _DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def iter_lines(self, chunk_size: int = _DEFAULT_CHUNK_SIZE, keepends: bool = False) -> Iterator[bytes]:
        """Yield the remaining body line by line (``chunk_size`` is accepted for botocore compatibility)."""
        for line in self._stream:
            yield line if keepends else line.rstrip(b'\r\n')

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_chunks()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> 'StreamingBody':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = 'closed' if self._stream.closed else 'at {}'.format(self._stream.tell())
        return '<StreamingBody {} bytes, {}>'.format(self._length, state)
