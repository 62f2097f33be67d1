"""Read-once, file-like view of a response body, shaped like botocore's StreamingBody.

Callers written against SageMaker-style responses do ``resp['Body'].read()``; keeping that interface lets the
same code run against the local connector.
"""
import io

_DEFAULT_CHUNK_SIZE = 1024


class StreamingBody(object):
    """Wraps bytes already received; iteration yields chunks, ``iter_lines`` yields lines."""

    def __init__(self, raw):
        self._length = len(raw)
        self._stream = io.BytesIO(raw)  # shares the bytes object's buffer until written to, so no copy

    def read(self, amt=None):
        """Return up to ``amt`` bytes (all that is left when omitted or None)."""
        return self._stream.read(amt)

    def readable(self):
        return not self._stream.closed

    def readlines(self):
        return self._stream.readlines()

    def tell(self):
        return self._stream.tell()

    @property
    def content_length(self):
        return self._length

    def iter_chunks(self, chunk_size=_DEFAULT_CHUNK_SIZE):
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def iter_lines(self, chunk_size=_DEFAULT_CHUNK_SIZE, keepends=False):
        """Yield the remaining body line by line (``chunk_size`` is accepted for botocore compatibility)."""
        for line in self._stream:
            yield line if keepends else line.rstrip(b'\r\n')

    def __iter__(self):
        return self.iter_chunks()

    def close(self):
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = 'closed' if self._stream.closed else 'at {}'.format(self._stream.tell())
        return '<StreamingBody {} bytes, {}>'.format(self._length, state)
