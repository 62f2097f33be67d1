"""Hostile archives, small on disk, for the tests and bench/bounds.py: gzip bombs made of repeated deflate blocks
of zeros, and archives of too many members."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Dict, Union

MIB = 1 << 20
_ZEROS = bytes(MIB)


class _Deflater:
    """A gzip stream of a tar archive in which a MiB of zeros costs about 1 KB: after a full flush the compressor
    starts afresh, so one compressed MiB of zeros can be repeated (the trailer's CRC is computed as for the real
    data, so the file is a valid gzip)."""

    def __init__(self) -> None:
        self.compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        self.parts = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"]
        self.crc = 0
        self.size = 0
        self._zero_block = b""

    def data(self, data: bytes) -> None:
        self.parts.append(self.compressor.compress(data) + self.compressor.flush(zlib.Z_FULL_FLUSH))
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def zeros(self, mebibytes: int) -> None:
        if not self._zero_block:
            self._zero_block = self.compressor.compress(_ZEROS) + self.compressor.flush(zlib.Z_FULL_FLUSH)
            mebibytes -= 1
            self.parts.append(self._zero_block)
            self.crc = zlib.crc32(_ZEROS, self.crc)
            self.size += MIB
        self.parts.extend([self._zero_block] * mebibytes)
        for _ in range(mebibytes):
            self.crc = zlib.crc32(_ZEROS, self.crc)
        self.size += mebibytes * MIB

    def finish(self) -> bytes:
        self.parts.append(self.compressor.flush())
        self.parts.append(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        return b"".join(self.parts)


def bomb_tar_gz(path: Path, members: Dict[str, Union[bytes, int]]) -> Path:
    """A tar.gz of `members` at `path`: bytes as given, or an int: that many MiB of zeros."""
    path.write_bytes(bomb_tar_gz_bytes(members))
    return path


def bomb_tar_gz_bytes(members: Dict[str, Union[bytes, int]]) -> bytes:
    deflater = _Deflater()
    for name, content in members.items():
        info = tarfile.TarInfo(name)
        info.size = content * MIB if isinstance(content, int) else len(content)
        info.mode = 0o644
        deflater.data(info.tobuf(format=tarfile.GNU_FORMAT))
        if isinstance(content, int):
            deflater.zeros(content)
        else:
            deflater.data(content + bytes(-len(content) % 512))
    deflater.data(bytes(10240))  # the end-of-archive blocks and record padding
    return deflater.finish()


def many_members_tar_gz(path: Path, count: int) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for index in range(count):
            info = tarfile.TarInfo(f"file-{index:05d}.txt")
            data = b"x"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def check_gzip(path: Path, mebibytes: int) -> bool:
    """The first `mebibytes` of the stream decompress (used once to prove the construction sound)."""
    with gzip.open(path, "rb") as stream:
        return len(stream.read(mebibytes * MIB)) == mebibytes * MIB
