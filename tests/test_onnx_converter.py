"""Our MXNet-free converter (connector/image_classification/{mxnet_params,onnx_proto,onnx_export,onnx_cache}.py):
SageMaker artifact -> ONNX with numpy alone, checked against MXNet itself.

- the `.params` reader against `mx.nd.save` / `mx.nd.load`;
- the written model passes `onnx.checker` (the onnx package is a test tool only, never used to convert);
- ONNX Runtime and OpenCV's cv2.dnn on our ONNX answer like a direct MXNet forward of the artifact (max |dp|
  <= 1e-5, same top-1) on real photos and digits: the committed trained digits ResNet-20, random-weight SageMaker
  ResNets with randomised BatchNorm statistics, and the demo's pretrained EfficientNet-Lite0. `make test` runs
  ResNet-18 and -50 at 3x224x224 and ResNet-20 at 1x28x28; CONVERTER_ALL_DEPTHS=1 adds every other SageMaker num_layers
  (34, 101, 152, 200; 32, 44, 56, 110; and 18 at 3x32x32), about 3 minutes more on 2 cores;
- an unsupported operator is refused by name; the converter runs where `import mxnet` fails;
- the cache: reused when valid, converted again when the artifact changed or the cached file is corrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import cv2  # noqa: E402
import mxnet as mx  # noqa: E402

from bench.material import DIGITS_MODEL, REPO, photos, reference_tensor  # noqa: E402
from connector.image_classification import mxnet_params  # noqa: E402
from connector.image_classification.artifact import locate  # noqa: E402
from connector.image_classification.errors import ParamsFormatError, UnsupportedOperatorError  # noqa: E402
from connector.image_classification.onnx_cache import cached_onnx, entry_paths  # noqa: E402
from connector.image_classification.onnx_export import IR_VERSION, ONNX_OPSET, TARGETS, convert  # noqa: E402
from examples.models import resnet  # noqa: E402
from examples.models._artifact import write_artifact  # noqa: E402

MAX_ABS_DIFF = 1e-5
# Measured, from the float64 answer (ResNet-152 / -200): MXNet float32 1.4e-4 / 2.3e-4, ONNX Runtime 1.2e-4 /
# 8.1e-5, cv2.dnn without Winograd 3.4e-5 / 2.9e-4.
NOISE_FACTOR = 2
SLOW = bool(os.environ.get("CONVERTER_ALL_DEPTHS"))
slow = pytest.mark.skipif(not SLOW, reason="every other num_layers: set CONVERTER_ALL_DEPTHS=1 (about 2 min more)")


def _files(model_dir: Path):
    artifact = locate(model_dir)
    return artifact.symbol_path, artifact.params_path


def _mxnet_forward(model_dir: Path, tensor: np.ndarray) -> np.ndarray:
    """A direct MXNet forward of the artifact (Module, inference), the reference."""
    artifact = locate(model_dir)
    symbol, args, auxs = mx.model.load_checkpoint(str(model_dir / artifact.prefix), artifact.epoch)
    module = mx.mod.Module(symbol, label_names=None, context=mx.cpu())
    module.bind(for_training=False, data_shapes=[("data", tensor.shape)])
    module.set_params(args, auxs, allow_missing=True)
    module.forward(mx.io.DataBatch([mx.nd.array(tensor)]), is_train=False)
    return module.get_outputs()[0].asnumpy()


def _mxnet_float64_forward(model_dir: Path, tensor: np.ndarray) -> np.ndarray:
    """The same forward in float64 (MXNet's own operators, no MKLDNN): the exact answer up to float64 rounding, to
    measure how far MXNet's float32 forward itself is from it."""
    artifact = locate(model_dir)
    symbol, args, auxs = mx.model.load_checkpoint(str(model_dir / artifact.prefix), artifact.epoch)
    previous = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    try:
        executor = symbol.simple_bind(mx.cpu(), grad_req="null", type_dict={"data": "float64"}, data=tensor.shape)
    finally:
        if previous is None:
            del os.environ["MXNET_SUBGRAPH_BACKEND"]
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = previous
    executor.copy_params_from({k: v.astype("float64") for k, v in args.items()},
                              {k: v.astype("float64") for k, v in auxs.items()}, allow_extra_params=True)
    return executor.forward(is_train=False, data=mx.nd.array(tensor, dtype="float64"))[0].asnumpy()


def _onnx_runtime(onnx_path: Path, tensor: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"data": tensor})[0]


def _opencv(onnx_path: Path, tensor: np.ndarray) -> np.ndarray:
    """cv2.dnn as OpenCV 4.6 (Debian Bookworm armhf) computes: without the Winograd 3x3 convolutions that 4.7 added
    (with them, 4.10 is 2.4e-5 from MXNet on ResNet-34, 17x MXNet's own float32 error)."""
    net = cv2.dnn.readNetFromONNX(str(onnx_path))
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    net.setInput(tensor)
    return net.forward()


def _convert_for_both(model_dir: Path, shape, dest: Path):
    """The artifact converted for ONNX Runtime and for OpenCV (only `clip` differs): (conversion, paths)."""
    symbol, params = _files(model_dir)
    conversion = convert(symbol, params, shape, dest / "model.onnx")
    for_opencv = convert(symbol, params, shape, dest / "model-opencv.onnx", target="opencv")
    return conversion, (Path(conversion.onnx_path), Path(for_opencv.onnx_path))


def _assert_same_answers(model_dir: Path, onnx_paths, tensors: dict, noise_aware: bool = False) -> float:
    """Same top-1 as MXNet's float32 forward and max |dp| <= 1e-5 from it, for ONNX Runtime on `onnx_paths[0]`
    and cv2.dnn on `onnx_paths[1]`.

    With `noise_aware` (random-weight ResNets of 34 layers and more) float32 rounding alone moves an answer by more
    than 1e-5: MXNet's own float32 forward is up to 2.3e-4 from its float64 forward on ResNet-200. There an engine
    more than 1e-5 from MXNet must be at most NOISE_FACTOR times as far from the float64 answer as MXNet is: no
    less exact than MXNet itself, which a translation error (a wrong epsilon, padding or gamma) is not.
    """
    worst = 0.0
    for name, tensor in tensors.items():
        expected = _mxnet_forward(model_dir, tensor)
        exact = None
        for engine, got in (("onnxruntime", _onnx_runtime(onnx_paths[0], tensor)),
                            ("cv2.dnn", _opencv(onnx_paths[1], tensor))):
            assert got.shape == expected.shape, f"{engine} {name}: shape {got.shape} != MXNet's {expected.shape}"
            assert got.argmax() == expected.argmax(), f"{engine} {name}: top-1 {got.argmax()} != {expected.argmax()}"
            diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
            worst = max(worst, diff)
            if diff <= MAX_ABS_DIFF:
                continue
            assert noise_aware, f"{engine} {name}: max |dp| {diff:.2e} > {MAX_ABS_DIFF:.0e}"
            if exact is None:
                exact = _mxnet_float64_forward(model_dir, tensor)
            mxnet_error = float(np.max(np.abs(expected - exact)))
            engine_error = float(np.max(np.abs(got - exact)))
            print(f"{engine} {name}: {diff:.2e} from MXNet float32; from the float64 answer: {engine_error:.2e}, "
                  f"MXNet float32 {mxnet_error:.2e}")
            assert engine_error <= NOISE_FACTOR * mxnet_error, (
                f"{engine} {name}: max |dp| {diff:.2e} from MXNet, and {engine_error:.2e} from the float64 answer "
                f"(MXNet float32: {mxnet_error:.2e})")
    return worst


def _photo_tensor(name: str, shape) -> np.ndarray:
    channels, height, width = shape
    tensor = reference_tensor(photos()[name][1], height, width)
    return tensor if channels == 3 else tensor.mean(axis=1, keepdims=True, dtype=np.float32)


def _digit_tensor(index: int, shape) -> np.ndarray:
    from sklearn.datasets import load_digits

    channels, height, width = shape
    image = cv2.resize(load_digits().images[index].astype(np.float32) * (255 / 16), (width, height),
                       interpolation=cv2.INTER_LINEAR)
    return np.repeat(image[None, None], channels, axis=1).astype(np.float32)


def _randomised_resnet(dest: Path, num_layers: int, image_shape: str, num_classes: int) -> Path:
    """A SageMaker-layout ResNet whose BatchNorms all matter: calibrated moving statistics, then gammas, betas,
    means and variances jittered; bn_data's stored gamma is 0.5, which fix_gamma must ignore. The classifier's
    weights are scaled up so that the softmax is peaked, not nearly uniform."""
    symbol = resnet.get_symbol(num_classes, num_layers, image_shape)
    args, auxs = resnet.initial_params(symbol, image_shape, seed=num_layers)
    rng = np.random.RandomState(num_layers)
    for name, value in list(args.items()):
        if name.endswith("_gamma"):
            args[name] = mx.nd.array(rng.uniform(0.8, 1.2, value.shape))
        elif name.endswith("_beta"):
            args[name] = mx.nd.array(rng.normal(0.0, 0.1, value.shape))
    args["bn_data_gamma"] = mx.nd.full(args["bn_data_gamma"].shape, 0.5)
    args["fc1_weight"] = args["fc1_weight"] * 5  # logits spread out: a peaked answer, sensitive to every layer
    for name, value in list(auxs.items()):
        array = value.asnumpy()
        if name.endswith("_moving_mean"):
            auxs[name] = mx.nd.array(array + rng.normal(0.0, 0.1, array.shape) * np.sqrt(array.std() + 1e-3))
        else:
            auxs[name] = mx.nd.array(array * rng.uniform(0.8, 1.25, array.shape))
    return write_artifact(dest, symbol, args, auxs, 0, resnet.parse_image_shape(image_shape))


# ---- the params reader ---------------------------------------------------------------------------------------

def test_the_params_reader_reads_what_mxnet_saves_in_every_dtype_and_shape(tmp_path):
    rng = np.random.RandomState(0)
    arrays = {
        "arg:conv_weight": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
        "arg:half": rng.normal(size=(5, 7)).astype(np.float16),
        "arg:double": rng.normal(size=(4,)).astype(np.float64),
        "aux:bytes": rng.randint(0, 256, size=(2, 3, 4)).astype(np.uint8),
        "aux:int32": rng.randint(-9, 9, size=(6,)).astype(np.int32),
        "aux:int8": rng.randint(-9, 9, size=(3, 1)).astype(np.int8),
        "aux:int64": np.array([2 ** 40, -3], np.int64),
        "arg:one": np.array([1.5], np.float32),
    }
    path = tmp_path / "x.params"
    mx.nd.save(str(path), {k: mx.nd.array(v, dtype=v.dtype) for k, v in arrays.items()})
    ours, theirs = mxnet_params.load(path), mx.nd.load(str(path))
    assert list(ours) == list(theirs) == list(arrays)
    for name, expected in arrays.items():
        assert ours[name].dtype == theirs[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(ours[name], theirs[name].asnumpy())
        np.testing.assert_array_equal(ours[name], expected)
    # NumPy-shape semantics (V3 headers): a scalar and an empty array round-trip too.
    v3 = tmp_path / "v3.params"
    with mx.np_shape(True):
        mx.nd.save(str(v3), {"arg:scalar": mx.nd.array(np.array(3.0)), "arg:empty": mx.nd.zeros((0, 4)),
                             "arg:w": mx.nd.array(arrays["arg:conv_weight"])})
    read = mxnet_params.load(v3)
    assert read["arg:scalar"].shape == () and float(read["arg:scalar"]) == 3.0
    assert read["arg:empty"].shape == (0, 4)
    np.testing.assert_array_equal(read["arg:w"], arrays["arg:conv_weight"])
    # The committed trained model's checkpoint, key by key.
    checkpoint = _files(DIGITS_MODEL)[1]
    ours, theirs = mxnet_params.load(checkpoint), mx.nd.load(str(checkpoint))
    assert set(ours) == set(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name].asnumpy())


def test_a_truncated_or_foreign_params_file_is_refused_with_the_reason(tmp_path):
    data = _files(DIGITS_MODEL)[1].read_bytes()
    with pytest.raises(ParamsFormatError, match="truncated at byte"):
        mxnet_params.parse(data[: len(data) // 2], "half.params")
    with pytest.raises(ParamsFormatError, match="not MXNet's NDArray list magic"):
        mxnet_params.parse(b"PK\x03\x04" + data[4:], "zip.params")
    with pytest.raises(ParamsFormatError, match="unexpected bytes after the names"):
        mxnet_params.parse(data + b"\0", "long.params")
    sparse = tmp_path / "sparse.params"
    mx.nd.save(str(sparse), {"arg:s": mx.nd.array(np.eye(3)).tostype("csr")})
    with pytest.raises(ParamsFormatError, match="csr"):
        mxnet_params.load(sparse)


# ---- the written model ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    return convert(*_files(DIGITS_MODEL), (3, 28, 28), path)


def test_the_written_model_passes_the_onnx_checker_with_weights_as_initializers(digits_onnx):
    model = onnx.load(digits_onnx.onnx_path)
    onnx.checker.check_model(model, full_check=True)  # full_check: ONNX's shape inference agrees with ours
    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", ONNX_OPSET)]
    assert [i.name for i in model.graph.input] == ["data"]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 28, 28]
    assert [o.name for o in model.graph.output] == ["softmax"]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 10]
    params = mxnet_params.load(_files(DIGITS_MODEL)[1])
    initializers = {t.name for t in model.graph.initializer}
    assert {k.split(":", 1)[1] for k in params} - {"bn_data_gamma"} <= initializers
    ops = {n.op_type for n in model.graph.node}
    assert ops == {"BatchNormalization", "Conv", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm", "Softmax"}


def test_fix_gamma_batchnorm_runs_with_gamma_one_as_in_mxnet(digits_onnx):
    """The trained params hold bn_data_gamma = 0.9999 (weight decay on a gamma MXNet never uses)."""
    stored = mxnet_params.load(_files(DIGITS_MODEL)[1])["arg:bn_data_gamma"]
    assert not np.all(stored == 1.0)
    assert digits_onnx.fixed_gamma == ["bn_data"]
    model = onnx.load(digits_onnx.onnx_path)
    scale = next(n for n in model.graph.node if n.name == "bn_data").input[1]
    gamma = next(t for t in model.graph.initializer if t.name == scale)
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(gamma), np.ones(3, np.float32))


# ---- answers against MXNet -----------------------------------------------------------------------------------

def test_the_trained_digits_model_answers_like_mxnet(tmp_path):
    tensors = {f"digit-{i}": _digit_tensor(i, (3, 28, 28)) for i in (0, 7, 1000)}
    tensors["photo-chelsea"] = _photo_tensor("chelsea", (3, 28, 28))
    _, paths = _convert_for_both(DIGITS_MODEL, (3, 28, 28), tmp_path)
    worst = _assert_same_answers(DIGITS_MODEL, paths, tensors)
    print(f"digits ResNet-20: max |dp| {worst:.2e}")


def test_the_demo_efficientnet_answers_like_mxnet_on_real_photos(efficientnet_model, tmp_path):
    conversion, paths = _convert_for_both(efficientnet_model, (3, 224, 224), tmp_path)
    ops = []
    for path in paths:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        ops.append({n.op_type for n in model.graph.node})
    # ReLU6 is a Clip for ONNX Runtime (fused into the convolution); OpenCV 4.6 reads Clip only without inputs.
    assert "Clip" in ops[0] and "Clip" not in ops[1] and ops[1] - ops[0] == {"Relu", "Sub"}
    tensors = {name: _photo_tensor(name, (3, 224, 224)) for name in ("coffee", "grace_hopper")}
    worst = _assert_same_answers(efficientnet_model, paths, tensors)
    top = int(_onnx_runtime(Path(conversion.onnx_path), tensors["coffee"]).argmax())
    assert top == 967, f"coffee is espresso (967) for EfficientNet-Lite0, got {top}"
    print(f"EfficientNet-Lite0: {conversion.seconds:.2f} s to convert, max |dp| {worst:.2e}")


DEPTHS = [
    pytest.param(18, "3,224,224", "chelsea", id="resnet18-224"),
    pytest.param(50, "3,224,224", "coffee", id="resnet50-224"),
    pytest.param(20, "1,28,28", "digit", id="resnet20-1x28"),
    *(pytest.param(n, "3,224,224", "astronaut", id=f"resnet{n}-224", marks=slow) for n in (34, 101, 152, 200)),
    *(pytest.param(n, "1,28,28", "digit", id=f"resnet{n}-1x28", marks=slow) for n in (32, 44, 56, 110)),
    pytest.param(18, "3,32,32", "rocket", id="resnet18-32", marks=slow),
]


@pytest.mark.parametrize("num_layers, image_shape, picture", DEPTHS)
def test_every_sagemaker_resnet_answers_like_mxnet(num_layers, image_shape, picture, tmp_path):
    shape = resnet.parse_image_shape(image_shape)
    model_dir = _randomised_resnet(tmp_path / "model", num_layers, image_shape, 1000 if shape[1] > 32 else 10)
    conversion, paths = _convert_for_both(model_dir, shape, tmp_path)
    assert conversion.fixed_gamma == ["bn_data"]
    tensor = _digit_tensor(7, shape) if picture == "digit" else _photo_tensor(picture, shape)
    classes = 1000 if shape[1] > 32 else 10
    peak = float(_mxnet_forward(model_dir, tensor).max())
    assert peak > 2 / classes, f"MXNet's answer is nearly uniform (top p {peak:.4f}): a weak comparison"
    worst = _assert_same_answers(model_dir, paths, {picture: tensor}, noise_aware=True)
    print(f"ResNet-{num_layers} {image_shape}: {conversion.seconds:.2f} s to convert, top p {peak:.3f}, "
          f"max |dp| {worst:.2e}")


def test_the_other_translated_operators_answer_like_mxnet(tmp_path):
    """Operators the SageMaker networks do not use but the converter translates, in one small graph."""
    data = mx.sym.Variable("data")
    x = mx.sym.Convolution(data, num_filter=6, kernel=(3, 3), stride=(2, 2), pad=(1, 1), name="conv")
    x = mx.sym.BatchNorm(x, fix_gamma=False, eps=1e-3, name="bn")
    x = mx.sym.LeakyReLU(x, act_type="leaky", slope=0.1, name="leaky")
    a = mx.sym.Pooling(x, kernel=(3, 3), stride=(2, 2), pool_type="max", pooling_convention="full", name="maxfull")
    b = mx.sym.Pooling(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg", count_include_pad=False,
                       name="avgpad")
    b = mx.sym.Activation(mx.sym.Dropout(b, p=0.5, name="drop"), act_type="tanh", name="tanh")
    c = mx.sym.concat(mx.sym.clip(a, a_min=-0.5, a_max=0.5, name="clip"), b, dim=1, name="cat")
    c = mx.sym.broadcast_mul(c, mx.sym.Activation(c, act_type="sigmoid", name="sig"), name="gate")
    c = mx.sym.pad(c, mode="constant", constant_value=0.25, pad_width=(0, 0, 0, 0, 0, 1, 1, 0), name="padded")
    c = 1.0 - (c * 2.0 + 0.5) / 3.0
    c = mx.sym.reshape(c, shape=(0, -1), name="rs")
    c = mx.sym.FullyConnected(c, num_hidden=7, no_bias=True, name="fc")
    out = mx.sym.softmax(mx.sym.elemwise_add(c, c, name="twice"), axis=-1, name="prob")
    shape = (3, 20, 20)
    rng = np.random.RandomState(1)
    arg_shapes, _, aux_shapes = out.infer_shape(data=(1, *shape))
    args = {n: mx.nd.array(rng.normal(0, 0.3, s)) for n, s in zip(out.list_arguments(), arg_shapes) if n != "data"}
    auxs = {n: mx.nd.array(rng.uniform(0.5, 1.5, s)) for n, s in zip(out.list_auxiliary_states(), aux_shapes)}
    model_dir = write_artifact(tmp_path / "zoo", out, args, auxs, 1, shape)
    tensor = rng.uniform(0, 1, (1, *shape)).astype(np.float32)
    expected = _mxnet_forward(model_dir, tensor)
    for target in TARGETS:  # the OpenCV form of clip(-0.5, 0.5) is checked by ONNX Runtime too
        conversion = convert(*_files(model_dir), shape, tmp_path / f"zoo-{target}.onnx", target=target)
        onnx.checker.check_model(onnx.load(conversion.onnx_path), full_check=True)
        got = _onnx_runtime(Path(conversion.onnx_path), tensor)
        assert got.shape == expected.shape == (1, 7)
        assert float(np.max(np.abs(got - expected))) <= MAX_ABS_DIFF and got.argmax() == expected.argmax(), target


# ---- refusals and independence from MXNet -------------------------------------------------------------------

@pytest.fixture(scope="module")
def lrn_model(tmp_path_factory):
    data = mx.sym.Variable("data")
    x = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), name="conv1")
    x = mx.sym.LRN(x, nsize=3, name="norm1")
    x = mx.sym.FullyConnected(x, num_hidden=3, name="fc1")
    symbol = mx.sym.SoftmaxOutput(x, name="softmax")
    arg_shapes, _, _ = symbol.infer_shape(data=(1, 3, 8, 8))
    args = {n: mx.nd.ones(s) for n, s in zip(symbol.list_arguments(), arg_shapes) if n not in ("data", "softmax_label")}
    return write_artifact(tmp_path_factory.mktemp("lrn"), symbol, args, {}, 1, (3, 8, 8))


def test_an_unsupported_operator_is_refused_naming_it_and_its_node(lrn_model, tmp_path, caplog):
    with pytest.raises(UnsupportedOperatorError, match=r"operator LRN \(node 'norm1'\)"):
        convert(*_files(lrn_model), (3, 8, 8), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    # Through the cache (the conversion runs in a child process): the same error class comes back, nothing stays.
    with pytest.raises(UnsupportedOperatorError, match=r"operator LRN \(node 'norm1'\)"):
        cached_onnx(locate(lrn_model), (3, 8, 8), tmp_path / "cache")
    assert [p.suffix for p in (tmp_path / "cache" / "onnx").iterdir()] == [".lock"]


def test_the_converter_runs_where_mxnet_cannot_be_imported(digits_onnx, tmp_path):
    symbol, params = _files(DIGITS_MODEL)
    out = tmp_path / "no-mxnet.onnx"
    script = ("import sys\n"
              "sys.modules['mxnet'] = None; sys.modules['onnx'] = None  # any import of them now fails\n"
              "try:\n    import mxnet\nexcept ImportError:\n    pass\nelse:\n    sys.exit('mxnet imported')\n"
              "from connector.image_classification.onnx_cache import main\n"
              f"code = main([{str(symbol)!r}, {str(params)!r}, '3,28,28', {str(out)!r}])\n"
              "assert 'mxnet' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["nodes"] == digits_onnx.nodes
    assert out.read_bytes() == Path(digits_onnx.onnx_path).read_bytes()  # deterministic, and the same model


# ---- the cache -----------------------------------------------------------------------------------------------

def test_the_cache_is_reused_then_rebuilt_when_the_artifact_changes_or_the_file_is_corrupt(tmp_path, caplog):
    model_dir = shutil.copytree(DIGITS_MODEL, tmp_path / "model")
    cache = tmp_path / "cache"
    shape = (3, 28, 28)
    tensor = _digit_tensor(7, shape)
    caplog.set_level(logging.INFO, logger="connector.image_classification.onnx_cache")

    first = cached_onnx(locate(model_dir), shape, cache)
    onnx_path, sidecar = entry_paths(locate(model_dir), shape, cache)
    assert first == onnx_path and onnx_path.is_file()
    record = json.loads(sidecar.read_text())
    assert record["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    answer = _onnx_runtime(first, tensor)
    written = onnx_path.stat().st_mtime_ns

    caplog.clear()
    assert cached_onnx(locate(model_dir), shape, cache) == first
    assert onnx_path.stat().st_mtime_ns == written and "convert" not in caplog.text  # reused, not converted

    # Corrupted (one byte) and truncated files are both found and replaced.
    for damage in (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], lambda b: b[: len(b) // 2]):
        onnx_path.write_bytes(damage(onnx_path.read_bytes()))
        caplog.clear()
        cached_onnx(locate(model_dir), shape, cache)
        assert "corrupted or truncated" in caplog.text
        assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == record["onnx_sha256"]
        np.testing.assert_array_equal(_onnx_runtime(onnx_path, tensor), answer)

    # A lost sidecar: the file cannot be trusted, so it is converted again.
    sidecar.unlink()
    caplog.clear()
    cached_onnx(locate(model_dir), shape, cache)
    assert "sidecar" in caplog.text and json.loads(sidecar.read_text())["onnx_sha256"] == record["onnx_sha256"]

    # A changed artifact (class 3's fc1 bias raised by 30) is converted again: it now answers 3, like MXNet.
    params_path = locate(model_dir).params_path
    params = mx.nd.load(str(params_path))
    params["arg:fc1_bias"] = params["arg:fc1_bias"] + mx.nd.array(np.eye(10)[3] * 30)
    mx.nd.save(str(params_path), params)
    caplog.clear()
    again = cached_onnx(locate(model_dir), shape, cache)
    assert again == onnx_path and "the artifact" in caplog.text and "changed" in caplog.text
    changed = _onnx_runtime(again, tensor)
    assert answer.argmax() == 7 and changed.argmax() == 3
    np.testing.assert_allclose(changed, _mxnet_forward(model_dir, tensor), atol=MAX_ABS_DIFF)
    assert sorted(p.name for p in (cache / "onnx").iterdir()) == sorted(
        [onnx_path.name, sidecar.name, onnx_path.with_suffix(".lock").name])
    # The OpenCV form has its own entry beside it.
    for_opencv = cached_onnx(locate(model_dir), shape, cache, target="opencv")
    assert for_opencv != onnx_path and for_opencv.name.endswith("-opencv.onnx") and onnx_path.is_file()
    assert json.loads(for_opencv.with_suffix(".json").read_text())["target"] == "opencv"


def test_the_conversion_bench_prints_its_table_and_writes_json(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.conversion", "--runs", "1", "--models", "efficientnet-lite0",
                           "--json", str(tmp_path / "conversion.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verified load s" in done.stdout and "efficientnet-lite0" in done.stdout
    (entry,) = json.loads((tmp_path / "conversion.json").read_text())["models"]
    assert entry["nodes"] == 150 and entry["onnx_mb"] > 18
    assert entry["first_load_s"] > entry["child_convert_s"] > 0 and entry["verified_load_s"]["median"] > 0


def test_workers_starting_together_convert_once(tmp_path):
    """Two processes ask for the same uncached model at once: the lock lets one convert, the other reuses it."""
    script = ("import logging, sys\n"
              "from pathlib import Path\n"
              "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
              "from connector.image_classification.artifact import locate\n"
              "from connector.image_classification.onnx_cache import cached_onnx\n"
              f"print(cached_onnx(locate(Path({str(DIGITS_MODEL)!r})), (3, 28, 28), Path({str(tmp_path)!r})))\n")
    children = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], results
    assert results[0][0] == results[1][0]
    logs = [err for _, err in results]
    assert sum(err.count("converted ") for err in logs) == 1, logs
    onnx.checker.check_model(onnx.load(results[0][0].strip()))
