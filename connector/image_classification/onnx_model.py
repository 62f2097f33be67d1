"""The ONNX Runtime engine (`GGIC_ENGINE=onnxruntime`, `ggic run --engine onnxruntime`; engines.py says where it
is the default).

The same SageMaker artifact is converted once, with MXNet's own exporter, into the model cache (`GGIC_MODEL_CACHE`,
as `artifact.extract_cached` uses), keyed by the artifact's bytes, the input shape and the converter versions; later
starts load the cached file. `OnnxClassifierModel` has `ClassifierModel`'s constructor and `predict` interface
(1xCxHxW float32 in, one float32 probability per class out).

Measured on 2 cores (bench/onnx_engine.py): 1.5-1.7x faster than MXNet on a ResNet-18 and 2.5-4x on
EfficientNet-Lite0 at batch 1, same top-1 and max |dp| <= 2e-6 on real photos (docs/engines.md). Needs the `onnx`
extra (onnx 1.18.0 for the exporter, onnxruntime 1.32.0; both run with numpy 1.23.5). GPUAcceleration=GPU runs on
the CUDA execution provider where the installed onnxruntime has one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from connector.contract.environment import ENGINE_ENV, MODEL_CACHE_ENV
from connector.image_classification.artifact import ModelArtifact
from connector.image_classification.accelerator import gpu_unavailable
from connector.image_classification.errors import EngineUnavailableError, ModelArtifactError
from connector.image_classification.model import InputShape, engine_threads, import_mxnet

log = logging.getLogger(__name__)

# MXNet 1.9.1's exporter has translation tables for opsets 12 and 13 only; the model must declare the opset its
# nodes were written for, not the newest one the installed onnx package knows.
ONNX_OPSET = 13
# Bump when `convert` changes what it writes, so cached conversions are redone.
CONVERTER_VERSION = 1
CONVERT_TIMEOUT_S = 600
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass
class Conversion:
    onnx_path: str
    seconds: float
    onnx_bytes: int
    opset: int
    fixed_gamma: List[str] = field(default_factory=list)  # BatchNorms whose stored gamma != 1 was set to 1


def _is_true(value: Optional[str], default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("true", "1")


def fixed_gamma_batchnorms(symbol) -> List[str]:
    """Names of the BatchNorm nodes that MXNet runs with gamma = 1 whatever the params hold (`fix_gamma`,
    MXNet's default is True)."""
    nodes = json.loads(symbol.tojson())["nodes"]
    return [n["name"] for n in nodes if n["op"] == "BatchNorm"
            and _is_true(n.get("attrs", n.get("attr", {})).get("fix_gamma"), default=True)]


def inference_symbol(mx, symbol, shape: Tuple[int, int, int]):
    """The graph with its `SoftmaxOutput` head replaced by the `softmax` it computes at inference.

    MXNet 1.9.1's opset-13 translation of SoftmaxOutput reads the outputs of all the node's inputs, but the
    exporter never converts the `softmax_label` input (it drops it on purpose), so the export stops with
    `IndexError: list index out of range` in `get_inputs`. At inference SoftmaxOutput (without multi_output) is
    a softmax over the input flattened to (batch, -1), which is exactly this.
    """
    graph = json.loads(symbol.tojson())
    head = graph["nodes"][graph["heads"][0][0]]
    if len(graph["heads"]) != 1 or head["op"] != "SoftmaxOutput":
        return symbol
    attrs = head.get("attrs", head.get("attr", {}))
    if _is_true(attrs.get("multi_output"), default=False):
        raise ModelArtifactError("SoftmaxOutput with multi_output=True is not an image classifier's head")
    data = symbol.get_children()[0]
    _, (out_shape,), _ = data.infer_shape(data=(1, *shape))
    if len(out_shape) != 2:
        data = mx.sym.flatten(data, name=f"{head['name']}_flatten")
    return mx.sym.softmax(data, axis=-1, name=head["name"])


def convert(artifact: ModelArtifact, shape: Tuple[int, int, int], onnx_path: Path, mx=None) -> Conversion:
    """Export the artifact to ONNX with MXNet's own exporter, batch 1, float32 input named `data`.

    MXNet 1.9.1's `mxnet.onnx.export_model` needs four corrections for a SageMaker artifact, each checked by
    tests/test_onnx_engine.py:

    - **SoftmaxOutput** fails to export (see `inference_symbol`); we export the inference softmax instead.
    - **fix_gamma.** MXNet's BatchNorm with `fix_gamma=True` (SageMaker's `bn_data`, and the default) uses
      gamma = 1 and ignores the stored value, but the exporter writes the stored gamma into
      BatchNormalization. Training with weight decay shrinks that unused gamma (the committed digits model has
      bn_data_gamma = 0.9999: exported as is, max |dp| is 2.3e-4), so we set those gammas to 1 first.
    - **weights as inputs.** The exporter also lists every weight among the graph inputs, which ONNX allows
      (an overridable default) but which stops ONNX Runtime from treating them as constants: no constant
      folding, no BatchNorm folded into the convolution (ResNet-18: about 15 ms instead of 9). We keep `data` as the
      only graph input.
    - **opset.** `export_model` translates with MXNet's opset 12/13 tables but declares the newest opset of the
      installed onnx package. We declare 13 and run the ONNX checker against it.
    """
    if mx is None:
        mx = import_mxnet(engine_threads())
    import mxnet.onnx  # noqa: F401  (registers mx.onnx)
    import onnx

    started = time.perf_counter()
    symbol, arg_params, aux_params = mx.model.load_checkpoint(str(artifact.directory / artifact.prefix),
                                                              artifact.epoch)
    fixed = []
    for name in fixed_gamma_batchnorms(symbol):
        gamma = arg_params.get(f"{name}_gamma")
        if gamma is not None and not np.all(gamma.asnumpy() == 1.0):
            fixed.append(name)
        if gamma is not None:
            arg_params[f"{name}_gamma"] = mx.nd.ones(gamma.shape, dtype=gamma.dtype)
    symbol = inference_symbol(mx, symbol, shape)
    params = {**arg_params, **aux_params}
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    mx.onnx.export_model(symbol, params, in_shapes=[(1, *shape)], in_types=[np.float32],
                         onnx_file_path=str(onnx_path))
    model = onnx.load(str(onnx_path))
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(graph_inputs)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = ONNX_OPSET
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return Conversion(str(onnx_path), round(time.perf_counter() - started, 3), onnx_path.stat().st_size,
                      ONNX_OPSET, fixed)


def _cache_key(artifact: ModelArtifact, shape: Tuple[int, int, int]) -> str:
    """From the artifact's bytes, the shape and the converter's versions (read from package metadata: the worker
    serving a cached model never imports MXNet or onnx)."""
    sha = hashlib.sha256(f"{CONVERTER_VERSION} {version('mxnet')} {version('onnx')} {shape}".encode())
    for path in (artifact.symbol_path, artifact.params_path):
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:16]


def cached_onnx(artifact: ModelArtifact, shape: Tuple[int, int, int], cache_dir: Optional[Path]) -> Path:
    """The artifact converted to ONNX, from `<cache_dir>/onnx/` when an earlier start converted it already.

    The conversion runs in a child process: MXNet and the exporter then never occupy the worker's memory, which is
    held against LocalInferenceServiceMemoryLimitKB.
    """
    try:
        key = _cache_key(artifact, shape)
    except PackageNotFoundError as exc:
        raise ModelArtifactError(f"{ENGINE_ENV}=onnxruntime needs the onnx extra: {exc} is not installed") from None
    root = (cache_dir or Path(tempfile.gettempdir()) / f"ggic-model-cache-{os.getuid()}") / "onnx"
    target = root / f"{artifact.prefix}-{key}.onnx"
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
    try:
        done = subprocess.run([sys.executable, "-m", "connector.image_classification.onnx_model",
                               str(artifact.directory),
                               ",".join(map(str, shape)), str(staging / target.name)],
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                  filter(None, [str(Path(__file__).resolve().parents[2]),
                                                os.environ.get("PYTHONPATH")]))))
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise ModelArtifactError(f"cannot convert {artifact.describe()} to ONNX: {reason}")
        conversion = json.loads(done.stdout.strip().splitlines()[-1])
        os.replace(conversion["onnx_path"], target)
    except subprocess.TimeoutExpired:
        raise ModelArtifactError(f"converting {artifact.describe()} to ONNX took over {CONVERT_TIMEOUT_S} s") from None
    finally:
        for leftover in staging.iterdir() if staging.is_dir() else ():
            leftover.unlink()
        if staging.is_dir():
            staging.rmdir()
    log.info("converted %s to ONNX in %.1f s: %s%s", artifact.describe(), conversion["seconds"], target,
             f" (fix_gamma BatchNorms set to gamma 1: {', '.join(conversion['fixed_gamma'])})"
             if conversion["fixed_gamma"] else "")
    return target


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
        if cache_dir is None and os.environ.get(MODEL_CACHE_ENV):
            cache_dir = Path(os.environ[MODEL_CACHE_ENV])
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


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m connector.image_classification.onnx_model MODEL_DIR C,H,W OUT.onnx`: convert, print the Conversion
    as JSON."""
    from connector.image_classification.artifact import locate

    model_dir, shape_text, out = argv if argv is not None else sys.argv[1:]
    shape = tuple(int(part) for part in shape_text.split(","))
    conversion = convert(locate(Path(model_dir)), shape, Path(out))  # type: ignore[arg-type]
    print(json.dumps(asdict(conversion)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
