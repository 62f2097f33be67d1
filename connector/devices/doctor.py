"""`ggic doctor`: is this device ready to run the connector, and if not, what exactly to do.

It checks what the chosen engine needs (`--engine`, else the platform's default, as the worker chooses it:
connector/image_classification/engines.py): ONNX Runtime importable and its execution providers, OpenCV with
`cv2.dnn`, or, only where MXNet is the engine, MXNet and its shared libraries below.

The connector documentation's troubleshooting section lists, per platform, the system libraries the connector needs
with the minimum *symbol version* of each (e.g. libstdc++.so.6 with GLIBCXX_3.4.21). A library provides a version
exactly when its ELF `.gnu.version_d` defines that node, which is what the dynamic linker checks at load time, so we
read the libraries' version definitions (connector/devices/elf.py) instead of trusting package names. The tables described
the MXNet that AWS bundled with the connector; ours uses the MXNet installed on the device, so we also check what
*its* `libmxnet.so` needs (`DT_NEEDED` and `.gnu.version_r`), then import MXNet, OpenCV and numpy in a child process
(a broken native library can crash the importer) and look for the GPU.

Each check gives one line: OK, WARN or FAIL, what was found, and for WARN/FAIL what to do. Any FAIL makes the exit
status non-zero.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from connector.devices.elf import ElfError, ElfInfo, newest_of_family, read_elf, version_key
from connector.devices.platforms import DOCTOR_NAMES, machine_platform

log = logging.getLogger(__name__)

OK, WARN, FAIL = "OK", "WARN", "FAIL"

#: The pins of install/constraints.txt that matter on a device (a test keeps them equal to that file).
PINNED = {"mxnet": "1.9.1", "numpy": "1.23.5", "opencv-python-headless": "4.10.0.84"}
#: MXNet 1.9.1 uses numpy aliases (np.bool, ...) removed in numpy 1.24.
NUMPY_LIMIT = (1, 24)
#: numpy 1.23.5 ships wheels for CPython 3.8 to 3.11 only.
PYTHON_RANGE = ((3, 8), (3, 11))

PLATFORMS = ("x86_64", "armv7l", "aarch64-jtx2")
_ELF_MACHINE = {"x86_64": "x86_64", "armv7l": "arm", "aarch64-jtx2": "aarch64"}
_TRIPLETS = {"x86_64": "x86_64-linux-gnu", "armv7l": "arm-linux-gnueabihf", "aarch64-jtx2": "aarch64-linux-gnu"}


@dataclass(frozen=True)
class Library:
    """One row of the documentation's "Required system libraries" tables."""

    soname: str
    versions: Tuple[str, ...]
    package: str  # what provides it on Debian/Ubuntu, for the advice
    note: str = ""
    #: a CUDA library: any version of the soname will do, and without it only GPUAcceleration=GPU is lost
    cuda: bool = False
    #: documented for AWS's bundled MXNet; only a FAIL when the installed MXNet links it too
    only_if_mxnet_needs: bool = False


_LIBC = "libc6"
_CUDA_NOTE = "JetPack's CUDA (sudo apt-get install nvidia-jetpack, or flash JetPack with SDK Manager)"
_GFORTRAN_NOTE = ("the PyPI mxnet 1.9.1 wheel for x86_64 bundles its own copy; elsewhere libgfortran3 (Debian <= 9, "
                  "Ubuntu <= 18.04) or an MXNet built against the distribution's libgfortran5")

#: The connector documentation's tables. Where the documentation is wrong we say so in `note`.
REQUIREMENTS: Dict[str, Tuple[Library, ...]] = {
    "aarch64-jtx2": (
        Library("ld-linux-aarch64.so.1", ("GLIBC_2.17",), _LIBC),
        Library("libc.so.6", ("GLIBC_2.17",), _LIBC),
        Library("libcublas.so.9.0", (), _CUDA_NOTE, cuda=True),
        Library("libcudart.so.9.0", (), _CUDA_NOTE, cuda=True),
        Library("libcudnn.so.7", (), _CUDA_NOTE, cuda=True),
        Library("libcufft.so.9.0", (), _CUDA_NOTE, cuda=True),
        Library("libcurand.so.9.0", (), _CUDA_NOTE, cuda=True),
        Library("libcusolver.so.9.0", (), _CUDA_NOTE, cuda=True),
        Library("libgcc_s.so.1", ("GCC_4.2.0",), "libgcc-s1 (libgcc1 on older releases)"),
        Library("libgomp.so.1", ("GOMP_4.0", "OMP_1.0"), "libgomp1"),
        Library("libm.so.6", ("GLIBC_2.23",), _LIBC),
        Library("libpthread.so.0", ("GLIBC_2.17",), _LIBC),
        Library("librt.so.1", ("GLIBC_2.17",), _LIBC),
        Library("libstdc++.so.6", ("GLIBCXX_3.4.21", "CXXABI_1.3.8"), "libstdc++6"),
    ),
    "x86_64": (
        # The documentation lists GCC_4.0.0 for ld-linux-x86-64.so.2, which defines only GLIBC_* nodes on every
        # glibc; GCC_4.0.0 is libgcc_s.so.1's (as in the ARMv7 table), so it is checked there.
        Library("ld-linux-x86-64.so.2", ("GLIBC_2.2.5",), _LIBC,
                note="documented as GCC_4.0.0, a libgcc_s.so.1 version; checked there"),
        Library("libc.so.6", ("GLIBC_2.4",), _LIBC),
        Library("libgcc_s.so.1", ("GCC_4.0.0",), "libgcc-s1 (libgcc1 on older releases)"),
        Library("libgfortran.so.3", ("GFORTRAN_1.0",), _GFORTRAN_NOTE, only_if_mxnet_needs=True),
        Library("libm.so.6", ("GLIBC_2.23",), _LIBC),
        Library("libpthread.so.0", ("GLIBC_2.2.5",), _LIBC),
        Library("librt.so.1", ("GLIBC_2.2.5",), _LIBC),
        Library("libstdc++.so.6", ("CXXABI_1.3.8", "GLIBCXX_3.4.21"), "libstdc++6"),
    ),
    "armv7l": (
        Library("ld-linux-armhf.so.3", ("GLIBC_2.4",), _LIBC),
        Library("libc.so.6", ("GLIBC_2.7",), _LIBC),
        Library("libgcc_s.so.1", ("GCC_4.0.0",), "libgcc-s1 (libgcc1 on older releases)"),
        Library("libgfortran.so.3", ("GFORTRAN_1.0",), _GFORTRAN_NOTE, only_if_mxnet_needs=True),
        Library("libm.so.6", ("GLIBC_2.4",), _LIBC),
        Library("libpthread.so.0", ("GLIBC_2.4",), _LIBC),
        Library("librt.so.1", ("GLIBC_2.4",), _LIBC),
        Library("libstdc++.so.6", ("CXXABI_1.3.8", "CXXABI_ARM_1.3.3", "GLIBCXX_3.4.20"), "libstdc++6"),
    ),
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    found: str
    advice: str = ""


@dataclass(frozen=True)
class Report:
    platform: str
    machine: str
    checks: Tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    def counts(self) -> Dict[str, int]:
        return {status: sum(c.status == status for c in self.checks) for status in (OK, WARN, FAIL)}

    def to_json(self) -> dict:
        return {"platform": self.platform, "machine": self.machine, "ok": self.ok, "counts": self.counts(),
                "checks": [asdict(check) for check in self.checks]}


# --- finding libraries ------------------------------------------------------------------------------------

def mxnet_package_dir() -> Optional[Path]:
    """Where the installed mxnet package lives, found without importing it (the wheel bundles libraries there)."""
    try:
        spec = importlib.util.find_spec("mxnet")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _ldconfig_cache() -> Dict[str, List[Path]]:
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                 if os.access(p, os.X_OK)), None)
    if ldconfig is None:
        return {}
    try:
        output = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    cache: Dict[str, List[Path]] = {}
    for line in output.splitlines():
        match = re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)$", line)
        if match:
            cache.setdefault(match.group(1), []).append(Path(match.group(3)))
    return cache


class LibraryFinder:
    """Finds a shared library the way a person would check: ldconfig's cache, then the usual directories.

    With explicit `directories` only those are searched (how tests simulate a device lacking a library, and how a
    user checks a sysroot). Only objects of the target platform's ELF machine count.
    """

    def __init__(self, platform: str, directories: Optional[Sequence[Path]] = None) -> None:
        self.machine = _ELF_MACHINE[platform]
        self.explicit = directories is not None
        if directories is not None:
            self.cache: Dict[str, List[Path]] = {}
            self.directories = [Path(d) for d in directories]
            return
        self.cache = _ldconfig_cache()
        triplet = _TRIPLETS[platform]
        dirs = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
                 "/usr/local/lib", "/usr/local/cuda/lib64", f"/usr/lib/{triplet}/tegra"]
        self.directories = [Path(d) for d in dirs]

    def _candidates(self, soname: str, extra: Sequence[Path]) -> List[Path]:
        found = list(self.cache.get(soname, []))
        found += [d / soname for d in list(extra) + self.directories]
        return found

    def find(self, soname: str, extra: Sequence[Path] = ()) -> Tuple[Optional[ElfInfo], List[str]]:
        """The first readable ELF object of our machine named `soname`; also what else was seen, for messages."""
        seen: List[str] = []
        for path in self._candidates(soname, extra):
            if not path.is_file():
                continue
            try:
                info = read_elf(path)
            except ElfError as exc:
                seen.append(str(exc))
                continue
            if info.machine == self.machine:
                return info, seen
            seen.append(f"{path} is built for {info.machine}")
        return None, seen

    def find_any_version(self, soname: str) -> Optional[Path]:
        """`libcudart.so.9.0` -> any `libcudart.so.*`: CUDA's major version follows the installed JetPack."""
        stem = soname.split(".so", 1)[0] + ".so"
        candidates = [path for name in sorted(self.cache) if name.startswith(stem + ".") for path in self.cache[name]]
        for directory in self.directories:
            candidates += [Path(p) for p in sorted(glob.glob(str(directory / f"{stem}.*")))]
        for path in candidates:
            try:
                if path.is_file() and read_elf(path).machine == self.machine:
                    return path
            except ElfError:
                continue
        return None


# --- the checks -------------------------------------------------------------------------------------------

def _os_name(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        for line in os_release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown OS"


def check_platform(platform: str, machine: str) -> Check:
    here = machine_platform(machine)
    here_name = DOCTOR_NAMES.get(here) if here else None
    found = f"checking for {platform}; this machine is {machine} ({_os_name()})"
    if here_name == platform:
        return Check("platform", OK, found)
    if here is None:
        return Check("platform", FAIL, found, f"no ML Image Classification connector exists for {machine}: use an "
                                              f"x86_64, armv7l or aarch64 (Jetson TX2) device")
    return Check("platform", FAIL, found, f"the {platform} connector cannot run on this {machine} machine: run "
                                          f"`ggic doctor` on the {platform} device, or `--platform {here_name}` here")


def _versions_text(info: ElfInfo, wanted: Sequence[str]) -> str:
    families = dict.fromkeys(version_key(v)[0] for v in wanted)
    newest = [newest_of_family(info.version_definitions, family) for family in families]
    return ", ".join(n for n in newest if n) or "no versions of those families"


def check_library(requirement: Library, finder: LibraryFinder, mxnet_needs: Optional[Tuple[str, ...]],
                  platform: str) -> Check:
    name = requirement.soname
    wanted = ", ".join(requirement.versions) or "any version"
    if requirement.cuda:
        path = finder.find_any_version(name)
        if path is None:
            return Check(name, WARN, "not found (CUDA library)",
                         f"needed only for GPUAcceleration=GPU: install {requirement.package}; the documented "
                         f"{name} was the CUDA 9 of JetPack 3, any CUDA that your MXNet build uses will do")
        return Check(name, OK, f"{path} (documented: {name})")
    info, seen = finder.find(name)
    soft = requirement.only_if_mxnet_needs and mxnet_needs is not None and name not in mxnet_needs
    if info is None:
        where = "; ".join(seen) if seen else ("in " + ", ".join(map(str, finder.directories)) if finder.explicit
                                              else "via ldconfig or the usual library directories")
        advice = f"install {requirement.package} ({wanted} or newer)"
        if soft:
            return Check(name, WARN, f"not found ({where}); the installed MXNet does not link it",
                         f"only AWS's bundled MXNet needed it; {advice} if you replace MXNet with such a build")
        return Check(name, FAIL, f"not found ({where})", advice)
    missing = [v for v in requirement.versions if not info.defines(v)]
    note = f" [{requirement.note}]" if requirement.note else ""
    if missing:
        newest = _versions_text(info, missing)
        return Check(name, FAIL, f"{info.path} lacks {', '.join(missing)} (newest: {newest}){note}",
                     f"this {name} is too old: upgrade {requirement.package} so that it defines {wanted}; "
                     f"if the distribution has none that new, the {platform} connector needs a newer OS release")
    return Check(name, OK, f"{info.path} defines {wanted} (newest: {_versions_text(info, requirement.versions)})"
                           f"{note}")


def check_mxnet_libraries(finder: LibraryFinder, package_dir: Optional[Path]) -> Tuple[Check, Optional[Tuple[str, ...]]]:
    """What the installed libmxnet.so itself links, found and with every symbol version it requires."""
    name = "libmxnet.so needs"
    library = package_dir / "libmxnet.so" if package_dir else None
    if library is None or not library.is_file():
        return Check(name, WARN, "not checked: MXNet is not installed", "see the mxnet check"), None
    try:
        info = read_elf(library)
    except ElfError as exc:
        return Check(name, FAIL, str(exc), "reinstall MXNet: pip install -c install/constraints.txt mxnet"), None
    if info.machine != finder.machine:
        return (Check(name, FAIL, f"{library} is built for {info.machine}, not {finder.machine}",
                      "install the MXNet build for this device's platform"), info.needed)
    problems = []
    requirements = 0
    for needed in info.needed:
        found, _ = finder.find(needed, extra=[package_dir])
        if found is None:
            problems.append(f"{needed} not found")
            continue
        for version in info.version_requirements.get(needed, ()):
            requirements += 1
            if not found.defines(version):
                problems.append(f"{found.path} lacks {version}")
    if problems:
        return (Check(name, FAIL, f"{library}: " + "; ".join(problems),
                      "install or upgrade the system libraries named (see the table rows above), or an MXNet "
                      "built for this OS release"), info.needed)
    return (Check(name, OK, f"{library}: {len(info.needed)} libraries found, {requirements} symbol versions "
                            f"defined"), info.needed)


_PROBE = r"""
import json, sys
out = {"python": list(sys.version_info[:3]), "executable": sys.executable}
def attempt(key, body):
    try:
        out[key] = body()
    except BaseException as exc:
        out[key] = {"error": "%s: %s" % (type(exc).__name__, exc)}
def numpy_info():
    import numpy
    return {"version": numpy.__version__}
def cv2_info():
    import cv2
    dnn = getattr(cv2, "dnn", None)
    return {"version": cv2.__version__, "dnn_onnx": hasattr(dnn, "readNetFromONNX")}
def onnxruntime_info():
    import onnxruntime
    return {"version": onnxruntime.__version__, "providers": list(onnxruntime.get_available_providers())}
def mxnet_info():
    import mxnet as mx
    features = mx.runtime.Features()
    enabled = sorted(name for name, feature in features.items() if feature.enabled)
    gpus = None
    if features.is_enabled("CUDA"):
        try:
            gpus = mx.context.num_gpus()
        except Exception as exc:
            gpus = "error: %s" % exc
    return {"version": mx.__version__, "features": enabled, "gpus": gpus}
attempt("numpy", numpy_info)
attempt("cv2", cv2_info)
attempt("onnxruntime", onnxruntime_info)
if "mxnet" in sys.argv[1:]:
    attempt("mxnet", mxnet_info)
print(json.dumps(out))
"""


def probe_python(python: str = sys.executable, timeout: float = 180.0, mxnet: bool = True) -> dict:
    """Import numpy, OpenCV, ONNX Runtime and (when it is the engine) MXNet in a child Python: a missing native
    library can abort the importer."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MXNET_SUBGRAPH_VERBOSE="0")
    try:
        result = subprocess.run([python, "-c", _PROBE] + (["mxnet"] if mxnet else []), capture_output=True,
                                text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"importing numpy, OpenCV, ONNX Runtime and MXNet took more than {timeout:.0f} s"}
    except OSError as exc:
        return {"error": f"cannot run {python}: {exc}"}
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        reason = (f"killed by signal {-result.returncode}" if result.returncode < 0
                  else f"exit status {result.returncode}")
        tail = result.stderr.strip().splitlines()[-1:] or [""]
        return {"error": f"the import probe died ({reason}) {tail[0]}".strip()}
    return json.loads(lines[-1])


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_python(probe: dict, engine: str = "mxnet") -> Check:
    version = tuple(probe.get("python") or sys.version_info[:3])
    text = ".".join(map(str, version))
    low, high = PYTHON_RANGE
    found = f"Python {text} ({probe.get('executable', sys.executable)})"
    if engine != "mxnet" and version[:2] >= low:
        return Check("python", OK, found)  # numpy 1.23.5's range binds MXNet only (Trixie: Python 3.13, numpy 2)
    if version[:2] < low or version[:2] > high:
        return Check("python", FAIL if version[:2] < low else WARN, found,
                     f"use Python {low[0]}.{low[1]} to {high[0]}.{high[1]}: numpy {PINNED['numpy']} (which MXNet "
                     f"{PINNED['mxnet']} needs) has no wheels for other versions")
    return Check("python", OK, found)


def check_numpy(probe: dict, engine: str = "mxnet") -> Check:
    info = probe.get("numpy", probe)
    if "error" in info:
        return Check("numpy", FAIL, f"import failed: {info['error']}",
                     f"pip install -c install/constraints.txt numpy=={PINNED['numpy']} (on armv7l, where PyPI has "
                     f"no numpy wheel: apt-get install python3-numpy and a venv made with --system-site-packages)")
    version = info["version"]
    if engine != "mxnet":  # ONNX Runtime and cv2.dnn take numpy 1 or 2 (Debian Trixie ships 2.2)
        return Check("numpy", OK, f"numpy {version} (the {engine} engine takes numpy 1 or 2)")
    if _version_tuple(version)[:2] >= NUMPY_LIMIT:
        return Check("numpy", FAIL, f"numpy {version}",
                     f"MXNet {PINNED['mxnet']} breaks with numpy >= 1.24: pip install numpy=={PINNED['numpy']}")
    if version != PINNED["numpy"]:
        return Check("numpy", WARN, f"numpy {version}, pinned {PINNED['numpy']}",
                     f"tested with {PINNED['numpy']}: pip install -c install/constraints.txt numpy")
    return Check("numpy", OK, f"numpy {version} (the pin)")


def check_opencv(probe: dict) -> Check:
    info = probe.get("cv2", probe)
    if "error" in info:
        return Check("opencv", FAIL, f"import cv2 failed: {info['error']}",
                     "pip install -c install/constraints.txt opencv-python-headless (on armv7l without a wheel: "
                     "apt-get install python3-opencv and create the venv with --system-site-packages)")
    pinned = PINNED["opencv-python-headless"]
    if _version_tuple(info["version"]) != _version_tuple(pinned):
        return Check("opencv", WARN, f"OpenCV {info['version']}, pinned {pinned}",
                     "decoding was tested with the pinned build: pip install -c install/constraints.txt "
                     "opencv-python-headless")
    return Check("opencv", OK, f"OpenCV {info['version']}")


def check_mxnet(probe: dict, platform: str) -> List[Check]:
    info = probe.get("mxnet", probe)
    if "error" in info:
        advice = "pip install -c install/constraints.txt mxnet"
        if platform != "x86_64":
            script = "armv7l.sh" if platform == "armv7l" else "nvidiajtx2.sh"
            advice = (f"PyPI has mxnet {PINNED['mxnet']} wheels for x86_64 and (CPU-only) aarch64 only: install "
                      f"your own build with install/{script} --mxnet-wheel PATH")
        return [Check("mxnet", FAIL, f"import failed: {info['error']}", advice)]
    version, features = info["version"], info["features"]
    cuda = "CUDA" in features
    build = "CUDA build" if cuda else "CPU build"
    checks = []
    if version != PINNED["mxnet"]:
        checks.append(Check("mxnet", WARN, f"MXNet {version} ({build}), pinned {PINNED['mxnet']}",
                            f"the connector was tested with MXNet {PINNED['mxnet']}"))
    else:
        checks.append(Check("mxnet", OK, f"MXNet {version} ({build}; {', '.join(features)})"))
    gpus = info.get("gpus")
    if platform != "aarch64-jtx2":
        checks.append(Check("mxnet-gpu", OK, f"{build}; the {platform} connector runs on the CPU"))
    elif not cuda:
        checks.append(Check("mxnet-gpu", WARN, "MXNet has no CUDA: GPUAcceleration=GPU will refuse to start "
                                               "(GPUAcceleration=CPU works)",
                            "install an MXNet built with CUDA for this JetPack: install/nvidiajtx2.sh "
                            "--mxnet-wheel PATH"))
    elif not isinstance(gpus, int) or gpus < 1:
        checks.append(Check("mxnet-gpu", WARN, f"CUDA build, but MXNet sees no GPU ({gpus})",
                            "check the CUDA driver (JetPack) and CUDA_VISIBLE_DEVICES"))
    else:
        checks.append(Check("mxnet-gpu", OK, f"CUDA build, {gpus} GPU(s): GPUAcceleration=GPU uses gpu(0)"))
    return checks


def os_release(path: Path = Path("/etc/os-release")) -> Dict[str, str]:
    """/etc/os-release as a dict (ID, VERSION_CODENAME, ...): which packages the advice can name."""
    fields: Dict[str, str] = {}
    try:
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                fields[name.strip()] = value.strip().strip('"')
    except OSError:
        pass
    return fields


#: Debian releases without python3-onnxruntime (it arrived in Trixie)
_NO_DEBIAN_ONNXRUNTIME = ("buster", "bullseye", "bookworm")


def engine_advice(engine: str, platform: str, release: Dict[str, str]) -> str:
    """How to install what `engine` needs on this platform and OS release, in one sentence."""
    codename = release.get("VERSION_CODENAME", "")
    os_name = release.get("PRETTY_NAME", "this OS")
    if engine == "mxnet":
        return "pip install -c install/constraints.txt mxnet (MXNet runs on x86_64 only)"
    if engine == "onnxruntime":
        if platform == "armv7l":
            if codename in _NO_DEBIAN_ONNXRUNTIME:
                return (f"PyPI has no armv7l onnxruntime wheel and {os_name} has no python3-onnxruntime: use "
                        f"--engine opencv (sudo apt-get install python3-opencv), or Debian Trixie, which has "
                        f"python3-onnxruntime")
            return ("sudo apt-get install python3-onnxruntime (Debian Trixie or later), with a venv made with "
                    "--system-site-packages (PyPI has no armv7l wheel)")
        extra = " (PyPI's aarch64 wheels need glibc >= 2.28)" if platform == "aarch64-jtx2" else ""
        return f"pip install -c install/constraints.txt onnxruntime{extra}"
    if platform == "armv7l":
        return ("sudo apt-get install python3-opencv (Debian Bookworm: OpenCV 4.6 with cv2.dnn), with a venv made "
                "with --system-site-packages (PyPI has no armv7l wheel)")
    return "pip install -c install/constraints.txt opencv-python-headless"


def catalog_platform(platform: str) -> str:
    """`aarch64-jtx2` -> `aarch64`: the doctor's platform names as the engine choice takes them."""
    return {doctor: catalog for catalog, doctor in DOCTOR_NAMES.items()}[platform]


def check_engine(requested: Optional[str], platform: str) -> Tuple[Check, Optional[str]]:
    """The engine the connector would serve with here (`requested`, or the platform's default), as the worker
    chooses it; or FAIL with why."""
    from connector.image_classification.engines import EngineUnavailableError, choose_engine

    try:
        choice = choose_engine(requested, catalog_platform(platform))
    except EngineUnavailableError as exc:
        advice = ("leave --engine unset, or pick one this platform runs" if requested else
                  "install one engine; see docs/engines.md")
        return Check("engine", FAIL, str(exc), advice), None
    return Check("engine", OK, str(choice)), choice.name


def check_onnxruntime(probe: dict, platform: str, release: Dict[str, str]) -> List[Check]:
    info = probe.get("onnxruntime", probe)
    if "error" in info:
        return [Check("onnxruntime", FAIL, f"import onnxruntime failed: {info['error']}",
                      engine_advice("onnxruntime", platform, release))]
    providers = info.get("providers", [])
    checks = [Check("onnxruntime", OK, f"ONNX Runtime {info['version']}, providers {', '.join(providers)}")]
    cuda = "CUDAExecutionProvider" in providers
    if platform == "aarch64-jtx2" and not cuda:
        checks.append(Check("onnxruntime-gpu", WARN, "no CUDAExecutionProvider: GPUAcceleration=GPU will refuse "
                                                     "to start (GPUAcceleration=CPU works)",
                            "install NVIDIA's onnxruntime-gpu wheel for this JetPack (install/nvidiajtx2.sh)"))
    elif cuda:
        checks.append(Check("onnxruntime-gpu", OK, "CUDAExecutionProvider: GPUAcceleration=GPU runs on it"))
    return checks


def check_opencv_dnn(probe: dict, platform: str, release: Dict[str, str]) -> Check:
    info = probe.get("cv2", probe)
    if "error" in info:
        return Check("opencv-dnn", FAIL, f"import cv2 failed: {info['error']}",
                     engine_advice("opencv", platform, release))
    if not info.get("dnn_onnx"):
        return Check("opencv-dnn", FAIL, f"OpenCV {info['version']} has no cv2.dnn.readNetFromONNX",
                     f"install an OpenCV built with its dnn module: {engine_advice('opencv', platform, release)}")
    return Check("opencv-dnn", OK, f"OpenCV {info['version']} cv2.dnn reads ONNX")


def detect_gpus() -> Dict[str, object]:
    """What this machine shows of NVIDIA GPUs: nvidia-smi, device nodes, and a Jetson's L4T release."""
    found: Dict[str, object] = {}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            found["nvidia-smi"] = [line for line in result.stdout.splitlines() if line.strip()] or \
                [f"nvidia-smi failed: {result.stderr.strip()[:200]}"]
        except (OSError, subprocess.SubprocessError) as exc:
            found["nvidia-smi"] = [f"nvidia-smi failed: {exc}"]
    nodes = sorted(glob.glob("/dev/nvidia[0-9]*")) + sorted(glob.glob("/dev/nvhost-ctrl-gpu"))
    if nodes:
        found["devices"] = nodes
    for path, key in (("/etc/nv_tegra_release", "l4t"), ("/proc/device-tree/model", "model")):
        try:
            text = Path(path).read_text(errors="replace").replace("\0", "").strip()
        except OSError:
            continue
        if text:
            found[key] = text.splitlines()[0][:120]
    return found


def check_gpu(platform: str, gpus: Dict[str, object]) -> List[Check]:
    listed = gpus.get("nvidia-smi") or gpus.get("devices") or []
    summary = "; ".join(map(str, listed)) if listed else "no NVIDIA GPU found (nvidia-smi, /dev/nvidia*)"
    if platform != "aarch64-jtx2":
        return [Check("gpu", OK, f"{summary} (not used: the {platform} connector runs on the CPU)")]
    checks = []
    if "l4t" in gpus:
        checks.append(Check("jetson", OK, f"{gpus['l4t']} ({gpus.get('model', 'model unknown')})"))
    else:
        checks.append(Check("jetson", WARN, f"not a Jetson: no /etc/nv_tegra_release ({gpus.get('model', 'model unknown')})",
                            "the JTX2 connector runs CPU-only here; GPUAcceleration=GPU needs a Jetson with "
                            "JetPack (L4T) and its CUDA"))
    if "devices" in gpus or "nvidia-smi" in gpus:
        checks.append(Check("gpu", OK, summary))
    else:
        checks.append(Check("gpu", WARN, summary, "GPUAcceleration=GPU will refuse to start; install JetPack's "
                                                  "GPU driver, or set GPUAcceleration=CPU"))
    return checks


def run_doctor(platform: Optional[str] = None, library_path: Optional[Sequence[Path]] = None,
               machine: Optional[str] = None, engine: Optional[str] = None) -> Report:
    """All checks for `platform` (default: this machine's) and the engine the connector would use there (`engine`,
    as `ggic run --engine`, or the platform's default), in the order a person would fix them. MXNet's libraries
    are checked only where MXNet is the engine."""
    machine = machine or _platform.machine()
    here = machine_platform(machine)
    platform = platform or (DOCTOR_NAMES[here] if here else "x86_64")
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: choose one of {', '.join(PLATFORMS)}")
    release = os_release()
    checks: List[Check] = [check_platform(platform, machine)]
    engine_check, chosen = check_engine(engine, platform)
    checks.append(engine_check)
    finder = LibraryFinder(platform, library_path)
    package_dir = mxnet_package_dir() if chosen == "mxnet" else None
    mxnet_needs: Optional[Tuple[str, ...]] = None
    mxnet_check = None
    if chosen == "mxnet":
        mxnet_check, mxnet_needs = check_mxnet_libraries(finder, package_dir)
    if package_dir is not None:
        finder.directories.append(package_dir)  # the wheel's bundled libraries (libgfortran.so.3 on x86_64)
    checks += [check_library(requirement, finder, mxnet_needs, platform) for requirement in REQUIREMENTS[platform]
               if chosen == "mxnet" or not requirement.only_if_mxnet_needs]  # libgfortran: MXNet's alone
    if mxnet_check is not None:
        checks.append(mxnet_check)
    probe = probe_python(mxnet=chosen == "mxnet")
    checks.append(check_python(probe, chosen or "mxnet"))
    if chosen == "mxnet":
        checks += check_mxnet(probe, platform)
    elif chosen == "onnxruntime":
        checks += check_onnxruntime(probe, platform, release)
    elif chosen == "opencv":
        checks.append(check_opencv_dnn(probe, platform, release))
    checks.append(check_numpy(probe, chosen or "mxnet"))
    checks.append(check_opencv(probe))
    checks += check_gpu(platform, detect_gpus())
    for check in checks:
        log.debug("%s %s: %s", check.status, check.name, check.found)
    return Report(platform=platform, machine=machine, checks=tuple(checks))


def format_report(report: Report) -> str:
    width = max(len(check.name) for check in report.checks)
    lines = []
    for check in report.checks:
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.found}")
        if check.advice and check.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  -> {check.advice}")
    counts = report.counts()
    verdict = "ready" if report.ok else "NOT ready"
    lines.append(f"{report.platform}: {verdict} ({counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL)")
    return "\n".join(lines)
