"""Reading an MXNet `.params` file (`mx.nd.save` / `save_checkpoint`) with numpy alone.

The file is MXNet's NDArray list (src/ndarray/ndarray.cc, `NDArray::Save` / `NDArray::Load`), little-endian:

- uint64 magic 0x112, uint64 reserved;
- uint64 count, then each array:
  - uint32 array magic: 0xF993FAC9 (V2, with storage type) or 0xF993FACA (V3, NumPy shape semantics); 0xF993FAC8
    (V1) and older files (no magic: the first word is the number of dimensions, dims as uint32) have no storage
    type;
  - V2/V3: int32 storage type (0 dense; 1 row-sparse and 2 CSR also carry a storage shape and auxiliary arrays);
  - shape: int32 ndim, then ndim int64 dims (V2: ndim 0 = an empty array; V3: ndim -1 = none, 0 = a scalar);
  - context: int32 device type, int32 device id (ignored: everything is read onto the CPU);
  - int32 dtype flag (mshadow's type codes);
  - the raw elements, C order;
- uint64 count, then each name as uint64 length + bytes; `save_checkpoint` prefixes them `arg:` or `aux:`.

The arrays returned are read-only views into the file's bytes (no copy).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from connector.image_classification.errors import ParamsFormatError

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
DENSE = 0
_SPARSE_NAMES = {1: "row_sparse", 2: "csr"}

# mshadow type flags -> numpy dtypes (little-endian). 12 is bfloat16, which numpy lacks.
DTYPES = {
    0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"), 3: np.dtype("u1"), 4: np.dtype("<i4"),
    5: np.dtype("i1"), 6: np.dtype("<i8"), 7: np.dtype("?"), 8: np.dtype("<i2"), 9: np.dtype("<u2"),
    10: np.dtype("<u4"), 11: np.dtype("<u8"),
}


class _Reader:
    def __init__(self, data: Union[bytes, memoryview], source: str) -> None:
        self.data = memoryview(data)
        self.offset = 0
        self.source = source

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.offset + size > len(self.data):
            raise ParamsFormatError(f"{self.source}: truncated at byte {self.offset} while reading {what} "
                                    f"({size} bytes wanted, {len(self.data) - self.offset} left)")
        chunk = self.data[self.offset:self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)[0]


def _array(reader: _Reader, index: int) -> np.ndarray:
    what = f"array #{index}"
    (magic,) = reader.unpack("<I", f"{what}'s header")
    if magic in (V2_MAGIC, V3_MAGIC):
        (storage,) = reader.unpack("<i", f"{what}'s storage type")
        if storage != DENSE:
            raise ParamsFormatError(f"{reader.source}: {what} is stored {_SPARSE_NAMES.get(storage, storage)}; "
                                    f"only dense arrays are supported")
        (ndim,) = reader.unpack("<i", f"{what}'s shape")
        if ndim < 0 or (ndim == 0 and magic == V2_MAGIC):
            return np.zeros((0,), np.float32)  # an array saved without a shape (none)
        shape = reader.unpack(f"<{ndim}q", f"{what}'s shape")
    elif magic == V1_MAGIC:
        (ndim,) = reader.unpack("<i", f"{what}'s shape")
        shape = reader.unpack(f"<{ndim}q", f"{what}'s shape")
        if ndim == 0:
            return np.zeros((0,), np.float32)
    else:  # the oldest format: no magic, the word read is the number of dimensions, dims are uint32
        ndim = magic
        if ndim > 32:
            raise ParamsFormatError(f"{reader.source}: {what} starts with 0x{magic:08x}, not an MXNet array header")
        shape = reader.unpack(f"<{ndim}I", f"{what}'s shape")
        if ndim == 0:
            return np.zeros((0,), np.float32)
    if any(d < 0 for d in shape):
        raise ParamsFormatError(f"{reader.source}: {what} has an unknown dimension in shape {shape}")
    reader.unpack("<ii", f"{what}'s context")
    (flag,) = reader.unpack("<i", f"{what}'s dtype")
    if flag not in DTYPES:
        raise ParamsFormatError(f"{reader.source}: {what} has dtype flag {flag}, which has no numpy type "
                                f"(12 is bfloat16)")
    dtype = DTYPES[flag]
    count = int(np.prod(shape, dtype=np.int64))
    raw = reader.take(count * dtype.itemsize, f"{what}'s {count} elements")
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


def parse(data: Union[bytes, memoryview], source: str = "params") -> Tuple[List[np.ndarray], List[str]]:
    """The arrays and their names (an empty name list when the file holds an unnamed list)."""
    reader = _Reader(data, source)
    magic = reader.u64("the file header")
    if magic != LIST_MAGIC:
        raise ParamsFormatError(f"{source}: starts with 0x{magic:x}, not MXNet's NDArray list magic 0x112")
    reader.u64("the file header")
    count = reader.u64("the array count")
    if count > len(reader.data):
        raise ParamsFormatError(f"{source}: claims {count} arrays in {len(reader.data)} bytes")
    arrays = [_array(reader, i) for i in range(count)]
    name_count = reader.u64("the name count")
    if name_count not in (0, count):
        raise ParamsFormatError(f"{source}: {count} arrays but {name_count} names")
    names = []
    for i in range(name_count):
        length = reader.u64(f"name #{i}'s length")
        try:
            names.append(bytes(reader.take(length, f"name #{i}")).decode("utf-8"))
        except UnicodeDecodeError:
            raise ParamsFormatError(f"{source}: name #{i} is not UTF-8") from None
    if reader.offset != len(reader.data):
        raise ParamsFormatError(f"{source}: {len(reader.data) - reader.offset} unexpected bytes after the names")
    return arrays, names


def load(path: Path) -> Dict[str, np.ndarray]:
    """`{name: array}` as `mx.nd.load` returns it (names keep their `arg:`/`aux:` prefixes)."""
    arrays, names = parse(Path(path).read_bytes(), str(path))
    if len(set(names)) != len(names):
        raise ParamsFormatError(f"{path}: repeated array names")
    if not names and arrays:
        raise ParamsFormatError(f"{path}: holds {len(arrays)} unnamed arrays, not a checkpoint's named params")
    return dict(zip(names, arrays))


def split_checkpoint(params: Dict[str, np.ndarray], source: str = "params"
                     ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(arg_params, aux_params) from a checkpoint's `arg:`/`aux:` names, prefixes removed."""
    args, aux = {}, {}
    for name, array in params.items():
        kind, _, key = name.partition(":")
        if kind == "arg" and key:
            args[key] = array
        elif kind == "aux" and key:
            aux[key] = array
        else:
            raise ParamsFormatError(f"{source}: array name {name!r} has neither an 'arg:' nor an 'aux:' prefix")
    return args, aux
