"""Read a legacy (pre-zip, pickle-based) ``torch.save`` state dict into numpy arrays, without torch.

Pretrained weights for the EfficientNet-Lite0 example ship only as such a file.  Installing torch to read them
would dwarf the project's dependencies, and ``pickle.load`` on a downloaded file can run arbitrary code, so this
reader rebuilds tensors with a deliberately tiny unpickler: it knows the few globals a plain state dict needs and
refuses every other one.

Layout of the legacy format (all integers little-endian), as this reader checks it:

1. three small pickles: a magic number, the format version 1001, and a dict describing the writer's machine;
2. the main pickle (the state dict); each tensor's storage appears as a *persistent id*
   ``('storage', <StorageType>, key, location, element_count, view)`` and the tensor itself as a call to
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``;
3. a pickled list of storage keys, in the order their data follows;
4. per key: an int64 element count, then that many raw elements.
"""

from __future__ import annotations

import collections
import logging
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_VERSION = 1001


class TorchCheckpointError(Exception):
    """The file is not a legacy torch state dict this reader can rebuild."""


class ForbiddenPickleGlobalError(TorchCheckpointError):
    """The pickle asks for a global outside the small set needed to rebuild tensors (possibly malicious)."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.<Type>Storage``: only its element type matters here."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    count: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes have not been read yet (they follow the pickle)."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: _Storage, storage_offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _PendingTensor:
    if not isinstance(storage, _Storage):
        raise TorchCheckpointError("a tensor in the pickle does not refer to a storage")
    if backward_hooks:
        raise TorchCheckpointError("tensors with backward hooks are not supported")
    return _PendingTensor(storage, int(storage_offset), tuple(int(v) for v in size), tuple(int(v) for v in stride))


_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(code))
    for name, code in (("FloatStorage", "<f4"), ("DoubleStorage", "<f8"), ("HalfStorage", "<f2"),
                       ("LongStorage", "<i8"), ("IntStorage", "<i4"), ("ShortStorage", "<i2"),
                       ("CharStorage", "i1"), ("ByteStorage", "u1"), ("BoolStorage", "?"))
}
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals it is given and accepts no persistent ids."""

    def __init__(self, file: BinaryIO, allowed: dict[tuple[str, str], Any] | None = None) -> None:
        super().__init__(file)
        self._allowed = allowed or {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise ForbiddenPickleGlobalError(
                f"refusing to load {module}.{name}: only a plain state dict of tensors can be read") from None

    def persistent_load(self, pid: Any) -> Any:
        raise TorchCheckpointError(f"unexpected persistent id {pid!r:.80}")


class _StateDictUnpickler(_RestrictedUnpickler):
    """Rebuilds the main pickle: storage ids become `_Storage` placeholders, tensors `_PendingTensor`s."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, _ALLOWED_GLOBALS)
        self.storages: dict[str, _Storage] = {}

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise TorchCheckpointError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, count, view = pid
        if not isinstance(storage_type, _StorageType):
            raise TorchCheckpointError(f"storage of unknown type {storage_type!r:.80}")
        if view is not None:
            raise TorchCheckpointError("storage views are not supported")
        key = str(key)
        storage = self.storages.setdefault(key, _Storage(key, storage_type.dtype, int(count)))
        if storage.dtype != storage_type.dtype or storage.count != int(count):
            raise TorchCheckpointError(f"storage {key} is described in two different ways")
        return storage


def _load(unpickler: pickle.Unpickler, what: str) -> Any:
    """Run an unpickler, reporting malformed data as TorchCheckpointError."""
    try:
        return unpickler.load()
    except TorchCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise TorchCheckpointError(f"malformed {what}: {exc}") from None


def _header_pickle(stream: BinaryIO, what: str) -> Any:
    """Load one of the small header pickles, which may contain no globals or persistent ids at all."""
    return _load(_RestrictedUnpickler(stream), what)


def _read_exact(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise TorchCheckpointError(f"file ends inside {what} ({len(data)} of {size} bytes)")
    return data


def _materialise(tensor: _PendingTensor) -> np.ndarray:
    data = tensor.storage.data
    assert data is not None
    if any(s < 0 for s in tensor.size) or any(s < 0 for s in tensor.stride) or tensor.offset < 0:
        raise TorchCheckpointError("negative tensor size, stride or offset")
    if len(tensor.size) != len(tensor.stride):
        raise TorchCheckpointError("tensor size and stride disagree in rank")
    if 0 not in tensor.size:
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
        if last >= len(data):
            raise TorchCheckpointError(f"tensor reaches past the end of storage {tensor.storage.key}")
    view = np.lib.stride_tricks.as_strided(
        data[tensor.offset:], shape=tensor.size, strides=[s * data.itemsize for s in tensor.stride],
        writeable=False)
    return np.array(view, dtype=data.dtype.newbyteorder("="))


def read_state_dict(path: str | Path) -> collections.OrderedDict[str, np.ndarray]:
    """Return the file's tensors as contiguous native-endian numpy arrays, in file order."""
    with open(path, "rb") as stream:
        if stream.read(4) == b"PK\x03\x04":
            raise TorchCheckpointError(f"{path} is a zip-based torch.save file; only the legacy format is supported")
        stream.seek(0)
        if _header_pickle(stream, "magic number") != LEGACY_MAGIC:
            raise TorchCheckpointError(f"{path} is not a legacy torch.save file (bad magic number)")
        version = _header_pickle(stream, "format version")
        if version != LEGACY_VERSION:
            raise TorchCheckpointError(f"{path}: unsupported legacy format version {version!r}")
        sys_info = _header_pickle(stream, "system info")
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise TorchCheckpointError(f"{path} was written on a big-endian machine, which is not supported")

        unpickler = _StateDictUnpickler(stream)
        state = _load(unpickler, "state dict pickle")
        if not isinstance(state, dict):
            raise TorchCheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
        keys = _header_pickle(stream, "storage key list")
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(unpickler.storages):
            raise TorchCheckpointError(f"{path}: the storage key list does not match the storages used")

        for key in map(str, keys):
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", _read_exact(stream, 8, f"the size of storage {key}"))
            if count != storage.count:
                raise TorchCheckpointError(
                    f"storage {key}: {count} elements on disk but {storage.count} in the pickle")
            raw = _read_exact(stream, count * storage.dtype.itemsize, f"storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
        if stream.read(1):
            raise TorchCheckpointError(f"{path} has unexpected data after the last storage")

    tensors: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    for name, value in state.items():
        if not isinstance(value, _PendingTensor):
            raise TorchCheckpointError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
        tensors[str(name)] = _materialise(value)
    logger.debug("read %d tensors from %d storages in %s", len(tensors), len(keys), path)
    return tensors
