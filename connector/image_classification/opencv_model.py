"""The OpenCV engine (`--engine opencv`): the converted ONNX model run by `cv2.dnn`.

Where PyPI has neither an MXNet nor an ONNX Runtime wheel (armv7l), Debian ships `python3-opencv` (Bookworm: 4.6.0,
Trixie: 4.10) with `cv2.dnn`, which reads ONNX; the connector already needs OpenCV to decode images, so this engine
adds no package. Only APIs present in OpenCV 4.6 are used, and nothing here depends on numpy 1 or 2.

The ONNX graph ends in the `softmax` that SageMaker's `SoftmaxOutput` computes at inference, so `cv2.dnn`'s output is
already the probability vector: it is returned as is (a second softmax would flatten it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from connector.image_classification.artifact import ModelArtifact
from connector.image_classification.accelerator import gpu_unavailable
from connector.image_classification.errors import ModelArtifactError
from connector.image_classification.model import InputShape, engine_threads
from connector.image_classification.onnx_cache import cached_onnx

log = logging.getLogger(__name__)


def cuda_devices(cv2) -> int:
    """CUDA devices OpenCV can use: 0 for the builds PyPI and Debian ship (no CUDA), or when no GPU is visible."""
    try:
        return int(cv2.cuda.getCudaEnabledDeviceCount())
    except (AttributeError, cv2.error):
        return 0


class OpenCvClassifierModel:
    """`ClassifierModel`'s interface on `cv2.dnn`: `predict` maps a 1xCxHxW tensor to one probability per class."""

    def __init__(self, artifact: ModelArtifact, shape: InputShape, gpu_acceleration: str = "CPU",
                 threads: Optional[int] = None, cache_dir: Optional[Path] = None) -> None:
        import cv2

        self.artifact = artifact
        self.shape = shape
        self.threads = threads or engine_threads()
        self.context = "cpu"
        use_cuda = False
        if gpu_acceleration == "GPU":
            if not hasattr(cv2.dnn, "DNN_BACKEND_CUDA"):
                gpu_unavailable(f"GPUAcceleration=GPU, but OpenCV {cv2.__version__}'s cv2.dnn has no CUDA backend: "
                                f"use --engine onnxruntime with its CUDA provider, or set GPUAcceleration=CPU")
            elif cuda_devices(cv2) < 1:
                gpu_unavailable(f"GPUAcceleration=GPU, but OpenCV {cv2.__version__} was built without CUDA or sees "
                                f"no CUDA device (cv2.cuda.getCudaEnabledDeviceCount() is 0): use --engine "
                                f"onnxruntime with its CUDA provider, an OpenCV built with CUDA, or "
                                f"GPUAcceleration=CPU")
            else:
                use_cuda = True
        # The opencv target: ReLU6 written as Relu/Sub, which OpenCV 4.6's importer reads (docs/conversion.md).
        self.onnx_path = cached_onnx(artifact, (shape.channels, shape.height, shape.width), cache_dir,
                                     target="opencv")
        cv2.setNumThreads(self.threads)
        try:
            self._net = cv2.dnn.readNetFromONNX(str(self.onnx_path))
        except cv2.error as exc:
            raise ModelArtifactError(f"OpenCV {cv2.__version__} cannot read {self.onnx_path} "
                                     f"(converted from {artifact.describe()}): {exc}") from None
        if use_cuda:
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            self.context = "cuda"
        else:
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        if hasattr(self._net, "enableWinograd"):  # OpenCV >= 4.7: 3x3 convolutions by Winograd drift ~2e-5 from
            self._net.enableWinograd(False)       # MXNet on a ResNet-34 (6e-7 without); 4.6 has no Winograd
        probe = self._forward(np.zeros(self.input_dims, dtype=np.float32))
        self.num_classes = int(probe.size)
        log.info("model %s on OpenCV %s cv2.dnn (%s), input %s (from %s), %d classes, %d engine thread(s)",
                 artifact.describe(), cv2.__version__, self.context.upper(), shape, shape.source, self.num_classes,
                 self.threads)

    @property
    def input_dims(self) -> Tuple[int, int, int, int]:
        return (1, self.shape.channels, self.shape.height, self.shape.width)

    def _forward(self, tensor: np.ndarray) -> np.ndarray:
        self._net.setInput(np.ascontiguousarray(tensor, dtype=np.float32))
        return self._net.forward()

    def predict(self, tensor: np.ndarray) -> np.ndarray:
        if tuple(tensor.shape) != self.input_dims:
            raise ValueError(f"the input tensor is {tensor.shape}, the model takes {self.input_dims}")
        return self._forward(tensor).reshape(-1).astype(np.float32, copy=False)
