"""A GPUAcceleration=GPU request that an engine cannot meet: refused with the reason, or served on the CPU when the
user opted in with GGIC_GPU_FALLBACK=cpu. One rule for every engine (MXNet's `model.select_context`, ONNX Runtime,
OpenCV): silently serving a GPU request on the CPU would hide a broken device, and be many times slower."""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

from connector.contract.environment import GPU_FALLBACK_ENV
from connector.image_classification.errors import AcceleratorUnavailableError

log = logging.getLogger(__name__)


def gpu_unavailable(problem: str, environ: Optional[Mapping[str, str]] = None) -> None:
    """Raise AcceleratorUnavailableError with `problem`, or, with GGIC_GPU_FALLBACK=cpu, log it as a warning and
    return (the caller then serves on the CPU)."""
    environ = os.environ if environ is None else environ
    fallback = environ.get(GPU_FALLBACK_ENV, "")
    if fallback not in ("", "cpu"):
        raise AcceleratorUnavailableError(
            f"{GPU_FALLBACK_ENV}={fallback!r} is not understood: set it to 'cpu' (serve on the CPU when no GPU can "
            f"be used) or leave it unset (refuse to start)")
    if fallback == "cpu":
        log.warning("%s; serving on the CPU because %s=cpu", problem, GPU_FALLBACK_ENV)
        return
    raise AcceleratorUnavailableError(f"{problem} ({GPU_FALLBACK_ENV}=cpu falls back to the CPU instead)")
