"""Pre-activation ResNet symbols named like the ones the SageMaker image-classification algorithm trains.

The algorithm's networks follow MXNet's image-classification example ResNet: node names such as ``bn_data``,
``conv0``, ``stage2_unit1_sc``, ``bn1``, ``pool1``, ``fc1`` and ``softmax`` are what real artifacts contain, and
the connector (and its tests) should meet the same graph shape.  This is an independent implementation of those
naming and layout rules, not a copy of the example.

Run ``python -m examples.models.resnet --dest DIR`` to write a random-weight ResNet-18 artifact (for benchmarks).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import mxnet as mx
import numpy as np

from ._artifact import write_artifact

logger = logging.getLogger(__name__)

BN_EPS = 2e-5
BN_MOMENTUM = 0.9
# Units per stage for the large-image (4-stage) networks.
LARGE_UNITS = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
    152: (3, 8, 36, 3), 200: (3, 24, 36, 3), 269: (3, 30, 48, 8),
}
# Random images used to set an untrained network's BatchNorm moving statistics.
_CALIBRATION_BATCH = 8


class UnsupportedDepthError(ValueError):
    """num_layers has no ResNet layout for the requested image size."""


def parse_image_shape(image_shape: str) -> tuple[int, int, int]:
    """Parse SageMaker's ``"C,H,W"`` hyperparameter string."""
    try:
        channels, height, width = (int(part) for part in image_shape.split(","))
    except ValueError:
        raise ValueError(f"image_shape must look like '3,224,224', got {image_shape!r}") from None
    if min(channels, height, width) <= 0:
        raise ValueError(f"image_shape dimensions must be positive, got {image_shape!r}")
    return channels, height, width


def layout(num_layers: int, height: int) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """Return (units per stage, filters [stem, stage1, ...], bottleneck?) for a depth and input height.

    Images up to 28 pixels high get the 3-stage CIFAR-style network, whose depth must be 6n+2 (basic units)
    or 9n+2 with at least 164 layers (bottleneck units); larger ones get the 4-stage ImageNet network.
    """
    if height <= 28:
        if (num_layers - 2) % 9 == 0 and num_layers >= 164:
            return ((num_layers - 2) // 9,) * 3, (16, 64, 128, 256), True
        if (num_layers - 2) % 6 == 0 and 8 <= num_layers < 164:
            return ((num_layers - 2) // 6,) * 3, (16, 16, 32, 64), False
        raise UnsupportedDepthError(
            f"num_layers={num_layers} is not available for {height}-pixel images: use 6n+2 "
            f"(20, 32, 44, 56, 110) or 9n+2 >= 164")
    if num_layers not in LARGE_UNITS:
        raise UnsupportedDepthError(
            f"num_layers={num_layers} is not available for {height}-pixel images: use one of "
            f"{sorted(LARGE_UNITS)}")
    if num_layers >= 50:
        return LARGE_UNITS[num_layers], (64, 256, 512, 1024, 2048), True
    return LARGE_UNITS[num_layers], (64, 64, 128, 256, 512), False


def _bn(x: mx.sym.Symbol, name: str, fix_gamma: bool = False) -> mx.sym.Symbol:
    return mx.sym.BatchNorm(data=x, fix_gamma=fix_gamma, eps=BN_EPS, momentum=BN_MOMENTUM, name=name)


def _relu(x: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    return mx.sym.Activation(data=x, act_type="relu", name=name)


def _conv(x: mx.sym.Symbol, name: str, filters: int, kernel: int, stride: int) -> mx.sym.Symbol:
    pad = kernel // 2
    return mx.sym.Convolution(data=x, num_filter=filters, kernel=(kernel, kernel), stride=(stride, stride),
                              pad=(pad, pad), no_bias=True, workspace=256, name=name)


def _unit(x: mx.sym.Symbol, name: str, filters: int, stride: int, project: bool,
          bottleneck: bool) -> mx.sym.Symbol:
    """One pre-activation residual unit; the projection shortcut reads the unit's first activation."""
    pre = _relu(_bn(x, f"{name}_bn1"), f"{name}_relu1")
    if bottleneck:
        inner = filters // 4
        y = _conv(pre, f"{name}_conv1", inner, 1, 1)
        y = _conv(_relu(_bn(y, f"{name}_bn2"), f"{name}_relu2"), f"{name}_conv2", inner, 3, stride)
        y = _conv(_relu(_bn(y, f"{name}_bn3"), f"{name}_relu3"), f"{name}_conv3", filters, 1, 1)
    else:
        y = _conv(pre, f"{name}_conv1", filters, 3, stride)
        y = _conv(_relu(_bn(y, f"{name}_bn2"), f"{name}_relu2"), f"{name}_conv2", filters, 3, 1)
    shortcut = _conv(pre, f"{name}_sc", filters, 1, stride) if project else x
    return y + shortcut


def get_symbol(num_classes: int, num_layers: int, image_shape: str) -> mx.sym.Symbol:
    """Build the training graph ``data`` → ... → ``fc1`` → ``SoftmaxOutput('softmax')``.

    The stem is chosen by height separately from the stage layout (as in the original): up to 32 pixels a
    3×3 stride-1 ``conv0``; above that 7×7 stride-2 ``conv0`` + ``bn0`` + ``relu0`` + 3×3/2 max-pool.
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    _, height, _ = parse_image_shape(image_shape)
    units, filters, bottleneck = layout(num_layers, height)

    body = mx.sym.identity(data=mx.sym.Variable("data"), name="id")
    body = _bn(body, "bn_data", fix_gamma=True)
    if height <= 32:
        body = _conv(body, "conv0", filters[0], 3, 1)
    else:
        body = _conv(body, "conv0", filters[0], 7, 2)
        body = _relu(_bn(body, "bn0"), "relu0")
        body = mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    for stage, count in enumerate(units, start=1):
        stride = 1 if stage == 1 else 2
        for unit in range(1, count + 1):
            body = _unit(body, f"stage{stage}_unit{unit}", filters[stage], stride if unit == 1 else 1,
                         project=unit == 1, bottleneck=bottleneck)
    body = _relu(_bn(body, "bn1"), "relu1")
    body = mx.sym.Pooling(data=body, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    body = mx.sym.Flatten(data=body)
    body = mx.sym.FullyConnected(data=body, num_hidden=num_classes, name="fc1")
    return mx.sym.SoftmaxOutput(data=body, name="softmax")


def initial_params(symbol: mx.sym.Symbol, image_shape: str, seed: int = 0
                   ) -> tuple[dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """He-style Xavier weights, BN gamma 1 / beta 0, and BN moving statistics calibrated on random images.

    With moving mean 0 / variance 1 an untrained pre-activation ResNet fed raw 0-255 pixels lets activations
    grow through the residual sums until the softmax is nearly one-hot; measuring each BatchNorm's input statistics
    on a small batch of random pixel images keeps every layer at unit scale, like a trained network.
    """
    channels, height, width = parse_image_shape(image_shape)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, channels, height, width))
    mx.random.seed(seed)
    init = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)
    arg_params: dict[str, mx.nd.NDArray] = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name not in ("data", "softmax_label"):
            arg_params[name] = mx.nd.zeros(shape)
            init(mx.init.InitDesc(name), arg_params[name])
    aux_params = {name: (mx.nd.ones if name.endswith("_moving_var") else mx.nd.zeros)(shape)
                  for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes)}
    pixels = np.random.RandomState(seed).randint(0, 256, size=(_CALIBRATION_BATCH, channels, height, width))
    calibrate_batchnorm(symbol, arg_params, aux_params, pixels.astype(np.float32))
    return arg_params, aux_params


def calibrate_batchnorm(symbol: mx.sym.Symbol, arg_params: dict[str, mx.nd.NDArray],
                        aux_params: dict[str, mx.nd.NDArray], batch: np.ndarray) -> None:
    """Set every BatchNorm's moving mean/variance to the statistics of its input on `batch` (in place).

    One training-mode forward pass suffices: there each BatchNorm normalises with the batch statistics, so
    each layer sees exactly the input it will see in inference once all earlier layers are calibrated.
    """
    internals = symbol.get_internals()
    names = [aux[: -len("_moving_mean")] for aux in symbol.list_auxiliary_states() if aux.endswith("_moving_mean")]
    inputs = mx.sym.Group([internals[f"{name}_output"].get_children()[0] for name in names])
    # MXNet 1.9's MKLDNN subgraph pass cannot bind a graph that exposes fused intermediate outputs
    # ("Check failed: in_arg_ctx_map.count(arg_name)"), so this one-off executor is bound without it.
    previous = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    try:
        executor = inputs.simple_bind(mx.cpu(), grad_req="null", data=batch.shape)
    finally:
        if previous is None:
            del os.environ["MXNET_SUBGRAPH_BACKEND"]
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = previous
    executor.copy_params_from(
        {k: v for k, v in arg_params.items() if k in inputs.list_arguments()}, aux_params,
        allow_extra_params=True)
    for name, output in zip(names, executor.forward(is_train=True, data=mx.nd.array(batch))):
        values = output.asnumpy()
        axes = (0, 2, 3) if values.ndim == 4 else (0,)
        aux_params[f"{name}_moving_mean"] = mx.nd.array(values.mean(axis=axes))
        aux_params[f"{name}_moving_var"] = mx.nd.array(np.maximum(values.var(axis=axes) - BN_EPS, 0.0))
    logger.debug("calibrated %d BatchNorm layers on a batch of %d", len(names), batch.shape[0])


def save_random_model(dest_dir: str | Path, num_classes: int = 1000, num_layers: int = 18,
                      image_shape: str = "3,224,224", seed: int = 0) -> Path:
    """Write an untrained ResNet artifact (epoch 0); the same seed always gives the same weights."""
    symbol = get_symbol(num_classes, num_layers, image_shape)
    arg_params, aux_params = initial_params(symbol, image_shape, seed)
    return write_artifact(dest_dir, symbol, arg_params, aux_params, 0, parse_image_shape(image_shape))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a random-weight ResNet in the SageMaker IC layout.")
    parser.add_argument("--dest", required=True, help="output directory")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--num-layers", type=int, default=18)
    parser.add_argument("--image-shape", default="3,224,224")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dest = save_random_model(args.dest, args.num_classes, args.num_layers, args.image_shape, args.seed)
    print(f"wrote ResNet-{args.num_layers} ({args.image_shape}, {args.num_classes} classes) to {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
