"""Writing and reading the three-file artifact that a SageMaker image-classification training job produces.

A job's ``model.tar.gz`` holds, flat, ``image-classification-symbol.json``, one ``image-classification-NNNN.params``
(an MXNet ``save_checkpoint`` pair, NNNN the 1-based epoch) and ``model-shapes.json``.  Every builder here goes
through `write_artifact` so the layout is produced in one place, and `load_module` loads it the way the connector
does, so a builder can check its own output.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import tarfile
from pathlib import Path
from typing import Mapping, Sequence

import mxnet as mx
import numpy as np

logger = logging.getLogger(__name__)

PREFIX = "image-classification"
SYMBOL_FILE = f"{PREFIX}-symbol.json"
SHAPES_FILE = "model-shapes.json"
_PARAMS_RE = re.compile(rf"^{re.escape(PREFIX)}-(\d{{4}})\.params$")


class ArtifactError(Exception):
    """A model directory does not hold a usable image-classification artifact."""


def params_file(epoch: int) -> str:
    """File name of the params for `epoch` (four digits, zero padded, as MXNet writes it)."""
    return f"{PREFIX}-{epoch:04d}.params"


def write_artifact(dest_dir: str | Path, symbol: mx.sym.Symbol, arg_params: Mapping[str, mx.nd.NDArray],
                   aux_params: Mapping[str, mx.nd.NDArray], epoch: int,
                   image_shape: Sequence[int]) -> Path:
    """Write symbol, params and model-shapes.json into `dest_dir`; return the directory.

    Older ``image-classification-*.params`` files in the directory are removed: a loader picks the highest
    epoch, so a stale file from an earlier run would silently win.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    keep = params_file(epoch)
    for stale in dest.iterdir():
        if _PARAMS_RE.match(stale.name) and stale.name != keep:
            logger.info("removing stale %s", stale)
            stale.unlink()
    mx.model.save_checkpoint(str(dest / PREFIX), epoch, symbol, dict(arg_params), dict(aux_params))
    channels, height, width = (int(v) for v in image_shape)
    shapes = [{"shape": [1, channels, height, width], "name": "data"}]
    (dest / SHAPES_FILE).write_text(json.dumps(shapes))
    logger.info("wrote %s, %s and %s to %s", SYMBOL_FILE, keep, SHAPES_FILE, dest)
    return dest


def artifact_files(model_dir: str | Path) -> tuple[Path, Path, Path]:
    """Return (symbol, params, shapes) paths; the params file is the highest-numbered one."""
    directory = Path(model_dir)
    symbol = directory / SYMBOL_FILE
    shapes = directory / SHAPES_FILE
    params = sorted(p for p in directory.iterdir() if _PARAMS_RE.match(p.name)) if directory.is_dir() else []
    if not symbol.is_file() or not shapes.is_file() or not params:
        raise ArtifactError(f"{directory} does not contain {SYMBOL_FILE}, {SHAPES_FILE} and a "
                            f"{PREFIX}-NNNN.params file")
    return symbol, params[-1], shapes


def write_tarball(model_dir: str | Path, tar_path: str | Path) -> Path:
    """Pack the artifact's three files into a flat model.tar.gz, byte-for-byte reproducible.

    Fixed mtimes and owners (in the tar headers and the gzip header) keep a committed tarball from changing
    when it is rebuilt from the same files.
    """
    members = artifact_files(model_dir)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in members:
            info = tarfile.TarInfo(path.name)
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    target = Path(tar_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out, gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    logger.info("wrote %s", target)
    return target


def load_module(model_dir: str | Path) -> mx.mod.Module:
    """Load the artifact as the connector does: batch-1 inference Module, missing softmax_label allowed."""
    symbol_path, params_path, shapes_path = artifact_files(model_dir)
    shape = json.loads(shapes_path.read_text())[0]["shape"]
    symbol = mx.sym.load(str(symbol_path))
    saved = mx.nd.load(str(params_path))
    arg_params = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux_params = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    module = mx.mod.Module(symbol, data_names=("data",), label_names=None, context=mx.cpu())
    module.bind(for_training=False, data_shapes=[("data", (1, *shape[1:]))])
    module.set_params(arg_params, aux_params, allow_missing=True)
    return module


def predict(module: mx.mod.Module, batch: np.ndarray) -> np.ndarray:
    """Class probabilities (``softmax_output``) for one NCHW float32 batch."""
    module.forward(mx.io.DataBatch([mx.nd.array(batch)]), is_train=False)
    return module.get_outputs()[0].asnumpy()
