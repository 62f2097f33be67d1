"""Translating a SageMaker image-classification artifact (MXNet symbol JSON + `.params`) into an ONNX model, with
numpy alone: no MXNet (it does not run on ARM) and no `onnx` package (armv7l has no wheel for it).

The symbol JSON lists `nodes` in topological order (`op`, `name`, `attrs` as strings, `inputs` as
[node, output, version]), the variables among them (`arg_nodes`) and the outputs (`heads`). Each operator the
SageMaker ResNets (every `num_layers`) and the demo's EfficientNet use is translated to opset-13 ONNX nodes
(`_TRANSLATORS`); anything else stops the conversion with `UnsupportedOperatorError` naming the operator and the
node. Shapes are inferred as we go for the fixed 1xCxHxW input, so MXNet's reshape codes and flattening rules
become static shapes. Weights become initializers (not graph inputs, so ONNX Runtime may fold them); the single
graph input is `data` (float32), the output is the head's value (for a SageMaker model, the softmax probabilities).

Semantics kept from MXNet, each checked against a direct MXNet forward by tests/test_onnx_converter.py:
BatchNorm with `fix_gamma` (the default) uses gamma = 1 whatever the params hold; inference BatchNorm always uses
the moving statistics (`use_global_stats` changes training only); `SoftmaxOutput` is a softmax over the input
flattened to (batch, -1) and ignores its label; Dropout is the identity; Pooling's `full` convention is ONNX's
`ceil_mode`, and average pooling counts padding unless `count_include_pad` is false. A float16 model is computed
in float32 (its Cast nodes pass through).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from connector.image_classification import mxnet_params, onnx_proto
from connector.image_classification.errors import ModelArtifactError, UnsupportedOperatorError

log = logging.getLogger(__name__)

ONNX_OPSET = 13
# IR version 7 is what opset 13 was released with (ONNX 1.8): read by ONNX Runtime 1.21 (Debian Trixie) and by
# OpenCV 4.6's cv2.dnn (Debian Bookworm), whose bundled onnx.proto predates later IR versions.
IR_VERSION = 7
# Bump when the converter changes what it writes: the cache's sidecar holds it, and a cached model written by
# another version is converted again.
CONVERTER_VERSION = 1
INPUT_NAME = "data"
PRODUCER = "ggic-onnx-export"
# Who reads the file. "onnxruntime": the plain translation. "opencv": the same graph readable by OpenCV 4.6's
# cv2.dnn (Debian Bookworm armhf), whose ONNX importer accepts `Clip` only in its pre-opset-11 form (min/max as
# attributes, which opset 13 forbids): there clip(x, lo, hi) is written as hi - Relu(hi - lo - Relu(x - lo)).
# Not the default because ONNX Runtime fuses Clip into the convolution before it: with the Relu form
# EfficientNet-Lite0 took 2.6x as long per forward.
TARGETS = ("onnxruntime", "opencv")

_FLOAT = onnx_proto.TENSOR_TYPES[np.dtype(np.float32)]


@dataclass
class Conversion:
    onnx_path: str
    seconds: float
    onnx_bytes: int
    opset: int
    nodes: int
    output_shape: List[int]
    fixed_gamma: List[str] = field(default_factory=list)  # BatchNorms whose stored gamma != 1 was run as 1


# ---- attribute parsing (MXNet writes every attribute as a string) ------------------------------------------

def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _ints(attrs: Dict[str, str], key: str, default: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    text = attrs.get(key)
    if text is None or text in ("None", "()", "[]", ""):
        return tuple(default) if default is not None else ()
    value = _literal(text)
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) or v is None for v in value):
        return tuple(-1 if v is None else v for v in value)
    raise ValueError(f"{key}={text!r} is not a tuple of integers")


def _int(attrs: Dict[str, str], key: str, default: int) -> int:
    text = attrs.get(key)
    return default if text in (None, "None") else int(text)


def _float(attrs: Dict[str, str], key: str, default: Optional[float]) -> Optional[float]:
    text = attrs.get(key)
    if text in (None, "None"):
        return default
    return float(text)


def _bool(attrs: Dict[str, str], key: str, default: bool) -> bool:
    text = attrs.get(key)
    if text in (None, "None"):
        return default
    if text.strip().lower() in ("true", "1"):
        return True
    if text.strip().lower() in ("false", "0"):
        return False
    raise ValueError(f"{key}={text!r} is not a boolean")


# ---- the graph being built ---------------------------------------------------------------------------------

@dataclass
class _Value:
    """A node input: a tensor of the ONNX graph (`tensor` set) or an MXNet parameter not yet emitted (`param`)."""

    name: str
    shape: Tuple[int, ...]
    tensor: bool = True
    array: Optional[np.ndarray] = None


@dataclass
class _Node:
    index: int
    op: str
    name: str
    attrs: Dict[str, str]
    inputs: List[Tuple[int, int]]


class _Builder:
    def __init__(self, params: Dict[str, np.ndarray], source: str, target: str) -> None:
        self.params = params
        self.source = source
        self.target = target
        self.nodes: List[onnx_proto.Message] = []
        self.initializers: List[onnx_proto.Message] = []
        self.names: set = set()
        self.emitted: Dict[str, str] = {}  # parameter name -> initializer name
        self.fixed_gamma: List[str] = []
        self.node: Optional[_Node] = None  # the MXNet node being translated (for messages)

    # names
    def unique(self, wanted: str) -> str:
        name, n = wanted, 1
        while name in self.names:
            n += 1
            name = f"{wanted}_{n}"
        self.names.add(name)
        return name

    # errors
    def unsupported(self, detail: str) -> UnsupportedOperatorError:
        node = self.node
        return UnsupportedOperatorError(f"operator {node.op} (node {node.name!r}) {detail}; the ONNX converter "
                                        f"cannot translate {self.source}")

    def bad(self, detail: str) -> ModelArtifactError:
        node = self.node
        return ModelArtifactError(f"{self.source}: node {node.name!r} ({node.op}) {detail}")

    # values
    def constant(self, wanted: str, array: np.ndarray) -> str:
        name = self.unique(wanted)
        self.initializers.append(onnx_proto.tensor(name, array))
        return name

    def tensor(self, value: _Value) -> str:
        """The ONNX tensor name of a value, emitting a parameter as a float32 initializer on first use."""
        if value.tensor:
            return value.name
        if value.name not in self.emitted:
            self.emitted[value.name] = self.constant(value.name, _as_float32(value.array))
        return self.emitted[value.name]

    def param(self, value: _Value, role: str, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
        if value.tensor:
            raise self.unsupported(f"takes its {role} from a computed tensor ({value.name}), not a parameter")
        if shape is not None and tuple(value.array.shape) != tuple(shape):
            raise self.bad(f"has {role} {value.name} of shape {tuple(value.array.shape)}, expected {tuple(shape)}")
        return value.array

    def emit(self, op: str, inputs: Sequence[str], shape: Sequence[int], suffix: str = "", **attributes) -> _Value:
        out = self.unique(f"{self.node.name}{suffix}")  # tensors are named after their nodes, as MXNet's are
        self.nodes.append(onnx_proto.node(op, inputs, [out], out, **attributes))
        return _Value(out, tuple(int(d) for d in shape))


def _as_float32(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind != "f":
        raise TypeError(f"parameter of dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


# ---- shape helpers -------------------------------------------------------------------------------------------

def _broadcast(b: _Builder, a: Tuple[int, ...], c: Tuple[int, ...]) -> Tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, c))
    except ValueError:
        raise b.bad(f"cannot broadcast shapes {a} and {c}") from None


def _window_out(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int = 1,
                ceil: bool = False) -> int:
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    return (math.ceil(span / stride) if ceil else span // stride) + 1


def _flatten(b: _Builder, x: _Value, suffix: str = "_flatten") -> _Value:
    if len(x.shape) == 2:
        return x
    return b.emit("Flatten", [b.tensor(x)], (x.shape[0], int(np.prod(x.shape[1:]))), suffix, axis=1)


# ---- translators: one per MXNet operator family; each returns the node's output values -------------------------

def _identity(b: _Builder, attrs, inputs: List[_Value]) -> List[_Value]:
    return [inputs[0]]


def _dropout(b: _Builder, attrs, inputs):
    if attrs.get("mode", "training") == "always":
        raise b.unsupported("with mode='always' drops at inference too (random)")
    return [inputs[0]]


def _cast(b: _Builder, attrs, inputs):
    if attrs.get("dtype") not in ("float16", "float32", "float64"):
        raise b.unsupported(f"casts to {attrs.get('dtype')}; only float types are translated")
    return [inputs[0]]  # the whole graph runs in float32


def _convolution(b: _Builder, attrs, inputs):
    if attrs.get("layout") not in (None, "None", "NCW", "NCHW", "NCDHW"):
        raise b.unsupported(f"with layout {attrs['layout']}")
    kernel = _ints(attrs, "kernel")
    rank = len(kernel)
    stride = _ints(attrs, "stride", (1,) * rank) or (1,) * rank
    dilate = _ints(attrs, "dilate", (1,) * rank) or (1,) * rank
    pad = _ints(attrs, "pad", (0,) * rank) or (0,) * rank
    groups = _int(attrs, "num_group", 1)
    filters = _int(attrs, "num_filter", 0)
    x = inputs[0]
    if len(x.shape) != rank + 2:
        raise b.bad(f"has a {rank}-d kernel for input of shape {x.shape}")
    weight = b.param(inputs[1], "weight", (filters, x.shape[1] // groups, *kernel))
    names = [b.tensor(x), b.tensor(inputs[1])]
    if not _bool(attrs, "no_bias", False):
        b.param(inputs[2], "bias", (filters,))
        names.append(b.tensor(inputs[2]))
    out = [x.shape[0], weight.shape[0]] + [_window_out(x.shape[2 + i], kernel[i], stride[i], pad[i], pad[i],
                                                       dilate[i]) for i in range(rank)]
    return [b.emit("Conv", names, out, kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                   dilations=list(dilate), group=groups)]


def _batchnorm(b: _Builder, attrs, inputs):
    x = inputs[0]
    axis = _int(attrs, "axis", 1)
    if axis not in (1, 1 - len(x.shape)):
        raise b.unsupported(f"normalises axis {axis}; only the channel axis 1 is translated")
    channels = (x.shape[1],)
    gamma_value = inputs[1]
    gamma = b.param(gamma_value, "gamma", channels)
    for value, role in zip(inputs[2:5], ("beta", "moving_mean", "moving_var")):
        b.param(value, role, channels)
    if _bool(attrs, "fix_gamma", True):
        if not np.all(gamma == 1.0):
            b.fixed_gamma.append(b.node.name)
        scale = b.constant(f"{gamma_value.name}_fixed", np.ones(channels, np.float32))
    else:
        scale = b.tensor(gamma_value)
    names = [b.tensor(x), scale] + [b.tensor(v) for v in inputs[2:5]]
    return [b.emit("BatchNormalization", names, x.shape, epsilon=float(_float(attrs, "eps", 1e-3)))]


_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softrelu": "Softplus",
                "softsign": "Softsign"}


def _activation(b: _Builder, attrs, inputs):
    act = attrs.get("act_type", "")
    if act not in _ACTIVATIONS:
        raise b.unsupported(f"with act_type={act!r} (translated: {', '.join(sorted(_ACTIVATIONS))})")
    return [b.emit(_ACTIVATIONS[act], [b.tensor(inputs[0])], inputs[0].shape)]


def _leaky_relu(b: _Builder, attrs, inputs):
    act = attrs.get("act_type", "leaky")
    x = inputs[0]
    slope = float(_float(attrs, "slope", 0.25))
    if act == "leaky":
        return [b.emit("LeakyRelu", [b.tensor(x)], x.shape, alpha=slope)]
    if act == "elu":
        return [b.emit("Elu", [b.tensor(x)], x.shape, alpha=slope)]
    if act == "selu":
        return [b.emit("Selu", [b.tensor(x)], x.shape)]
    if act == "prelu":
        gamma = b.param(inputs[1], "gamma")
        shape = gamma.shape + (1,) * (len(x.shape) - 2) if gamma.size > 1 else gamma.shape
        slope_name = b.constant(f"{inputs[1].name}_slope", _as_float32(gamma).reshape(shape))
        return [b.emit("PRelu", [b.tensor(x), slope_name], x.shape)]
    raise b.unsupported(f"with act_type={act!r} (translated: leaky, elu, selu, prelu)")


def _clip(b: _Builder, attrs, inputs):
    x = inputs[0]
    lo, hi = float(_float(attrs, "a_min", -np.inf)), float(_float(attrs, "a_max", np.inf))
    if b.target != "opencv":
        low = b.constant(f"{b.node.name}_min", np.array(lo, np.float32))
        high = b.constant(f"{b.node.name}_max", np.array(hi, np.float32))
        return [b.emit("Clip", [b.tensor(x), low, high], x.shape)]
    if lo > hi or not (math.isfinite(lo) or math.isfinite(hi)):
        raise b.unsupported(f"with a_min={lo}, a_max={hi} for OpenCV")
    name = b.tensor(x)
    if not math.isfinite(lo):  # min(x, hi) = hi - Relu(hi - x)
        gap = b.emit("Sub", [b.constant(f"{b.node.name}_max", np.array(hi, np.float32)), name], x.shape, "_gap")
        over = b.emit("Relu", [gap.name], x.shape, "_over")
        return [b.emit("Sub", [b.constant(f"{b.node.name}_max", np.array(hi, np.float32)), over.name], x.shape)]
    if lo != 0.0:
        name = b.emit("Sub", [name, b.constant(f"{b.node.name}_min", np.array(lo, np.float32))], x.shape,
                      "_shift").name
    if not math.isfinite(hi):  # max(x, lo) = Relu(x - lo) + lo
        above = b.emit("Relu", [name], x.shape, "_above" if lo != 0.0 else "")
        if lo == 0.0:
            return [above]
        return [b.emit("Add", [above.name, b.constant(f"{b.node.name}_min", np.array(lo, np.float32))], x.shape)]
    above = b.emit("Relu", [name], x.shape, "_above")
    gap = b.emit("Sub", [b.constant(f"{b.node.name}_range", np.array(hi - lo, np.float32)), above.name], x.shape,
                 "_gap")
    under = b.emit("Relu", [gap.name], x.shape, "_under")
    return [b.emit("Sub", [b.constant(f"{b.node.name}_max", np.array(hi, np.float32)), under.name], x.shape)]


def _pooling(b: _Builder, attrs, inputs):
    x = inputs[0]
    kind = attrs.get("pool_type", "max")
    if kind not in ("max", "avg"):
        raise b.unsupported(f"with pool_type={kind!r} (translated: max, avg)")
    if attrs.get("layout") not in (None, "None", "NCW", "NCHW", "NCDHW"):
        raise b.unsupported(f"with layout {attrs['layout']}")
    if _bool(attrs, "global_pool", False):
        shape = x.shape[:2] + (1,) * (len(x.shape) - 2)
        return [b.emit("GlobalMaxPool" if kind == "max" else "GlobalAveragePool", [b.tensor(x)], shape)]
    convention = attrs.get("pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise b.unsupported(f"with pooling_convention={convention!r} (translated: valid, full)")
    kernel = _ints(attrs, "kernel")
    rank = len(kernel)
    stride = _ints(attrs, "stride", (1,) * rank) or (1,) * rank
    pad = _ints(attrs, "pad", (0,) * rank) or (0,) * rank
    ceil = convention == "full"
    shape = x.shape[:2] + tuple(_window_out(x.shape[2 + i], kernel[i], stride[i], pad[i], pad[i], ceil=ceil)
                                for i in range(rank))
    common = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2, ceil_mode=int(ceil))
    if kind == "max":
        return [b.emit("MaxPool", [b.tensor(x)], shape, **common)]
    include_pad = _bool(attrs, "count_include_pad", True)
    return [b.emit("AveragePool", [b.tensor(x)], shape, count_include_pad=int(include_pad), **common)]


def _flatten_op(b: _Builder, attrs, inputs):
    x = inputs[0]
    return [b.emit("Flatten", [b.tensor(x)], (x.shape[0], int(np.prod(x.shape[1:]))), axis=1)]


def _fully_connected(b: _Builder, attrs, inputs):
    x = inputs[0]
    hidden = _int(attrs, "num_hidden", 0)
    flatten = _bool(attrs, "flatten", True)
    features = int(np.prod(x.shape[1:])) if flatten else x.shape[-1]
    b.param(inputs[1], "weight", (hidden, features))
    if _bool(attrs, "no_bias", False):
        bias = b.constant(f"{b.node.name}_zero_bias", np.zeros(hidden, np.float32))
    else:
        b.param(inputs[2], "bias", (hidden,))
        bias = b.tensor(inputs[2])
    if flatten or len(x.shape) == 2:
        x = _flatten(b, x)
        return [b.emit("Gemm", [b.tensor(x), b.tensor(inputs[1]), bias], (x.shape[0], hidden), transB=1)]
    weight_t = b.constant(f"{inputs[1].name}_transposed", _as_float32(inputs[1].array).T.copy())
    product = b.emit("MatMul", [b.tensor(x), weight_t], x.shape[:-1] + (hidden,), "_matmul")
    return [b.emit("Add", [product.name, bias], product.shape)]


_BINARY = {}
for _op, _names in (("Add", "elemwise_add _Plus _plus _add broadcast_add broadcast_plus"),
                    ("Sub", "elemwise_sub _Minus _minus _sub broadcast_sub broadcast_minus"),
                    ("Mul", "elemwise_mul _Mul _mul broadcast_mul"),
                    ("Div", "elemwise_div _Div _div broadcast_div"),
                    ("Max", "_Maximum _maximum broadcast_maximum"),
                    ("Min", "_Minimum _minimum broadcast_minimum")):
    for _name in _names.split():
        _BINARY[_name] = _op


def _binary(b: _Builder, attrs, inputs):
    x, y = inputs
    return [b.emit(_BINARY[b.node.op], [b.tensor(x), b.tensor(y)], _broadcast(b, x.shape, y.shape))]


def _add_n(b: _Builder, attrs, inputs):
    shape = inputs[0].shape
    for value in inputs[1:]:
        shape = _broadcast(b, shape, value.shape)
    return [b.emit("Sum", [b.tensor(v) for v in inputs], shape)]


# op -> (ONNX op, scalar first?)
_SCALAR = {"_plus_scalar": ("Add", False), "_PlusScalar": ("Add", False), "_minus_scalar": ("Sub", False),
           "_MinusScalar": ("Sub", False), "_rminus_scalar": ("Sub", True), "_RMinusScalar": ("Sub", True),
           "_mul_scalar": ("Mul", False), "_MulScalar": ("Mul", False), "_div_scalar": ("Div", False),
           "_DivScalar": ("Div", False), "_rdiv_scalar": ("Div", True), "_RDivScalar": ("Div", True),
           "_power_scalar": ("Pow", False), "_PowerScalar": ("Pow", False), "_rpower_scalar": ("Pow", True),
           "_RPowerScalar": ("Pow", True), "_maximum_scalar": ("Max", False), "_MaximumScalar": ("Max", False),
           "_minimum_scalar": ("Min", False), "_MinimumScalar": ("Min", False)}


def _scalar(b: _Builder, attrs, inputs):
    op, scalar_first = _SCALAR[b.node.op]
    scalar = b.constant(f"{b.node.name}_scalar", np.array(_float(attrs, "scalar", 0.0), np.float32))
    x = b.tensor(inputs[0])
    return [b.emit(op, [scalar, x] if scalar_first else [x, scalar], inputs[0].shape)]


def _concat(b: _Builder, attrs, inputs):
    rank = len(inputs[0].shape)
    axis = _int(attrs, "dim", 1) % rank
    shape = list(inputs[0].shape)
    shape[axis] = sum(v.shape[axis] for v in inputs)
    return [b.emit("Concat", [b.tensor(v) for v in inputs], shape, axis=axis)]


def reshape_target(b: _Builder, source: Tuple[int, ...], codes: Sequence[int], reverse: bool) -> Tuple[int, ...]:
    """MXNet's Reshape codes resolved for a known input shape: 0 copies a dimension, -1 infers one, -2 copies the
    rest, -3 merges two, -4 splits one into the next two codes."""
    if reverse:
        return tuple(reversed(reshape_target(b, tuple(reversed(source)), list(reversed(codes)), False)))
    out: List[int] = []
    i = 0  # position in source
    j = 0
    infer = None
    while j < len(codes):
        code = codes[j]
        if code > 0:
            out.append(code)
            i += 1
        elif code == 0:
            out.append(source[i])
            i += 1
        elif code == -1:
            infer = len(out)
            out.append(1)
            i += 1
        elif code == -2:
            out.extend(source[i:])
            i = len(source)
        elif code == -3:
            out.append(source[i] * source[i + 1])
            i += 2
        elif code == -4:
            first, second = codes[j + 1], codes[j + 2]
            if first == -1:
                first = source[i] // second
            if second == -1:
                second = source[i] // first
            out.extend([first, second])
            i += 1
            j += 2
        else:
            raise b.unsupported(f"with reshape code {code}")
        j += 1
    total = int(np.prod(source))
    if infer is not None:
        out[infer] = total // int(np.prod(out))
    if int(np.prod(out)) != total:
        raise b.bad(f"cannot reshape {source} with shape codes {tuple(codes)}")
    return tuple(out)


def _reshape(b: _Builder, attrs, inputs):
    x = inputs[0]
    codes = _ints(attrs, "shape")
    if not codes:
        raise b.unsupported("without a 'shape' attribute (the legacy target_shape form)")
    target = reshape_target(b, x.shape, codes, _bool(attrs, "reverse", False))
    shape = b.constant(f"{b.node.name}_shape", np.array(target, np.int64))
    return [b.emit("Reshape", [b.tensor(x), shape], target)]


def _softmax_output(b: _Builder, attrs, inputs):
    x = inputs[0]
    if _bool(attrs, "multi_output", False):
        return [b.emit("Softmax", [b.tensor(x)], x.shape, axis=1)]
    if _bool(attrs, "preserve_shape", False):
        return [b.emit("Softmax", [b.tensor(x)], x.shape, axis=len(x.shape) - 1)]
    flat = _flatten(b, x)
    return [b.emit("Softmax", [b.tensor(flat)], flat.shape, axis=1)]


def _softmax(b: _Builder, attrs, inputs):
    x = inputs[0]
    if _bool(attrs, "use_length", False):
        raise b.unsupported("with use_length=True")
    temperature = _float(attrs, "temperature", None)
    if temperature not in (None, 1.0):
        raise b.unsupported(f"with temperature={temperature}")
    axis = _int(attrs, "axis", -1) % len(x.shape)
    return [b.emit("Softmax", [b.tensor(x)], x.shape, axis=axis)]


def _softmax_activation(b: _Builder, attrs, inputs):
    x = inputs[0]
    if attrs.get("mode", "instance") == "channel":
        return [b.emit("Softmax", [b.tensor(x)], x.shape, axis=1)]
    flat = _flatten(b, x)
    out = b.emit("Softmax", [b.tensor(flat)], flat.shape, axis=1)
    if flat.shape == x.shape:
        return [out]
    shape = b.constant(f"{b.node.name}_shape", np.array(x.shape, np.int64))
    return [b.emit("Reshape", [out.name, shape], x.shape, "_reshape")]


def _pad(b: _Builder, attrs, inputs):
    x = inputs[0]
    mode = attrs.get("mode", "constant")
    if mode not in ("constant", "edge", "reflect"):
        raise b.unsupported(f"with mode={mode!r}")
    widths = _ints(attrs, "pad_width")
    if len(widths) != 2 * len(x.shape):
        raise b.bad(f"has pad_width {widths} for a {len(x.shape)}-d input")
    begins, ends = list(widths[0::2]), list(widths[1::2])
    pads = b.constant(f"{b.node.name}_pads", np.array(begins + ends, np.int64))
    names = [b.tensor(x), pads]
    if mode == "constant":
        names.append(b.constant(f"{b.node.name}_value",
                                np.array(_float(attrs, "constant_value", 0.0), np.float32)))
    shape = tuple(d + p + q for d, p, q in zip(x.shape, begins, ends))
    return [b.emit("Pad", names, shape, mode=mode)]


_TRANSLATORS: Dict[str, Callable[[_Builder, Dict[str, str], List[_Value]], List[_Value]]] = {
    "identity": _identity, "_copy": _identity, "BlockGrad": _identity, "stop_gradient": _identity,
    "Dropout": _dropout, "Cast": _cast, "cast": _cast, "amp_cast": _cast,
    "Convolution": _convolution, "BatchNorm": _batchnorm, "Activation": _activation, "LeakyReLU": _leaky_relu,
    "clip": _clip, "Pooling": _pooling, "Flatten": _flatten_op, "flatten": _flatten_op,
    "FullyConnected": _fully_connected, "add_n": _add_n, "ElementWiseSum": _add_n,
    "Concat": _concat, "concat": _concat, "Reshape": _reshape, "reshape": _reshape,
    "SoftmaxOutput": _softmax_output, "Softmax": _softmax_output, "softmax": _softmax,
    "SoftmaxActivation": _softmax_activation, "pad": _pad, "Pad": _pad,
    **{op: _binary for op in _BINARY}, **{op: _scalar for op in _SCALAR},
}
# Inputs an operator ignores at inference (labels): free variables there need no value.
_IGNORED_INPUTS = {"SoftmaxOutput": {1}, "Softmax": {1}}
SUPPORTED_OPERATORS = tuple(sorted(_TRANSLATORS))


# ---- the whole conversion ------------------------------------------------------------------------------------

def _read_symbol(data: bytes, source: str) -> Tuple[List[_Node], List[Tuple[int, int]]]:
    try:
        graph = json.loads(data)
        nodes = [_Node(i, str(n["op"]), str(n["name"]),
                       {str(k): str(v) for k, v in (n.get("attrs") or n.get("attr") or n.get("param") or {}).items()},
                       [(int(e[0]), int(e[1])) for e in n.get("inputs", [])])
                 for i, n in enumerate(graph["nodes"])]
        heads = [(int(h[0]), int(h[1])) for h in graph["heads"]]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelArtifactError(f"{source} is not an MXNet symbol JSON: {exc!r}") from None
    for node in nodes:
        if any(src >= node.index for src, _ in node.inputs):
            raise ModelArtifactError(f"{source}: node {node.name!r} reads a later node (nodes not in order)")
    if not heads or any(h >= len(nodes) for h, _ in heads):
        raise ModelArtifactError(f"{source}: 'heads' names no node of the graph")
    return nodes, heads


def build_model(symbol: bytes, params: Dict[str, np.ndarray], shape: Tuple[int, int, int],
                source: str = "the artifact", doc: str = "", target: str = "onnxruntime"
                ) -> Tuple[onnx_proto.Message, Dict[str, Any]]:
    """The ONNX ModelProto (unserialised) for `symbol` with `params` (`arg:`/`aux:` names) at input 1xCxHxW,
    and facts about it (`nodes`, `output_shape`, `fixed_gamma`). `source` names the artifact in errors, `doc` in
    the model's doc_string; `target` is one of TARGETS."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {TARGETS}")
    nodes, heads = _read_symbol(symbol, source)
    args, aux = mxnet_params.split_checkpoint(params, source)
    named = {**args, **aux}
    needed = _reachable(nodes, heads)
    builder = _Builder(named, source, target)
    builder.names.add(INPUT_NAME)
    values: Dict[Tuple[int, int], _Value] = {}
    missing: Dict[int, str] = {}
    for node in nodes:
        if node.index not in needed:
            continue
        builder.node = node
        if node.op == "null":
            if node.name == INPUT_NAME:
                values[(node.index, 0)] = _Value(INPUT_NAME, (1, *shape))
            elif node.name in named:
                array = named[node.name]
                values[(node.index, 0)] = _Value(node.name, tuple(array.shape), tensor=False, array=array)
            else:
                missing[node.index] = node.name
            continue
        translate = _TRANSLATORS.get(node.op)
        if translate is None:
            raise UnsupportedOperatorError(f"operator {node.op} (node {node.name!r}) is not supported by the ONNX "
                                           f"converter; {source} cannot be served without MXNet")
        ignored = _IGNORED_INPUTS.get(node.op, set())
        inputs = []
        for position, (src, out) in enumerate(node.inputs):
            if position in ignored:
                continue
            if src in missing:
                raise ModelArtifactError(f"{source}: node {node.name!r} ({node.op}) reads {missing[src]!r}, which "
                                         f"is neither the input {INPUT_NAME!r} nor in the params file")
            if (src, out) not in values:
                raise UnsupportedOperatorError(
                    f"operator {nodes[src].op} (node {nodes[src].name!r}) output {out} read by {node.name!r} is not "
                    f"translated (only output 0 of a multi-output operator is)")
            inputs.append(values[(src, out)])
        try:
            outputs = translate(builder, node.attrs, inputs)
        except (ValueError, IndexError, TypeError) as exc:
            raise ModelArtifactError(f"{source}: node {node.name!r} ({node.op}) with attributes {node.attrs}: "
                                     f"{exc}") from None
        for index, value in enumerate(outputs):
            values[(node.index, index)] = value
    if len(heads) != 1:
        raise UnsupportedOperatorError(f"{source} has {len(heads)} outputs; an image classifier has one")
    head = values.get(heads[0])
    if head is None:
        raise ModelArtifactError(f"{source}: the output {nodes[heads[0][0]].name!r} is not computed from "
                                 f"{INPUT_NAME!r}")
    if not head.tensor or head.name == INPUT_NAME:  # the output must be a node's output: copy it
        builder.node = nodes[heads[0][0]]
        head = builder.emit("Identity", [builder.tensor(head)], head.shape, "_copy")
    graph = onnx_proto.graph(
        "mxnet_sagemaker_image_classification", builder.nodes, builder.initializers,
        [onnx_proto.value_info(INPUT_NAME, _FLOAT, (1, *shape))],
        [onnx_proto.value_info(head.name, _FLOAT, head.shape)])
    model = onnx_proto.model(graph, IR_VERSION, ONNX_OPSET, PRODUCER, str(CONVERTER_VERSION),
                             doc or None)
    return model, {"nodes": len(builder.nodes), "output_shape": list(head.shape),
                   "fixed_gamma": builder.fixed_gamma}


def _reachable(nodes: List[_Node], heads: List[Tuple[int, int]]) -> set:
    """Indices of the nodes the heads depend on (a symbol may carry unused branches)."""
    seen, stack = set(), [h for h, _ in heads]
    while stack:
        index = stack.pop()
        if index not in seen:
            seen.add(index)
            stack.extend(src for src, _ in nodes[index].inputs)
    return seen


def convert(symbol_path: Path, params_path: Path, shape: Tuple[int, int, int], onnx_path: Path,
            source: Optional[str] = None, target: str = "onnxruntime") -> Conversion:
    """Convert the artifact's symbol + params for input 1xCxHxW into `onnx_path` (written whole or not at all),
    for `target` (see TARGETS)."""
    started = time.perf_counter()
    source = source or f"{symbol_path.name} + {params_path.name}"
    params = mxnet_params.load(params_path)
    model, facts = build_model(symbol_path.read_bytes(), params, tuple(int(d) for d in shape), source,
                               f"MXNet {symbol_path.name} + {params_path.name}, input 1x{'x'.join(map(str, shape))}"
                               f", for {target}", target)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    partial = onnx_path.with_name(onnx_path.name + ".partial")
    with open(partial, "wb") as out:
        size = model.write_to(out)
    partial.replace(onnx_path)
    seconds = round(time.perf_counter() - started, 3)
    log.info("converted %s to ONNX for %s (%d nodes, %.1f MB) in %.2f s", source, target, facts["nodes"],
             size / 1e6, seconds)
    return Conversion(str(onnx_path), seconds, size, ONNX_OPSET, facts["nodes"], facts["output_shape"],
                      facts["fixed_gamma"])
