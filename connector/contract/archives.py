"""Extracting an archive someone else made, within limits: model.tar.gz artifacts and Lambda deployment zips.

An archive is an input we did not write, so its extraction is bounded the way a request is: by the number of
members, the bytes of one member, the bytes of all members and the compression ratio. The limits are enforced while
the archive streams through (bytes are counted as they are written; a member's header may lie, as a gzip member of
zeros or a sparse or overlapping zip entry do), and a refused extraction removes everything it wrote, so no half
extraction can be mistaken for a whole one.

Paths are checked as well: no absolute names, no `..` out of the destination, no links, devices or FIFOs; the
archive's modes are not trusted either (files are written 0644, or 0755 when the owner could execute them).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, IO, List, Mapping, Optional

from connector.contract.environment import (
    ARCHIVE_MAX_MEMBER_BYTES_ENV,
    ARCHIVE_MAX_MEMBERS_ENV,
    ARCHIVE_MAX_RATIO_ENV,
    ARCHIVE_MAX_TOTAL_BYTES_ENV,
)

CHUNK_BYTES = 1 << 20
STREAM_READ_BYTES = 64 << 10
GIB = 1 << 30
MIB = 1 << 20


class ArchiveError(Exception):
    """The archive cannot be extracted; nothing it held is left behind."""


class UnreadableArchiveError(ArchiveError):
    """The bytes are not a readable archive (truncated, corrupt, not an archive at all)."""


class UnsafeMemberError(ArchiveError):
    """A member would be written outside the destination, or is a link, device or FIFO."""


class ArchiveLimitError(ArchiveError):
    """The archive holds more than a limit allows; `limit` is the limit's environment variable, `member` the
    member being read when it was reached."""

    def __init__(self, message: str, limit: str, member: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.member = member


@dataclass(frozen=True)
class ArchiveLimits:
    """What one extraction may write.

    Defaults, for SageMaker image-classification artifacts: the largest real one is a ResNet-152 (about 230 MB of
    float32 weights in one `.params` file; ResNet-200, the deepest the algorithm trains, about 260 MB), and with
    `checkpoint_frequency` every checkpointed epoch's `.params` file is in the archive too. Weights barely compress
    (about 1.1:1 measured on the digits model; its symbol JSON 17:1), while a member of zeros compresses 1000:1.
    """

    max_members: int = 1000                 # 10x a 100-epoch job that kept every checkpoint
    max_member_bytes: int = 2 * GIB         # 8x the largest real .params file
    max_total_bytes: int = 8 * GIB          # 30 ResNet-152 checkpoints
    max_ratio: float = 100.0                # decompressed / compressed bytes, once past `ratio_floor_bytes`
    ratio_floor_bytes: int = 16 * MIB       # below this, any ratio: small JSON files compress well

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "ArchiveLimits":
        """The defaults, each overridden by its GGIC_ARCHIVE_* variable when set."""
        defaults = cls()

        def read(name: str, default, kind):
            text = environ.get(name)
            if not text:
                return default
            try:
                value = kind(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a number") from None
            if value <= 0:
                raise ValueError(f"{name}={text!r} must be above 0")
            return value

        return cls(max_members=read(ARCHIVE_MAX_MEMBERS_ENV, defaults.max_members, int),
                   max_member_bytes=read(ARCHIVE_MAX_MEMBER_BYTES_ENV, defaults.max_member_bytes, int),
                   max_total_bytes=read(ARCHIVE_MAX_TOTAL_BYTES_ENV, defaults.max_total_bytes, int),
                   max_ratio=read(ARCHIVE_MAX_RATIO_ENV, defaults.max_ratio, float))


@dataclass
class Extracted:
    """What an extraction wrote."""

    members: int = 0
    bytes_written: int = 0


def _size(count: float) -> str:
    return f"{count / MIB:.1f} MiB" if count >= MIB else f"{int(count)} bytes"


class _Budget:
    """Counts what is written against the limits; `compressed` says how many archive bytes were consumed."""

    def __init__(self, limits: ArchiveLimits, compressed: Callable[[], int]) -> None:
        self.limits = limits
        self.compressed = compressed
        self.done = Extracted()

    def member(self, name: str, claimed: int) -> None:
        """One more member, whose header claims `claimed` bytes."""
        limits = self.limits
        self.done.members += 1
        if self.done.members > limits.max_members:
            raise ArchiveLimitError(
                f"archive member {name!r} is member number {self.done.members}, over the limit of "
                f"{limits.max_members} members ({ARCHIVE_MAX_MEMBERS_ENV})", ARCHIVE_MAX_MEMBERS_ENV, name)
        if claimed > limits.max_member_bytes:
            raise self._member_too_large(name, claimed, "says it holds")
        if self.done.bytes_written + claimed > limits.max_total_bytes:
            raise self._total_too_large(name, self.done.bytes_written + claimed, "would reach")

    def wrote(self, name: str, member_bytes: int, added: int, member_compressed: Optional[int] = None) -> None:
        """`added` more bytes written; `member_bytes` of this member so far. The whole archive's ratio is checked
        against `compressed()`, and a zip member's own against `member_compressed` (its compressed size)."""
        limits = self.limits
        self.done.bytes_written += added
        if member_bytes > limits.max_member_bytes:
            raise self._member_too_large(name, member_bytes, "decompressed to")
        if self.done.bytes_written > limits.max_total_bytes:
            raise self._total_too_large(name, self.done.bytes_written, "reached")
        if member_compressed is not None:
            self._ratio(name, "the member", member_bytes, member_compressed)
        self._ratio(name, "the archive", self.done.bytes_written, self.compressed())

    def _ratio(self, name: str, whose: str, written: int, compressed: int) -> None:
        limits = self.limits
        compressed = max(1, compressed)
        if written > limits.ratio_floor_bytes and written / compressed > limits.max_ratio:
            raise ArchiveLimitError(
                f"archive member {name!r}: {whose} decompressed to {_size(written)} from {_size(compressed)}, "
                f"a compression ratio of {written / compressed:.0f}:1, over the limit of "
                f"{limits.max_ratio:g}:1 ({ARCHIVE_MAX_RATIO_ENV}): a decompression bomb, or raise the limit",
                ARCHIVE_MAX_RATIO_ENV, name)

    def _member_too_large(self, name: str, size: int, how: str) -> ArchiveLimitError:
        return ArchiveLimitError(
            f"archive member {name!r} {how} {_size(size)}, over the limit of {_size(self.limits.max_member_bytes)} "
            f"a member ({ARCHIVE_MAX_MEMBER_BYTES_ENV})", ARCHIVE_MAX_MEMBER_BYTES_ENV, name)

    def _total_too_large(self, name: str, size: int, how: str) -> ArchiveLimitError:
        return ArchiveLimitError(
            f"archive member {name!r}: the extracted files {how} {_size(size)}, over the limit of "
            f"{_size(self.limits.max_total_bytes)} in all ({ARCHIVE_MAX_TOTAL_BYTES_ENV})",
            ARCHIVE_MAX_TOTAL_BYTES_ENV, name)


class _Writer:
    """Writes members under `destination` and remembers what it created, to remove it all on failure."""

    def __init__(self, destination: Path, kind: str) -> None:
        self.destination = destination.resolve()
        self.kind = kind
        self.created: List[Path] = []

    def target(self, name: str) -> Path:
        if name.startswith("/") or os.path.isabs(name):
            raise UnsafeMemberError(f"archive member {name!r} has an absolute path")
        target = (self.destination / name).resolve()
        if target != self.destination and self.destination not in target.parents:
            raise UnsafeMemberError(f"archive member {name!r} would be written outside the {self.kind} directory")
        return target

    def link(self, name: str, linkname: str) -> UnsafeMemberError:
        return UnsafeMemberError(f"archive member {name!r} is a link ({linkname!r}); {self.kind}s hold plain files")

    def special(self, name: str) -> UnsafeMemberError:
        return UnsafeMemberError(f"archive member {name!r} is a device, FIFO or other special file")

    def directory(self, target: Path) -> None:
        missing = [p for p in [target, *target.parents] if p != self.destination and self.destination in p.parents
                   and not p.exists()]
        target.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.created.extend(reversed(missing))

    def file(self, name: str, target: Path, source: IO[bytes], executable: bool, budget: _Budget,
             member_compressed: Optional[int] = None) -> None:
        self.directory(target.parent)
        if target.is_dir():
            raise UnsafeMemberError(f"archive member {name!r} is a file where the archive made a directory")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        existed = target.exists()
        descriptor = os.open(target, flags, 0o755 if executable else 0o644)
        if not existed:
            self.created.append(target)
        written = 0
        with os.fdopen(descriptor, "wb") as out:
            while True:
                chunk = source.read(CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
                budget.wrote(name, written, len(chunk), member_compressed)

    def undo(self) -> None:
        for path in reversed(self.created):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.unlink()
                except OSError:
                    pass
        self.created.clear()


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The archive's bytes, decompressed by a reader that hands out at most what is asked of it: tarfile's own
    stream decompresses each read whole, so a 64 KiB read of a bzip2 bomb could become gigabytes in memory."""
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    return raw


def _extract_tar(raw: BinaryIO, writer: _Writer, budget: _Budget) -> None:
    # Stream mode ("r|"): one pass, members as they come, nothing seeks back; reads of 64 KiB, as fast as
    # tarfile.extractall (bench/bounds.py).
    with tarfile.open(fileobj=_decompressed(raw), mode="r|", bufsize=STREAM_READ_BYTES) as tar:
        for member in tar:
            name = member.name
            target = writer.target(name)
            if member.issym() or member.islnk():
                raise writer.link(name, member.linkname)
            if member.issparse() or not (member.isfile() or member.isdir()):
                raise writer.special(name)
            budget.member(name, member.size if member.isfile() else 0)
            if member.isdir():
                writer.directory(target)
                continue
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            writer.file(name, target, source, bool(member.mode & stat.S_IXUSR), budget)


def _extract_zip(raw: BinaryIO, writer: _Writer, budget: _Budget) -> None:
    consumed = [0]  # the compressed sizes of the members begun so far: the whole archive's side of its ratio
    budget.compressed = lambda: consumed[0]
    with zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            consumed[0] += info.compress_size
            name = info.filename
            target = writer.target(name)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                with archive.open(info) as source:  # the link's target, read no further than a path's length
                    raise writer.link(name, source.read(4096).decode("utf-8", "replace"))
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # zips made elsewhere may set no type
                raise writer.special(name)
            budget.member(name, 0 if info.is_dir() else info.file_size)
            if info.is_dir():
                writer.directory(target)
                continue
            with archive.open(info) as source:  # the CRC is checked as the member ends
                writer.file(name, target, source, bool(mode & stat.S_IXUSR), budget, info.compress_size)


def extract(archive: Path, destination: Path, limits: Optional[ArchiveLimits] = None,
            kind: str = "model") -> Extracted:
    """Extract a tar (plain, gzip, bzip2, xz) or zip archive into the existing directory `destination`.

    Raises `ArchiveLimitError` (naming the limit and the member), `UnsafeMemberError` or
    `UnreadableArchiveError`; then everything this call wrote is removed again. `kind` names what the archive
    holds, in messages ("model", "package").
    """
    limits = limits or ArchiveLimits()
    writer = _Writer(destination, kind)
    with open(archive, "rb") as raw:
        budget = _Budget(limits, raw.tell)
        is_zip = zipfile.is_zipfile(raw)
        raw.seek(0)
        try:
            (_extract_zip if is_zip else _extract_tar)(raw, writer, budget)
        except ArchiveError:
            writer.undo()
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError,
                ValueError) as exc:
            writer.undo()
            if isinstance(exc, OSError) and exc.errno is not None:  # writing failed: a full disk, permissions
                raise
            raise UnreadableArchiveError(f"{exc}") from None
        except BaseException:
            writer.undo()
            raise
    return budget.done
