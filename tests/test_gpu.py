"""GPUAcceleration=GPU on the ONNX engines: served on CUDA where the machine has it, refused naming what is missing
where it does not (CI and this development machine have no GPU: there the CUDA test skips, saying why).

The MXNet engine's GPU path is in tests/test_platform.py.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from bench.material import ReferenceModel, photos, reference_tensor  # noqa: E402
from connector.image_classification.artifact import locate  # noqa: E402
from connector.image_classification.errors import AcceleratorUnavailableError  # noqa: E402
from connector.image_classification.model import InputShape  # noqa: E402
from connector.image_classification.onnx_model import CUDA_PROVIDER, OnnxClassifierModel  # noqa: E402
from connector.image_classification.opencv_model import OpenCvClassifierModel, cuda_devices  # noqa: E402

SHAPE = (3, 28, 28)
MAX_ABS_DIFF = 1e-5


def visible_gpus() -> list:
    """The GPUs `nvidia-smi -L` lists: an oracle independent of ONNX Runtime."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    return [line for line in result.stdout.splitlines() if line.startswith("GPU ")]


def cuda_missing_reason() -> str:
    """Why the CUDA test cannot run here, or "" where it can."""
    if CUDA_PROVIDER not in ort.get_available_providers():
        return (f"the installed onnxruntime {ort.__version__} has no {CUDA_PROVIDER} "
                f"({', '.join(ort.get_available_providers())}); onnxruntime-gpu has it")
    if not visible_gpus():
        return "no NVIDIA GPU visible (nvidia-smi -L lists none)"
    return ""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


def test_onnxruntime_serves_on_the_gpu_like_mxnet_on_the_cpu(digits_model, cache):
    reason = cuda_missing_reason()
    if reason:
        pytest.skip(f"no GPU for ONNX Runtime here: {reason}")
    model = OnnxClassifierModel(locate(digits_model), InputShape(*SHAPE, source="test"), gpu_acceleration="GPU",
                                threads=1, cache_dir=cache)
    assert model.context == "cuda" and model.providers[0] == CUDA_PROVIDER
    reference = ReferenceModel(digits_model, 6, SHAPE)
    for name, (_, body) in photos().items():
        expected = reference.probabilities(body).astype(np.float64)
        got = model.predict(reference_tensor(body, SHAPE[1], SHAPE[2])).astype(np.float64)
        assert got.argmax() == expected.argmax(), name
        assert float(np.max(np.abs(got - expected))) <= MAX_ABS_DIFF, name


def test_a_gpu_request_without_cuda_is_refused_naming_what_is_missing(digits_model, cache, monkeypatch):
    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {CUDA_PROVIDER}: nothing is missing")
    monkeypatch.delenv("GGIC_GPU_FALLBACK", raising=False)
    shape = InputShape(*SHAPE, source="test")
    with pytest.raises(AcceleratorUnavailableError) as error:
        OnnxClassifierModel(locate(digits_model), shape, gpu_acceleration="GPU", threads=1, cache_dir=cache)
    message = str(error.value)
    assert f"has no {CUDA_PROVIDER}" in message and "install onnxruntime-gpu" in message
    assert "GGIC_GPU_FALLBACK=cpu falls back" in message

    monkeypatch.setenv("GGIC_GPU_FALLBACK", "cpu")
    served = OnnxClassifierModel(locate(digits_model), shape, gpu_acceleration="GPU", threads=1, cache_dir=cache)
    assert served.context == "cpu" and served.num_classes == 10


def test_opencv_refuses_a_gpu_request_without_a_cuda_build(digits_model, cache, monkeypatch):
    import cv2

    if cuda_devices(cv2) > 0:
        pytest.skip("this OpenCV has CUDA and sees a device")
    monkeypatch.delenv("GGIC_GPU_FALLBACK", raising=False)
    with pytest.raises(AcceleratorUnavailableError, match="built without CUDA or sees no CUDA device"):
        OpenCvClassifierModel(locate(digits_model), InputShape(*SHAPE, source="test"), gpu_acceleration="GPU",
                              threads=1, cache_dir=cache)


def test_run_with_onnxruntime_and_gpu_acceleration_without_cuda_fails_the_start_clearly(tmp_path, digits_model):
    from bench.harness import GGICRuntime, connector_entry

    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {CUDA_PROVIDER}")
    entry = connector_entry(digits_model, platform="Aarch64JTX2", GPUAcceleration="GPU")
    rt = GGICRuntime(tmp_path / "state", [entry], run_args=["--allow-platform-mismatch", "--engine", "onnxruntime"],
                     extra_env={"GGIC_GPU_FALLBACK": ""}).start(expect_ready=False)
    try:
        assert rt.wait_exit() == 1
        assert "AcceleratorUnavailableError" in rt.output() or "GPUAcceleration=GPU, but" in rt.output()
        assert f"has no {CUDA_PROVIDER}" in rt.output() and "install onnxruntime-gpu" in rt.output()
    finally:
        rt.stop()
