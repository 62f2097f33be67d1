"""The few ONNX protobuf messages the converter writes, in protobuf's wire format, with no `onnx` or `protobuf`
package: neither has a wheel for armv7l, where the converted model is most needed.

Only writing is needed. A message is kept as a list of byte chunks plus its size, so a large tensor's bytes are
referenced (a memoryview of the numpy array), never copied into one growing buffer; `Message.write_to` streams the
chunks to a file. Field numbers are those of onnx.proto (proto2): scalars as varints or fixed32, strings, bytes and
sub-messages length-delimited, repeated scalars unpacked (every protobuf reader accepts that for proto2 fields).
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterable, List, Optional, Sequence, Union

import numpy as np

Chunk = Union[bytes, memoryview]

# Wire types.
_VARINT = 0
_LENGTH_DELIMITED = 2
_FIXED32 = 5

# TensorProto.DataType values, by numpy dtype.
TENSOR_TYPES = {
    np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.uint16): 4,
    np.dtype(np.int16): 5, np.dtype(np.int32): 6, np.dtype(np.int64): 7, np.dtype(np.bool_): 9,
    np.dtype(np.float16): 10, np.dtype(np.float64): 11, np.dtype(np.uint32): 12, np.dtype(np.uint64): 13,
}

# AttributeProto.AttributeType values.
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR, _ATTR_FLOATS, _ATTR_INTS = 1, 2, 3, 4, 6, 7


def varint(value: int) -> bytes:
    """Base-128 varint; negative int64 values take ten bytes (two's complement), as protobuf writes them."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


class Message:
    """A protobuf message under construction: fields are appended in order, nested messages by reference."""

    def __init__(self) -> None:
        self.chunks: List[Chunk] = []
        self.size = 0

    def _add(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes

    def _key(self, field: int, wire_type: int) -> None:
        self._add(varint((field << 3) | wire_type))

    def int64(self, field: int, value: int) -> "Message":
        self._key(field, _VARINT)
        self._add(varint(int(value)))
        return self

    def int64s(self, field: int, values: Iterable[int]) -> "Message":
        for value in values:
            self.int64(field, value)
        return self

    def float32(self, field: int, value: float) -> "Message":
        self._key(field, _FIXED32)
        self._add(struct.pack("<f", value))
        return self

    def float32s(self, field: int, values: Iterable[float]) -> "Message":
        for value in values:
            self.float32(field, value)
        return self

    def raw(self, field: int, value: Chunk) -> "Message":
        length = len(value) if isinstance(value, bytes) else value.nbytes
        self._key(field, _LENGTH_DELIMITED)
        self._add(varint(length))
        if length:
            self._add(value)
        return self

    def string(self, field: int, value: str) -> "Message":
        return self.raw(field, value.encode("utf-8"))

    def strings(self, field: int, values: Iterable[str]) -> "Message":
        for value in values:
            self.string(field, value)
        return self

    def message(self, field: int, value: "Message") -> "Message":
        self._key(field, _LENGTH_DELIMITED)
        self._add(varint(value.size))
        self.chunks.extend(value.chunks)
        self.size += value.size
        return self

    def messages(self, field: int, values: Iterable["Message"]) -> "Message":
        for value in values:
            self.message(field, value)
        return self

    def write_to(self, stream: BinaryIO) -> int:
        for chunk in self.chunks:
            stream.write(chunk)
        return self.size

    def tobytes(self) -> bytes:
        return b"".join(bytes(chunk) for chunk in self.chunks)


# ---- onnx.proto messages (field numbers from onnx.proto) -----------------------------------------------------

def tensor(name: str, array: np.ndarray) -> Message:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little-endian)."""
    array = np.asarray(array)
    kind = np.dtype(array.dtype.name)  # the same type in native byte order
    if kind not in TENSOR_TYPES:
        raise TypeError(f"tensor {name}: no ONNX type for numpy dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype=kind.newbyteorder("<"))
    message = Message().int64s(1, data.shape).int64(2, TENSOR_TYPES[kind]).string(8, name)
    return message.raw(9, memoryview(data.reshape(-1).view(np.uint8)) if data.size else b"")


def attribute(name: str, value: Union[int, float, str, Sequence[int], Sequence[float], np.ndarray]) -> Message:
    """AttributeProto: name (1), f (2), i (3), s (4), t (5), floats (7), ints (8), type (20).

    Python bools and ints become INT, floats FLOAT, str STRING, a numpy array TENSOR, and a list INTS unless it
    holds a float (FLOATS).
    """
    message = Message().string(1, name)
    if isinstance(value, np.ndarray):
        return message.message(5, tensor("", value)).int64(20, _ATTR_TENSOR)
    if isinstance(value, (bool, int, np.integer)):
        return message.int64(3, int(value)).int64(20, _ATTR_INT)
    if isinstance(value, (float, np.floating)):
        return message.float32(2, float(value)).int64(20, _ATTR_FLOAT)
    if isinstance(value, str):
        return message.string(4, value).int64(20, _ATTR_STRING)
    values = list(value)
    if any(isinstance(v, (float, np.floating)) for v in values):
        return message.float32s(7, (float(v) for v in values)).int64(20, _ATTR_FLOATS)
    return message.int64s(8, (int(v) for v in values)).int64(20, _ATTR_INTS)


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attributes) -> Message:
    """NodeProto: input (1), output (2), name (3), op_type (4), attribute (5); attributes sorted by name."""
    message = Message().strings(1, inputs).strings(2, outputs).string(3, name).string(4, op_type)
    return message.messages(5, (attribute(key, attributes[key]) for key in sorted(attributes)
                                if attributes[key] is not None))


def value_info(name: str, elem_type: int, shape: Sequence[int]) -> Message:
    """ValueInfoProto name (1), type (2) = TypeProto { tensor_type (1) = { elem_type (1), shape (2) } }, with
    TensorShapeProto { dim (1) = Dimension { dim_value (1) } }."""
    dims = Message().messages(1, (Message().int64(1, d) for d in shape))
    tensor_type = Message().int64(1, elem_type).message(2, dims)
    return Message().string(1, name).message(2, Message().message(1, tensor_type))


def graph(name: str, nodes: Iterable[Message], initializers: Iterable[Message], inputs: Iterable[Message],
          outputs: Iterable[Message]) -> Message:
    """GraphProto: node (1), name (2), initializer (5), input (11), output (12)."""
    return (Message().messages(1, nodes).string(2, name).messages(5, initializers).messages(11, inputs)
            .messages(12, outputs))


def model(graph_message: Message, ir_version: int, opset: int, producer: str, producer_version: str,
          doc: Optional[str] = None) -> Message:
    """ModelProto: ir_version (1), producer_name (2), producer_version (3), doc_string (6), graph (7),
    opset_import (8) = OperatorSetIdProto { domain (1), version (2) } for the default domain."""
    message = Message().int64(1, ir_version).string(2, producer).string(3, producer_version)
    if doc:
        message.string(6, doc)
    return message.message(7, graph_message).message(8, Message().string(1, "").int64(2, opset))
