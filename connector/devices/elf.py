"""A small reader of the ELF dynamic-linking facts `ggic doctor` needs, with no dependency beyond the stdlib.

The connector documentation states its system requirements as symbol versions ("libstdc++.so.6: GLIBCXX_3.4.21").
A library provides a version exactly when its `.gnu.version_d` section defines that version node, and a binary
needs one when its `.gnu.version_r` section names it: that is what the dynamic linker checks, so we read those
sections (plus `DT_NEEDED`/`DT_SONAME` from `.dynamic`) rather than guessing from file names or package versions.
Both ELF classes and byte orders are handled, so a 32-bit ARM library reads the same as an x86-64 one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Tuple

SHT_DYNAMIC = 6
SHT_GNU_VERDEF = 0x6FFFFFFD
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NULL, DT_NEEDED, DT_SONAME = 0, 1, 14
VER_FLG_BASE = 0x1

#: e_machine values of the platforms the connector exists for (and x86, for completeness).
MACHINES = {3: "x86", 62: "x86_64", 40: "arm", 183: "aarch64"}


class ElfError(ValueError):
    """The file is not an ELF object we can read (not ELF, truncated, or a section points outside the file)."""


@dataclass(frozen=True)
class ElfInfo:
    path: Path
    bits: int  # 32 or 64
    machine: str  # "x86_64", "aarch64", "arm", "x86", or "e_machine=N"
    soname: Optional[str] = None
    #: version nodes this object defines (`.gnu.version_d`), without the base entry (its own soname)
    version_definitions: Tuple[str, ...] = ()
    #: DT_NEEDED entries, in order
    needed: Tuple[str, ...] = ()
    #: `.gnu.version_r`: for each needed file, the version nodes required from it
    version_requirements: Dict[str, Tuple[str, ...]] = field(default_factory=dict)

    def defines(self, version: str) -> bool:
        return version in self.version_definitions


@dataclass(frozen=True)
class _Section:
    type: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


class _Reader:
    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle = handle
        self.path = path
        handle.seek(0, 2)
        self.file_size = handle.tell()

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.file_size:
            raise ElfError(f"{self.path}: truncated or corrupt ELF file (wants bytes {offset}..{offset + size}, "
                           f"file has {self.file_size})")
        self.handle.seek(offset)
        return self.handle.read(size)


def _string(table: bytes, offset: int, path: Path) -> str:
    if offset >= len(table):
        raise ElfError(f"{path}: string offset {offset} outside its string table")
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def read_elf(path: Path) -> ElfInfo:
    """Read the soname, needed libraries and version definitions/requirements of one ELF shared object."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _read(_Reader(handle, path), path)
    except OSError as exc:
        raise ElfError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except struct.error as exc:
        raise ElfError(f"{path}: truncated or corrupt ELF file ({exc})") from None


def _read(reader: _Reader, path: Path) -> ElfInfo:
    if reader.read(0, min(4, reader.file_size)) != b"\x7fELF":
        raise ElfError(f"{path}: not an ELF file")
    ident = reader.read(0, 16)
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise ElfError(f"{path}: unknown ELF class {ident[4]} or data encoding {ident[5]}")
    bits = 32 if ident[4] == 1 else 64
    order = "<" if ident[5] == 1 else ">"
    addr = "I" if bits == 32 else "Q"
    (machine,) = struct.unpack(order + "H", reader.read(18, 2))
    if bits == 32:
        shoff, = struct.unpack(order + "I", reader.read(0x20, 4))
        shentsize, shnum = struct.unpack(order + "HH", reader.read(0x2E, 4))
    else:
        shoff, = struct.unpack(order + "Q", reader.read(0x28, 8))
        shentsize, shnum = struct.unpack(order + "HH", reader.read(0x3A, 4))
    section_format = order + "II" + addr * 4 + "II" + addr * 2
    if shoff == 0 or shnum == 0:
        raise ElfError(f"{path}: no section headers (a stripped-to-the-bone object we cannot inspect)")
    if shentsize < struct.calcsize(section_format):
        raise ElfError(f"{path}: section header entries of {shentsize} bytes are too small")
    sections: List[_Section] = []
    table = reader.read(shoff, shentsize * shnum)
    for index in range(shnum):
        fields = struct.unpack_from(section_format, table, index * shentsize)
        _, sh_type, _, _, sh_offset, sh_size, sh_link, sh_info, _, sh_entsize = fields
        sections.append(_Section(sh_type, sh_offset, sh_size, sh_link, sh_info, sh_entsize))

    def strings_of(section: _Section) -> bytes:
        if section.link >= len(sections):
            raise ElfError(f"{path}: section links to a missing string table {section.link}")
        linked = sections[section.link]
        return reader.read(linked.offset, linked.size)

    soname: Optional[str] = None
    needed: List[str] = []
    definitions: List[str] = []
    requirements: Dict[str, Tuple[str, ...]] = {}
    for section in sections:
        if section.type == SHT_DYNAMIC:
            strtab = strings_of(section)
            data = reader.read(section.offset, section.size)
            entry = struct.Struct(order + ("iI" if bits == 32 else "qQ"))
            for tag, value in entry.iter_unpack(data[: len(data) - len(data) % entry.size]):
                if tag == DT_NULL:
                    break
                if tag == DT_NEEDED:
                    needed.append(_string(strtab, value, path))
                elif tag == DT_SONAME:
                    soname = _string(strtab, value, path)
        elif section.type == SHT_GNU_VERDEF:
            definitions.extend(_verdefs(reader, section, strings_of(section), order, path))
        elif section.type == SHT_GNU_VERNEED:
            requirements.update(_verneeds(reader, section, strings_of(section), order, path))
    return ElfInfo(path=path, bits=bits, machine=MACHINES.get(machine, f"e_machine={machine}"), soname=soname,
                   version_definitions=tuple(definitions), needed=tuple(needed),
                   version_requirements=requirements)


def _verdefs(reader: _Reader, section: _Section, strtab: bytes, order: str, path: Path) -> List[str]:
    """Elf_Verdef chain: vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next; first aux is the name."""
    names = []
    offset = section.offset
    for _ in range(section.info):
        _, flags, _, count, _, aux, next_offset = struct.unpack(order + "HHHHIII", reader.read(offset, 20))
        if count:
            name_offset, _ = struct.unpack(order + "II", reader.read(offset + aux, 8))
            if not flags & VER_FLG_BASE:
                names.append(_string(strtab, name_offset, path))
        if not next_offset:
            break
        offset += next_offset
    return names


def _verneeds(reader: _Reader, section: _Section, strtab: bytes, order: str,
              path: Path) -> Dict[str, Tuple[str, ...]]:
    """Elf_Verneed chain (vn_version, vn_cnt, vn_file, vn_aux, vn_next), each with Elf_Vernaux entries."""
    found: Dict[str, Tuple[str, ...]] = {}
    offset = section.offset
    for _ in range(section.info):
        _, count, file_offset, aux, next_offset = struct.unpack(order + "HHIII", reader.read(offset, 16))
        versions = []
        aux_offset = offset + aux
        for _ in range(count):
            _, _, _, name_offset, aux_next = struct.unpack(order + "IHHII", reader.read(aux_offset, 16))
            versions.append(_string(strtab, name_offset, path))
            if not aux_next:
                break
            aux_offset += aux_next
        found[_string(strtab, file_offset, path)] = tuple(versions)
        if not next_offset:
            break
        offset += next_offset
    return found


def version_key(version: str) -> Tuple[str, Tuple[int, ...]]:
    """`GLIBCXX_3.4.21` -> ("GLIBCXX", (3, 4, 21)), so versions of one family sort numerically."""
    family, _, number = version.rpartition("_")
    parts = []
    for part in number.split("."):
        if not part.isdigit():
            return version, ()
        parts.append(int(part))
    return family, tuple(parts)


def newest_of_family(versions: Tuple[str, ...], family: str) -> Optional[str]:
    """The highest version node of a family (GLIBC, GLIBCXX, CXXABI, GCC, ...) among `versions`."""
    candidates = [v for v in versions if version_key(v)[0] == family and version_key(v)[1]]
    return max(candidates, key=lambda v: version_key(v)[1]) if candidates else None
