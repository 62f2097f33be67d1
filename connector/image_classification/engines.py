"""Which inference engine serves the model: chosen per platform by default, or by name (`ggic run --engine`,
`GGIC_ENGINE`).

Three engines share one interface (constructor `(artifact, shape, gpu_acceleration, threads)`, `predict(1xCxHxW
float32) -> one float32 probability per class`):

- `mxnet` (`model.ClassifierModel`): the reference, the SageMaker artifact as MXNet runs it. x86_64 only: PyPI's
  aarch64 wheel cannot import (it needs Arm Performance Libraries it does not ship) and armv7l has no wheel at all.
- `onnxruntime` (`onnx_model.OnnxClassifierModel`): the artifact converted once to ONNX (`cached_onnx`).
- `opencv` (`opencv_model.OpenCvClassifierModel`): the same ONNX file through OpenCV's `cv2.dnn`, which Debian
  ships for armhf where PyPI has no onnxruntime wheel.

The default: ONNX Runtime where it imports, else OpenCV, on every platform; on x86_64 the order comes from
`bench/engines.py` (docs/engines.md). MXNet is never chosen, nor accepted, on ARM.
"""

from __future__ import annotations

import importlib.util
import os
import platform as _platform
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from connector.contract.environment import ENGINE_ENV
from connector.image_classification.errors import EngineUnavailableError

ENGINES = ("mxnet", "onnxruntime", "opencv")
#: the Python module each engine imports
ENGINE_MODULES = {"mxnet": "mxnet", "onnxruntime": "onnxruntime", "opencv": "cv2"}
#: in order of preference, per connector platform (the catalog names of connector.contract / devices.platforms)
PREFERENCE = {
    # bench/engines.py on 2 cores: ONNX Runtime 1.5-4x faster than MXNet per forward, OpenCV in between; answers
    # within 1e-5 of MXNet's on real photos (docs/engines.md). MXNet stays the reference where ONNX Runtime is absent.
    "x86_64": ("mxnet", "onnxruntime", "opencv"),
    "aarch64": ("onnxruntime", "opencv"),
    "armv7l": ("onnxruntime", "opencv"),
}
#: where a platform is none of the three (a riscv64 board, say): the portable engines
OTHER_PREFERENCE = ("onnxruntime", "opencv")

Importable = Callable[[str], bool]


@dataclass(frozen=True)
class EngineChoice:
    name: str
    reason: str  # why this engine: asked for by name, or the platform's default and what was missing

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def importable(module: str) -> bool:
    """Whether `import module` can find it, without importing it (MXNet's import alone takes a second)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def machine_platform_name(machine: Optional[str] = None) -> Optional[str]:
    """The catalog platform of a `uname -m` value, as connector.devices.platforms names it (not imported: the
    connector runs without the device tools)."""
    import struct

    aliases = {"x86_64": "x86_64", "amd64": "x86_64", "armv7l": "armv7l", "armv7": "armv7l", "armv8l": "armv7l",
               "armhf": "armv7l", "aarch64": "aarch64", "arm64": "aarch64"}
    name = aliases.get((machine if machine is not None else _platform.machine()).lower())
    if name == "aarch64" and machine is None and struct.calcsize("P") == 4:
        return "armv7l"  # 32-bit user space on a 64-bit kernel (Raspberry Pi OS 32-bit on a Pi 4)
    return name


def install_hint(engine: str, platform: Optional[str]) -> str:
    """How to get `engine` on `platform`, in one clause."""
    if engine == "mxnet":
        return "pip install -c install/constraints.txt mxnet (x86_64 only)"
    if engine == "onnxruntime":
        if platform == "armv7l":
            return ("PyPI has no armv7l wheel: apt-get install python3-onnxruntime (Debian Trixie) with a venv made "
                    "with --system-site-packages")
        return "pip install -c install/constraints.txt onnxruntime"
    if platform == "armv7l":
        return "apt-get install python3-opencv, with a venv made with --system-site-packages"
    return "pip install -c install/constraints.txt opencv-python-headless"


def mxnet_refusal(platform: str) -> str:
    return (f"the mxnet engine does not run on {platform}: PyPI's mxnet wheels "
            + ("for aarch64 cannot import (they need Arm Performance Libraries they do not ship)" if platform == "aarch64"
               else "for armv7l do not exist (plain `pip install mxnet` picks a 1.6.0 wheel holding an x86-64 library)")
            + ". Use --engine onnxruntime or --engine opencv (or leave --engine unset for this platform's default)")


def choose_engine(requested: Optional[str] = None, machine: Optional[str] = None,
                  can_import: Importable = importable) -> EngineChoice:
    """The engine to serve with: `requested` if it can run here, else refused with why; with none requested, the
    first of the platform's preference that imports. Raises EngineUnavailableError."""
    platform = machine_platform_name(machine)
    where = platform or (machine if machine is not None else _platform.machine())
    if requested:
        if requested not in ENGINES:
            raise EngineUnavailableError(f"{ENGINE_ENV}={requested!r} is not an engine: use one of "
                                         f"{', '.join(ENGINES)} (or leave it unset for this platform's default)")
        if requested == "mxnet" and platform != "x86_64":
            raise EngineUnavailableError(mxnet_refusal(where))
        if not can_import(ENGINE_MODULES[requested]):
            raise EngineUnavailableError(
                f"the {requested} engine was asked for, but its Python module {ENGINE_MODULES[requested]!r} is not "
                f"installed here: {install_hint(requested, platform)}")
        return EngineChoice(requested, "asked for")
    order = PREFERENCE.get(platform or "", OTHER_PREFERENCE)
    missing = []
    for name in order:
        if can_import(ENGINE_MODULES[name]):
            reason = f"the {where} default"
            if missing:
                reason += f"; {', '.join(missing)} not installed"
            return EngineChoice(name, reason)
        missing.append(ENGINE_MODULES[name])
    raise EngineUnavailableError(
        f"no inference engine is installed for {where}: install one of " +
        "; ".join(f"{name} ({install_hint(name, platform)})" for name in order))


def engine_from_environment(environ: Optional[Mapping[str, str]] = None, machine: Optional[str] = None,
                            can_import: Importable = importable) -> EngineChoice:
    """The choice for GGIC_ENGINE (set by `ggic run --engine`), empty meaning the platform's default."""
    environ = os.environ if environ is None else environ
    return choose_engine(environ.get(ENGINE_ENV) or None, machine, can_import)


def engine_class(name: str):
    """The class serving engine `name` (imported only now: each engine's module imports its library)."""
    if name == "mxnet":
        from connector.image_classification.model import ClassifierModel

        return ClassifierModel
    if name == "onnxruntime":
        from connector.image_classification.onnx_model import OnnxClassifierModel

        return OnnxClassifierModel
    if name == "opencv":
        from connector.image_classification.opencv_model import OpenCvClassifierModel

        return OpenCvClassifierModel
    raise EngineUnavailableError(f"{name!r} is not an engine: use one of {', '.join(ENGINES)}")
