"""Loading the SageMaker image-classification model into MXNet and running it.

The artifact is an MXNet checkpoint whose graph ends in `SoftmaxOutput` named `softmax`: we bind a `Module` with no
label (the label input is a free variable, hence `allow_missing=True`) at batch 1 and read `softmax_output`, which
at inference is the class probabilities. We never depend on inner layer names, so transfer-learning models with
another classifier name load too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

import numpy as np

from connector.contract.environment import ENGINE_THREADS_ENV
from connector.image_classification.accelerator import gpu_unavailable
from connector.image_classification.artifact import ModelArtifact, read_model_shapes
from connector.image_classification.errors import InputShapeMismatchError, ModelArtifactError
from connector.image_classification.training_job import TrainingJob

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SHAPE = (3, 224, 224)


@dataclass(frozen=True)
class InputShape:
    channels: int
    height: int
    width: int
    source: str

    def __str__(self) -> str:
        return f"{self.channels},{self.height},{self.width}"


def resolve_input_shape(artifact: ModelArtifact, job: Optional[TrainingJob]) -> InputShape:
    """Training `image_shape` (DescribeTrainingJob), else model-shapes.json, else 3,224,224.

    A training job writes its model-shapes.json from its own image_shape, so when both are known and disagree, the
    model and the job ARN belong to different jobs: refused here, naming both, before the engine binds the model
    at a shape it was not trained for (which fails, if at all, with the engine's own words)."""
    from_job = job.image_shape() if job is not None else None
    from_file = read_model_shapes(artifact.shapes_path)
    if from_job is not None and from_file is not None and tuple(from_job) != tuple(from_file):
        assert job is not None and artifact.shapes_path is not None
        raise InputShapeMismatchError(
            f"the model's input shape disagrees between its two sources: training job {job.name} "
            f"(MLModelSageMakerJobArn) has image_shape {','.join(map(str, from_job))}, but {artifact.shapes_path} "
            f"says {','.join(map(str, from_file))}. The model in MLModelDestinationPath was not trained by that "
            f"job: set MLModelSageMakerJobArn to the job that trained it, or put that job's model there "
            f"(`ggic fetch-model --training-job-arn <its ARN>` fetches it)")
    if from_job is not None:
        assert job is not None
        return InputShape(*from_job, source=f"training job {job.name} hyperparameter image_shape")
    if from_file is not None:
        return InputShape(*from_file, source=str(artifact.shapes_path))
    return InputShape(*DEFAULT_IMAGE_SHAPE, source="the algorithm's default image_shape")


def engine_threads(workers: int = 1) -> int:
    """Threads per worker so that workers × threads never exceeds the cores this process may use."""
    override = os.environ.get(ENGINE_THREADS_ENV)
    if override:
        return max(1, int(override))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def import_mxnet(threads: int):
    """Import MXNet with its OpenMP thread count set first (it is read once, at import)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MXNET_CPU_WORKER_NTHREADS", "1")
    os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
    import mxnet

    return mxnet


def select_context(mx, gpu_acceleration: str, environ: Optional[Mapping[str, str]] = None):
    """mx.cpu() or mx.gpu(0); a GPU request that cannot be met stops the start with the reason.

    Falling back to the CPU needs the user's explicit GGIC_GPU_FALLBACK=cpu (accelerator.gpu_unavailable).
    """
    if gpu_acceleration != "GPU":
        return mx.cpu()
    if not mx.runtime.Features().is_enabled("CUDA"):
        problem = ("GPUAcceleration=GPU, but the installed MXNet was built without CUDA: install a CUDA build of "
                   "MXNet (e.g. mxnet-cu112, or on a Jetson one built for its JetPack) or set GPUAcceleration=CPU")
    elif mx.context.num_gpus() < 1:
        problem = ("GPUAcceleration=GPU, but no CUDA GPU is visible to MXNet on this machine: check the driver and "
                   "CUDA_VISIBLE_DEVICES, or set GPUAcceleration=CPU")
    else:
        return mx.gpu(0)
    gpu_unavailable(problem, environ)  # raises, unless GGIC_GPU_FALLBACK=cpu
    return mx.cpu()


class ClassifierModel:
    """One bound MXNet module at batch 1; `predict` maps a 1×C×H×W tensor to one probability per class."""

    def __init__(self, artifact: ModelArtifact, shape: InputShape, gpu_acceleration: str = "CPU",
                 threads: Optional[int] = None) -> None:
        self.artifact = artifact
        self.shape = shape
        self.threads = threads or engine_threads()
        mx = import_mxnet(self.threads)
        self._mx = mx
        self.context = select_context(mx, gpu_acceleration)
        try:
            symbol, arg_params, aux_params = mx.model.load_checkpoint(
                str(artifact.directory / artifact.prefix), artifact.epoch)
        except Exception as exc:  # MXNetError or a truncated file
            raise ModelArtifactError(f"cannot load {artifact.describe()}: {exc}") from None
        if "data" not in symbol.list_arguments():
            raise ModelArtifactError(f"{artifact.symbol_path.name} has no input named 'data'")
        self._module = mx.mod.Module(symbol=symbol, data_names=["data"], label_names=None, context=self.context)
        try:
            self._module.bind(for_training=False, data_shapes=[("data", self.input_dims)])
            self._module.set_params(arg_params, aux_params, allow_missing=True)
        except Exception as exc:
            raise ModelArtifactError(
                f"cannot bind {artifact.describe()} at input {self.input_dims}: {exc}") from None
        self.num_classes = int(self._module.output_shapes[0][1][-1])
        # Serve straight from the bound executor: `predict` copies the request tensor into its input array once
        # (Module.forward would build a temporary NDArray and copy it again: ~0.3 ms a request on ResNet-18,
        # measured alone), and the Module's own copy of every parameter (`_arg_params`, kept only for get_params
        # and saving) is dropped: the executor holds the weights it computes with, so this frees one
        # parameter-sized copy (the serving worker's RSS: 393 -> 360 MB on ResNet-18, 349 -> 331 MB on
        # EfficientNet-Lite0) and changes no answer.
        self._executor = self._module._exec_group.execs[0]  # MXNet 1.x Module internals (1.9.1 is pinned)
        self._input = self._executor.arg_dict["data"]
        self._module = None
        del arg_params, aux_params
        log.info("model %s bound on %s, input %s (from %s), %d classes, %d engine thread(s)",
                 artifact.describe(), self.context, shape, shape.source, self.num_classes, self.threads)

    @property
    def input_dims(self) -> Tuple[int, int, int, int]:
        return (1, self.shape.channels, self.shape.height, self.shape.width)

    def predict(self, tensor: np.ndarray) -> np.ndarray:
        if tensor.shape != self._input.shape:  # the executor is bound at one input shape
            raise ValueError(f"the input tensor is {tensor.shape}, the model is bound at {self._input.shape}")
        self._input[:] = tensor  # one synchronous copy into the bound input (float32, as the executor's dtype)
        output = self._executor.forward(is_train=False)[0]
        return output.asnumpy()[0].astype(np.float32, copy=False)
