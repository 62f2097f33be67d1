"""The ONNX Runtime engine (`GGIC_ENGINE=onnxruntime`, `ggic run --engine onnxruntime`; engines.py says where it
is the default).

The same SageMaker artifact is converted once, by our own converter (`onnx_export`, numpy only: no MXNet), into the
model cache (`GGIC_MODEL_CACHE`, as `artifact.extract_cached` uses); later starts load the cached file once
`onnx_cache.cached_onnx` has verified it against the artifact (docs/conversion.md). `OnnxClassifierModel` has
`ClassifierModel`'s constructor and `predict` interface (1xCxHxW float32 in, one float32 probability per class out).

Measured on 2 cores (bench/onnx_engine.py): 1.5-1.7x faster than MXNet on a ResNet-18 and 2.5-4x on
EfficientNet-Lite0 at batch 1, same top-1 and max |dp| <= 2e-6 on real photos (docs/engines.md). Needs onnxruntime
(onnx itself only for the tests' checker). GPUAcceleration=GPU runs on the CUDA execution provider where the
installed onnxruntime has one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from connector.image_classification.accelerator import gpu_unavailable
from connector.image_classification.artifact import ModelArtifact
from connector.image_classification.errors import EngineUnavailableError
from connector.image_classification.model import InputShape, engine_threads
from connector.image_classification.onnx_cache import cached_onnx
from connector.image_classification.onnx_export import ONNX_OPSET

__all__ = ["ONNX_OPSET", "OnnxClassifierModel", "cached_onnx", "onnx_session"]

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def onnx_session(onnx_path: Path, threads: int, spinning: bool = False, providers: Sequence[str] = (CPU_PROVIDER,)):
    """An ONNX Runtime session with `threads` intra-op threads (the calling thread included), on `providers`.

    Worker threads do not spin between requests by default: on a Greengrass core the connector shares the cores
    with other Lambdas (measured cost on 2 cores: none on ResNet-18, EfficientNet-Lite0 3.9 -> 5.2 ms).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=list(providers))


class OnnxClassifierModel:
    """`ClassifierModel`'s interface on ONNX Runtime: `predict` maps a 1xCxHxW tensor to probabilities.

    GPUAcceleration=GPU needs the CUDA execution provider (onnxruntime-gpu, or NVIDIA's build for a Jetson's
    JetPack) and a GPU it can open; without either the start is refused naming what is missing, as MXNet's GPU path
    does (GGIC_GPU_FALLBACK=cpu serves on the CPU instead, with a warning)."""

    def __init__(self, artifact: ModelArtifact, shape: InputShape, gpu_acceleration: str = "CPU",
                 threads: Optional[int] = None, cache_dir: Optional[Path] = None, spinning: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailableError(f"the onnxruntime engine cannot import onnxruntime: {exc}") from None
        self.artifact = artifact
        self.shape = shape
        self.threads = threads or engine_threads()
        providers = [CPU_PROVIDER]
        if gpu_acceleration == "GPU":
            available = ort.get_available_providers()
            if CUDA_PROVIDER in available:
                providers = [CUDA_PROVIDER, CPU_PROVIDER]
            else:
                gpu_unavailable(f"GPUAcceleration=GPU, but the installed onnxruntime {ort.__version__} has no "
                                f"{CUDA_PROVIDER} (it has {', '.join(available)}): install onnxruntime-gpu (on a "
                                f"Jetson, NVIDIA's onnxruntime-gpu wheel for its JetPack) or set GPUAcceleration=CPU")
        self.onnx_path = cached_onnx(artifact, (shape.channels, shape.height, shape.width), cache_dir)
        try:
            self._session = onnx_session(self.onnx_path, self.threads, spinning, providers)
        except Exception as exc:  # the CUDA provider failing to load its libraries or to open a device
            if providers[0] != CUDA_PROVIDER:
                raise
            gpu_unavailable(f"GPUAcceleration=GPU, but ONNX Runtime's {CUDA_PROVIDER} could not start: {exc}")
            providers = [CPU_PROVIDER]
            self._session = onnx_session(self.onnx_path, self.threads, spinning, providers)
        if providers[0] == CUDA_PROVIDER and self._session.get_providers()[0] != CUDA_PROVIDER:
            # ONNX Runtime falls back to the CPU by itself (a warning in its log) when CUDA cannot be used
            gpu_unavailable(f"GPUAcceleration=GPU, but ONNX Runtime's {CUDA_PROVIDER} could not be used (no CUDA "
                            f"GPU visible, or its CUDA/cuDNN libraries are missing): check the driver, "
                            f"CUDA_VISIBLE_DEVICES and the CUDA libraries, or set GPUAcceleration=CPU")
        self.providers = self._session.get_providers()
        self.context = "cuda" if self.providers[0] == CUDA_PROVIDER else "cpu"
        self._input = self._session.get_inputs()[0].name
        self.num_classes = int(self._session.get_outputs()[0].shape[-1])
        log.info("model %s on ONNX Runtime %s (%s), input %s (from %s), %d classes, %d engine thread(s)",
                 artifact.describe(), ort.__version__, self.context.upper(), shape, shape.source, self.num_classes,
                 self.threads)

    @property
    def input_dims(self) -> Tuple[int, int, int, int]:
        return (1, self.shape.channels, self.shape.height, self.shape.width)

    def predict(self, tensor: np.ndarray) -> np.ndarray:
        data = np.ascontiguousarray(tensor, dtype=np.float32)
        return self._session.run(None, {self._input: data})[0][0].astype(np.float32, copy=False)
