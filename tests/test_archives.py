"""Tests of the bounded extractor (connector.contract.archives): hostile tar.gz and zip archives built here, small on
disk, refused while they stream, naming the limit and the member, leaving nothing behind."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import zipfile

import pytest

from connector.contract import archives
from connector.contract.archives import ArchiveLimitError, ArchiveLimits, UnreadableArchiveError, UnsafeMemberError
from bench.hostile_archives import MIB, bomb_tar_gz, check_gzip, many_members_tar_gz


def decompressed_mib(message: str) -> float:
    """The MiB the refusal says were written when it stopped."""
    return float(re.search(r"decompressed to ([0-9.]+) MiB", message).group(1))


def test_the_bomb_builder_makes_a_real_gzip_of_zeros(tmp_path):
    bomb = bomb_tar_gz(tmp_path / "b.tar.gz", {"zeros.bin": 64})
    assert bomb.stat().st_size < 100_000
    assert check_gzip(bomb, 64)
    with tarfile.open(bomb, "r:gz") as tar:
        assert [(m.name, m.size) for m in tar.getmembers()] == [("zeros.bin", 64 * MIB)]


def test_a_gzip_bomb_is_refused_by_its_ratio_after_a_few_mib_and_leaves_nothing(tmp_path):
    bomb = bomb_tar_gz(tmp_path / "bomb.tar.gz", {"a.json": b"{}", "image-classification-0001.params": 1536})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(bomb, out)
    message = str(info.value)
    assert info.value.limit == "GGIC_ARCHIVE_MAX_RATIO" and info.value.member == "image-classification-0001.params"
    assert "'image-classification-0001.params'" in message and "over the limit of 100:1" in message
    # 1.5 GiB on offer from a 1.6 MB file: it stopped just past the ratio floor (16 MiB), not at the end.
    assert decompressed_mib(message) < 20, message
    assert list(out.iterdir()) == []


def test_too_many_members_are_refused_at_the_first_one_over(tmp_path):
    archive = many_members_tar_gz(tmp_path / "many.tar.gz", 1001)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(archive, out)
    assert str(info.value) == ("archive member 'file-01000.txt' is member number 1001, over the limit of 1000 "
                               "members (GGIC_ARCHIVE_MAX_MEMBERS)")
    assert list(out.iterdir()) == []
    assert archives.extract(many_members_tar_gz(tmp_path / "ok.tar.gz", 1000), out).members == 1000


def test_member_and_total_limits_count_what_is_written(tmp_path):
    archive = bomb_tar_gz(tmp_path / "a.tar.gz", {"one": 3, "two": 3, "three": 3})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(archive, out, ArchiveLimits(max_member_bytes=2 * MIB))
    assert info.value.member == "one" and "says it holds 3.0 MiB, over the limit of 2.0 MiB a member" in \
        str(info.value)
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(archive, out, ArchiveLimits(max_total_bytes=8 * MIB))
    assert info.value.member == "three" and info.value.limit == "GGIC_ARCHIVE_MAX_TOTAL_BYTES"
    assert "would reach 9.0 MiB, over the limit of 8.0 MiB in all" in str(info.value)
    assert list(out.iterdir()) == []
    done = archives.extract(archive, out, ArchiveLimits(max_total_bytes=9 * MIB))
    assert (done.members, done.bytes_written) == (3, 9 * MIB)


def test_limits_come_from_the_environment():
    limits = ArchiveLimits.from_environment({"GGIC_ARCHIVE_MAX_MEMBERS": "7", "GGIC_ARCHIVE_MAX_RATIO": "2.5",
                                             "GGIC_ARCHIVE_MAX_TOTAL_BYTES": "1000"})
    assert (limits.max_members, limits.max_ratio, limits.max_total_bytes) == (7, 2.5, 1000)
    assert limits.max_member_bytes == ArchiveLimits().max_member_bytes
    with pytest.raises(ValueError, match="GGIC_ARCHIVE_MAX_MEMBERS='many' is not a number"):
        ArchiveLimits.from_environment({"GGIC_ARCHIVE_MAX_MEMBERS": "many"})
    with pytest.raises(ValueError, match="must be above 0"):
        ArchiveLimits.from_environment({"GGIC_ARCHIVE_MAX_RATIO": "0"})


def test_a_corrupt_stream_is_unreadable_and_what_was_written_is_removed(tmp_path):
    whole = bomb_tar_gz(tmp_path / "a.tar.gz", {"first.txt": b"kept until the stream breaks", "zeros": 4})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:-3000])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnreadableArchiveError):
        archives.extract(cut, out)
    assert list(out.iterdir()) == []


# --- zip: the Lambda deployment package's format ----------------------------------------------------------

def zip_bytes(entries) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def test_a_zip_package_extracts_with_safe_modes(tmp_path):
    archive = tmp_path / "package.zip"
    archive.write_bytes(zip_bytes([("lambda_function.py", b"def handler(e, c): pass\n", 0o100666),
                                   ("bin/tool", b"#!/bin/sh\n", 0o104777), ("lib/", b"", 0o040755)]))
    out = tmp_path / "out"
    out.mkdir()
    assert archives.extract(archive, out, kind="package").members == 3
    assert stat.S_IMODE(os.stat(out / "lambda_function.py").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(out / "bin" / "tool").st_mode) == 0o755  # no setuid, no world write
    assert (out / "lib").is_dir()


def test_a_zip_bomb_member_is_refused_by_its_ratio(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(zip_bytes([("ok.py", b"x = 1\n", 0o100644), ("data.bin", bytes(64 * MIB), 0o100644)]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(archive, out, kind="package")
    assert info.value.member == "data.bin" and info.value.limit == "GGIC_ARCHIVE_MAX_RATIO"
    assert decompressed_mib(str(info.value)) < 20
    assert list(out.iterdir()) == []


def test_a_zip_bomb_behind_incompressible_members_is_refused_by_its_own_ratio(tmp_path):
    """The archive's ratio stays low after 20 MiB of random bytes; the member's own ratio does not."""
    archive = tmp_path / "hidden.zip"
    archive.write_bytes(zip_bytes([("weights.bin", os.urandom(20 * MIB), 0o100644),
                                   ("zeros.bin", bytes(64 * MIB), 0o100644)]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(archive, out, kind="package")
    assert info.value.member == "zeros.bin" and "the member decompressed to 17.0 MiB" in str(info.value)
    assert list(out.iterdir()) == []


def test_many_small_zip_members_of_zeros_are_refused_by_the_archive_ratio(tmp_path):
    """Each member under the 16 MiB floor of its own ratio, together a bomb."""
    archive = tmp_path / "many.zip"
    archive.write_bytes(zip_bytes([(f"part-{index:02d}.bin", bytes(MIB), 0o100644) for index in range(40)]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(archive, out, kind="package")
    assert info.value.member == "part-16.bin" and "the archive decompressed to 17.0 MiB" in str(info.value)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name, mode, message", [
    ("../evil.py", 0o100644, "'../evil.py' would be written outside the package directory"),
    ("/abs.py", 0o100644, "'/abs.py' has an absolute path"),
    ("link", 0o120777, "'link' is a link ('/etc/passwd'); packages hold plain files"),
    ("fifo", 0o010644, "'fifo' is a device, FIFO or other special file"),
])
def test_unsafe_zip_members_are_refused(tmp_path, name, mode, message):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes([("first.py", b"pass\n", 0o100644), (name, b"/etc/passwd", mode)]))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeMemberError) as info:
        archives.extract(archive, out, kind="package")
    assert f"archive member {message}" == str(info.value)
    assert list(out.iterdir()) == []


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


@pytest.mark.parametrize("compression", ["bz2", "xz"])
def test_bzip2_and_xz_bombs_are_refused_by_their_ratio_too(tmp_path, compression):
    """bzip2 packs zeros far tighter than gzip: the decompression is read in bounded pieces, never whole."""
    archive = tmp_path / f"bomb.tar.{compression}"
    with tarfile.open(archive, f"w:{compression}") as tar:
        info = tarfile.TarInfo("weights.params")
        info.size = 40 * MIB  # past the 16 MiB floor of the ratio check
        tar.addfile(info, _Zeros(info.size))
    assert archive.stat().st_size < 100_000
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveLimitError) as info:
        archives.extract(archive, out)
    assert info.value.limit == "GGIC_ARCHIVE_MAX_RATIO" and decompressed_mib(str(info.value)) < 20
    assert list(out.iterdir()) == []
