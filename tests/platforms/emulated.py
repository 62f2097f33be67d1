"""`make test-platforms`: the connector installed and run for real in emulated ARM Debian devices.

For each platform (arm64 Bookworm → install/nvidiajtx2.sh, armhf Bookworm and Trixie → install/armv7l.sh): the
cached debootstrap root filesystem (tests/platforms/rootfs.py; built when missing) is unpacked into a fresh directory,
/proc, /sys and /dev are mounted into it (private mounts, an ARM /proc/cpuinfo over the host's), and then, as on a
device, each as a bounded step:

1. the platform's install script runs for real from the bare OS: apt from Debian's archive, pip from PyPI, ggic's wheel;
2. `ggic doctor` must pass;
3. `ggic create-connector-definition` with the platform's connector and tests/data/digits-resnet20, `ggic run`;
4. one inference per image through the ML SDK (`eval "$(ggic env)"; python invoke_once.py ...`).

The answers are compared with the x86_64 answer computed on this host by the same runtime with MXNet
(`ggic run --engine mxnet`): max |dp| <= 1e-5 and the same top-1. Every mount is undone and every process inside
killed on the way out, whatever happens (a failing step, a timeout, Ctrl-C, SIGTERM); /proc/mounts is checked
afterwards. Prints a table of step times, writes build/platforms/results.json (and --summary FILE).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import platform as _platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from tests.platforms.rootfs import (PLATFORMS, Mounts, Platform, PlatformError, StepTimeout, build_rootfs,
                                    missing_prerequisites, mounted_under, remove_tree, run_step, tail,
                                    unmount_leftovers)

log = logging.getLogger("test-platforms")

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "platforms"
MODEL = REPO / "tests" / "data" / "digits-resnet20"
# A digit (the model's own kind of image, PNG) and a photograph (JPEG: the decoder differs most between builds)
IMAGES = [REPO / "examples" / "images" / "digit-7.png"]
INVOKE_SCRIPT = Path(__file__).resolve().parent / "invoke_once.py"
TOLERANCE = 1e-5
# Inside the device
GUEST_DIR = "/root/ggic-test"
GUEST_VENV = "/opt/ggic/venv"
GUEST_STATE = "/root/ggic-state"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONNECTOR_NAMES = {"x86_64": "ImageClassificationx86-64", "armv7l": "ImageClassificationARMv7",
                   "aarch64": "ImageClassificationAarch64JTX2"}

# Bounds per step, in seconds (the measured times are in docs/platforms.md; these are several times those).
LIMITS = {
    "rootfs (debootstrap)": 1800,
    "unpack": 300,
    "install script": 1800,
    "install script, second run": 600,
    "install script, repair": 600,
    "ggic doctor": 600,
    "connector definition": 300,
    "ggic run until ready": 900,
    "inference": 600,
    "stop": 120,
}


class Interrupted(BaseException):
    """SIGTERM arrived: unwind (and clean up) as Ctrl-C does."""


@dataclass
class PlatformResult:
    platform: str
    suite: str
    arch: str
    install_script: str
    passed: bool = False
    error: str = ""
    steps: Dict[str, float] = field(default_factory=dict)
    versions: Dict[str, str] = field(default_factory=dict)
    engine: str = ""
    answers: Dict[str, List[float]] = field(default_factory=dict)
    inference_seconds: Dict[str, float] = field(default_factory=dict)
    max_abs_dp: Optional[float] = None
    top1: Dict[str, List[int]] = field(default_factory=dict)  # image -> [this platform's, x86_64's]
    mounts_left: List[str] = field(default_factory=list)
    log: str = ""


def parse_answer(body: str) -> List[float]:
    """The connector's answer `[p0,p1,...]` as floats."""
    text = body.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise PlatformError(f"not the connector's [p0,...] answer: {text[:200]!r}")
    return [float(value) for value in text[1:-1].split(",")]


def compare(answers: Dict[str, List[float]],
            reference: Dict[str, List[float]]) -> Tuple[float, Dict[str, List[int]]]:
    """Largest |dp| over all images, and each image's top-1 here and in the reference."""
    worst = 0.0
    top1 = {}
    for image, probabilities in answers.items():
        expected = reference[image]
        if len(probabilities) != len(expected):
            raise PlatformError(f"{image}: {len(probabilities)} classes, x86_64 answered {len(expected)}")
        worst = max(worst, max(abs(a - b) for a, b in zip(probabilities, expected)))
        top1[image] = [max(range(len(probabilities)), key=probabilities.__getitem__),
                       max(range(len(expected)), key=expected.__getitem__)]
    return worst, top1


def connector_definition(platform_name: str, model_dir: str) -> dict:
    return {"Connectors": [{
        "Id": "ImageClassification",
        "ConnectorArn": f"arn:aws:greengrass:us-west-2::/connectors/{CONNECTOR_NAMES[platform_name]}/versions/2",
        "Parameters": {**({"GPUAcceleration": "CPU"} if platform_name == "aarch64" else {}),
                       "MLModelDestinationPath": model_dir, "MLModelResourceId": "digits",
                       "MLModelSageMakerJobArn": "arn:aws:sagemaker:us-west-2:123456789012:training-job/digits",
                       "LocalInferenceServiceName": "imageClassification",
                       "LocalInferenceServiceTimeoutSeconds": "600",
                       "LocalInferenceServiceMemoryLimitKB": "2000000"}}]}


# --- the guest ---------------------------------------------------------------------------------------------------

# Where this host reaches the internet through a proxy with its own CA (as the build machines do), the device gets
# the host's local CA certificates (ca-certificates adds them to the system bundle) and pip is pointed at that bundle.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
CA_ENV = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def guest_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a login shell on a fresh device (nothing of this host's leaks in but a proxy)."""
    env = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", "USER": "root",
           "DEBIAN_FRONTEND": "noninteractive", "PIP_PROGRESS_BAR": "off", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "GGIC_STATE_DIR": GUEST_STATE, "AWS_EC2_METADATA_DISABLED": "true"}
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", *CA_ENV):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


def in_guest(root: Path, script: str) -> List[str]:
    """argv running `script` (bash) inside the chroot, with a clean environment."""
    return ["chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in guest_env().items()),
            "/bin/bash", "-e", "-o", "pipefail", "-c", script]


class Deadline:
    """Each step gets its own limit, never more than what is left of the platform's overall limit."""

    def __init__(self, total: float) -> None:
        self.end = time.monotonic() + total

    def limit(self, step: str) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise StepTimeout(f"the platform's overall time limit ran out before '{step}'")
        return min(LIMITS[step], left)


@contextlib.contextmanager
def background(argv: Sequence[str], log_file: Path, env: Optional[Dict[str, str]] = None) -> Iterator[subprocess.Popen]:
    """A long-running process (ggic run) in its own process group; SIGINT (Ctrl-C) at the end, SIGKILL if it lingers."""
    out = open(log_file, "ab")
    process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=LIMITS["stop"])
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        out.close()


def log_size(log_file: Path) -> int:
    return log_file.stat().st_size if log_file.exists() else 0


def wait_ready(process: subprocess.Popen, log_file: Path, offset: int, timeout: float, what: str) -> float:
    """Wait for `ggic run`'s "runtime ready" line after `offset` in its log (a bound, not a guess at the time: it
    returns as soon as the line comes)."""
    started = time.monotonic()
    while True:
        with open(log_file, "rb") as handle:
            handle.seek(offset)
            if b"runtime ready" in handle.read():
                return time.monotonic() - started
        if process.poll() is not None:
            raise PlatformError(f"{what}: ggic run exited with {process.returncode} before it was ready:\n"
                                f"{tail(log_file, 40)}")
        if time.monotonic() - started > timeout:
            raise StepTimeout(f"{what}: not ready after {timeout:.0f} s (log: {log_file})")
        time.sleep(0.5)


def shown(argv: Sequence[str]) -> str:
    """A command for the log: for one run inside the device, the script it runs (not the environment)."""
    if argv and argv[0] == "chroot":
        return f"(in the device) {argv[-1]}"
    return " ".join(argv)


def captured(argv: Sequence[str], timeout: float, log_file: Path, what: str,
             env: Optional[Dict[str, str]] = None) -> Tuple[str, float]:
    """Run `argv`, return its stdout (stderr to the log) and the seconds it took."""
    started = time.monotonic()
    with open(log_file, "ab") as err:
        err.write(f"\n### {what}: {shown(argv)}\n".encode())
        err.flush()
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env)
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise StepTimeout(f"{what}: still running after {timeout:.0f} s, killed (log: {log_file})") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        err.write(out)
    if process.returncode != 0:
        raise PlatformError(f"{what}: exit status {process.returncode}:\n{out.decode(errors='replace')[-2000:]}\n"
                            f"{tail(log_file)}")
    return out.decode(), time.monotonic() - started


def guest_files(root: Path, wheel: Path) -> str:
    """Copy what a user brings to the device: ggic's wheel, install/, the model and the images. Returns the wheel's
    path inside."""
    target = root / GUEST_DIR.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, target / wheel.name)
    shutil.copytree(REPO / "install", target / "install", dirs_exist_ok=True)
    shutil.copytree(MODEL, target / "model", dirs_exist_ok=True)
    for image in IMAGES:
        shutil.copy2(image, target / image.name)
    shutil.copy2(INVOKE_SCRIPT, target / INVOKE_SCRIPT.name)
    hosts = root / "etc" / "hosts"
    if not hosts.exists():  # debootstrap writes none; an installed OS has localhost (the IPC endpoint's name)
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    if LOCAL_CAS.is_dir():
        shutil.copytree(LOCAL_CAS, root / LOCAL_CAS.relative_to("/"), dirs_exist_ok=True)
    resolv = root / "etc" / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copy2("/etc/resolv.conf", resolv)
    return f"{GUEST_DIR}/{wheel.name}"


def run_platform(platform: Platform, wheel: Path, reference: Dict[str, List[float]], total_limit: float,
                 keep: bool = False) -> PlatformResult:
    result = PlatformResult(platform.name, platform.suite, platform.arch, platform.install_script)
    log_file = CACHE / f"{platform.name}.log"
    log_file.write_text(f"### {platform.name} {_dt.datetime.now(_dt.timezone.utc).isoformat()}\n")
    result.log = str(log_file.relative_to(REPO))
    deadline = Deadline(total_limit)
    root = CACHE / f"run-{platform.name}" / "root"
    mounts: Optional[Mounts] = None
    doctor_failed = ""
    try:
        tarball = platform.tarball(CACHE)
        if not tarball.exists():
            log.info("%s: building the root filesystem (debootstrap, cached as %s)", platform.name, tarball.name)
            started = time.monotonic()
            build_rootfs(platform, CACHE, log_file, deadline.limit("rootfs (debootstrap)"))
            result.steps["rootfs (debootstrap, once)"] = round(time.monotonic() - started, 1)
        unmount_leftovers(root.parent)
        remove_tree(root.parent)
        root.mkdir(parents=True)
        result.steps["unpack"] = round(run_step(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)],
                                                deadline.limit("unpack"), log_file, "unpack"), 1)
        mounts = Mounts(root)
        mounts.device_mounts(platform.arch)
        guest_wheel = guest_files(root, wheel)
        script = f"{GUEST_DIR}/{platform.install_script}"

        log.info("%s: %s (apt + pip, for real)", platform.name, platform.install_script)
        result.steps["install script"] = round(run_step(
            in_guest(root, f"bash {script} --wheel {guest_wheel}"), deadline.limit("install script"), log_file,
            f"{platform.name}: {platform.install_script}"), 1)
        second, seconds = captured(in_guest(root, f"bash {script} --wheel {guest_wheel}"),
                                   deadline.limit("install script, second run"), log_file,
                                   f"{platform.name}: {platform.install_script}, second run")
        result.steps["install script, second run"] = round(seconds, 1)
        if "nothing to do" not in second or "nothing to install" not in second:
            raise PlatformError(f"the second run of {platform.install_script} did not find everything installed:\n"
                                f"{second[-2000:]}")

        # A package lost from the venv (deleted by hand): the next run puts it back.
        repair, seconds = captured(in_guest(root, f"rm -rf {GUEST_VENV}/lib/python3*/site-packages/paho\n"
                                                  f"bash {script} --wheel {guest_wheel}\n"
                                                  f"{GUEST_VENV}/bin/python -c 'import paho.mqtt.client'"),
                                   deadline.limit("install script, repair"), log_file,
                                   f"{platform.name}: {platform.install_script} after paho was deleted")
        result.steps["install script, repair"] = round(seconds, 1)
        if "reinstalled: paho-mqtt==" not in repair:
            raise PlatformError(f"{platform.install_script} did not repair the deleted paho-mqtt:\n{repair[-2000:]}")

        versions, _ = captured(in_guest(root, f"{GUEST_VENV}/bin/python - <<'EOF'\n{VERSIONS_SCRIPT}\nEOF"), 300,
                               log_file, "versions")
        result.versions = json.loads(versions)
        log.info("%s: ggic doctor", platform.name)
        try:
            _, seconds = captured(in_guest(root, f"{GUEST_VENV}/bin/ggic doctor"), deadline.limit("ggic doctor"),
                                  log_file, f"{platform.name}: ggic doctor")
            result.steps["ggic doctor"] = round(seconds, 1)
        except StepTimeout:
            raise
        except PlatformError as exc:  # a failure, but go on: what the runtime does next tells more
            failures = [line.strip() for line in str(exc).splitlines() if line.startswith("FAIL")]
            doctor_failed = "ggic doctor failed: " + ("; ".join(failures) or str(exc)[:1000])
            log.error("%s: %s", platform.name, exc)

        definition = json.dumps(connector_definition(platform.machine, f"{GUEST_DIR}/model"))
        _, seconds = captured(in_guest(root, f"cat > {GUEST_DIR}/connectors.json <<'EOF'\n{definition}\nEOF\n"
                                             f"{GUEST_VENV}/bin/ggic create-connector-definition --name Device "
                                             f"--initial-version file://{GUEST_DIR}/connectors.json"),
                              deadline.limit("connector definition"), log_file, "connector definition")
        result.steps["connector definition"] = round(seconds, 1)
        log.info("%s: ggic run, then one inference per image through the ML SDK", platform.name)
        offset = log_size(log_file)
        with background(in_guest(root, f"exec {GUEST_VENV}/bin/ggic run --connector-definition Device --port 0"),
                        log_file) as runtime:
            result.steps["ggic run until ready"] = round(
                wait_ready(runtime, log_file, offset, deadline.limit("ggic run until ready"), platform.name), 1)
            images = " ".join(f"{GUEST_DIR}/{image.name}" for image in IMAGES)
            out, seconds = captured(in_guest(root, f'eval "$({GUEST_VENV}/bin/ggic env)"\n'
                                                   f"exec {GUEST_VENV}/bin/python {GUEST_DIR}/invoke_once.py {images}"),
                                    deadline.limit("inference"), log_file, f"{platform.name}: inference")
            result.steps["inference (ML SDK)"] = round(seconds, 1)
        result.engine = engine_from_logs(log_file, root / GUEST_STATE.lstrip("/"))
        answers = json.loads(out)
        for image in IMAGES:
            answer = answers[f"{GUEST_DIR}/{image.name}"]
            result.answers[image.name] = parse_answer(answer["body"])
            result.inference_seconds[image.name] = answer["seconds"]
        worst, result.top1 = compare(result.answers, reference)
        result.max_abs_dp = worst
        problems = [doctor_failed] if doctor_failed else []
        problems += [f"max |dp| {worst:.2e} > {TOLERANCE:.0e}"] if worst > TOLERANCE else []
        problems += [f"{image}: top-1 {here} here, {there} on x86_64"
                     for image, (here, there) in result.top1.items() if here != there]
        if problems:
            raise PlatformError("; ".join(problems))
        result.passed = True
    except (PlatformError, OSError, subprocess.SubprocessError, json.JSONDecodeError, KeyError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if doctor_failed and doctor_failed not in result.error:
            result.error = f"{doctor_failed}; then {result.error}"
        log.error("%s failed: %s", platform.name, result.error)
    finally:
        if mounts is not None:
            result.mounts_left = mounts.close()
        result.mounts_left = sorted(set(result.mounts_left) | set(mounted_under(root.parent)))
        if result.mounts_left:
            result.passed = False
            result.error = (result.error + "; " if result.error else "") + f"still mounted: {result.mounts_left}"
        elif not keep:
            remove_tree(root.parent)
    return result


VERSIONS_SCRIPT = """
import importlib, json, platform, sys
found = {"python": platform.python_version(), "machine": platform.machine()}
for module in ("numpy", "cv2", "onnxruntime", "ggic"):
    try:
        if module == "ggic":
            import importlib.metadata as m
            found[module] = m.version("ggic")
        else:
            found[module] = importlib.import_module(module).__version__
    except Exception as exc:
        found[module] = "absent (%s)" % type(exc).__name__
print(json.dumps(found))
"""


def engine_from_logs(*places: Path) -> str:
    """Which engine served, as the worker's log says ("model ... on ONNX Runtime ...", "... on OpenCV ... cv2.dnn",
    MXNet's "model ... bound on cpu(0)"): `places` are log files or directories of them."""
    texts = []
    for place in places:
        files = sorted(place.rglob("*.log")) + sorted(place.rglob("*.txt")) if place.is_dir() else [place]
        texts += [f.read_text(errors="replace") for f in files if f.is_file()]
    text = "\n".join(texts)
    for needle, name in ((" on ONNX Runtime", "onnxruntime"), (" on OpenCV", "opencv"), (" bound on cpu", "mxnet"),
                         (" bound on gpu", "mxnet")):
        if needle in text:
            return name
    return "unknown"


# --- the host (x86_64) -------------------------------------------------------------------------------------------

def host_reference(python: Path, log_file: Path) -> Tuple[Dict[str, List[float]], Dict[str, float]]:
    """The x86_64 answer for each image: the same runtime on this host with MXNet, asked through the ML SDK."""
    bin_dir = python.parent
    times = {}
    with tempfile.TemporaryDirectory(prefix="ggic-x86-reference-") as tmp:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("AWS_", "GGIC_", "VIRTUAL_ENV", "PYTHON"))}
        env.update(GGIC_STATE_DIR=f"{tmp}/state", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull, PATH=f"{bin_dir}:{env.get('PATH', '')}")
        definition = Path(tmp) / "connectors.json"
        definition.write_text(json.dumps(connector_definition("x86_64", str(MODEL))))
        captured([str(bin_dir / "ggic"), "create-connector-definition", "--name", "Host",
                  "--initial-version", f"file://{definition}"], 120, log_file, "x86_64: connector definition", env)
        offset = log_size(log_file)
        with background([str(bin_dir / "ggic"), "run", "--connector-definition", "Host", "--port", "0",
                         "--engine", "mxnet"], log_file, env) as runtime:
            times["ggic run until ready"] = round(wait_ready(runtime, log_file, offset, 300, "x86_64"), 1)
            out, seconds = captured(["bash", "-e", "-c", f'eval "$({bin_dir}/ggic env)"\n'
                                     f"exec {python} {INVOKE_SCRIPT} {' '.join(str(i) for i in IMAGES)}"],
                                    120, log_file, "x86_64: inference", env)
            times["inference (ML SDK)"] = round(seconds, 1)
    answers = json.loads(out)
    return {Path(path).name: parse_answer(answer["body"]) for path, answer in answers.items()}, times


def find_or_build_wheel(given: Optional[Path], python: Path, log_file: Path) -> Path:
    """--wheel, else a wheel built now from this tree (never a stale one), as `make wheel` builds it."""
    if given:
        return given.resolve()
    out = CACHE / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    run_step([str(python), "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(REPO)],
             600, log_file, "build ggic's wheel")
    return next(out.glob("ggic-*.whl"))


def summary_table(results: Sequence[PlatformResult], reference_steps: Dict[str, float]) -> str:
    steps: List[str] = []
    for result in results:
        steps += [s for s in result.steps if s not in steps]
    header = ["step"] + [r.platform for r in results]
    rows = [[step] + [f"{r.steps[step]:.1f} s" if step in r.steps else "-" for r in results] for step in steps]
    rows.append(["engine"] + [r.engine or "-" for r in results])
    rows.append(["Python / numpy / cv2 / onnxruntime"] + [
        " / ".join(r.versions.get(k, "-").split(" ")[0] for k in ("python", "numpy", "cv2", "onnxruntime"))
        for r in results])
    rows.append(["largest Δp vs x86_64 MXNet"] + [f"{r.max_abs_dp:.1e}" if r.max_abs_dp is not None else "-"
                                                 for r in results])
    rows.append(["top-1 (here, x86_64)"] + [", ".join(f"{i}: {a}/{b}" for i, (a, b) in r.top1.items()) or "-"
                                             for r in results])
    rows.append(["result"] + ["PASS" if r.passed else "FAIL" for r in results])
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"
             for row in [header] + rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    reference = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in reference_steps.items())
    return "\n".join(lines) + f"\n\nx86_64 reference (MXNet, this host): {reference}\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    global MODEL
    parser = argparse.ArgumentParser(prog="make test-platforms", description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                        help="run only this platform (repeatable; default: all)")
    parser.add_argument("--wheel", type=Path, help="ggic's wheel (default: build/dist/ggic-*.whl, else built now)")
    parser.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python",
                        help="the host Python with ggic and MXNet, for the x86_64 reference and the wheel")
    parser.add_argument("--limit", type=float, default=1800, help="seconds per platform, all steps (default 1800)")
    parser.add_argument("--keep", action="store_true", help="keep each unpacked root filesystem (unmounted)")
    parser.add_argument("--summary", type=Path, help="also write the results' JSON here (e.g. docs/...)")
    parser.add_argument("--model", type=Path, help=f"another SageMaker model folder (default: {MODEL.relative_to(REPO)})")
    parser.add_argument("--image", type=Path, action="append", default=[],
                        help="another image to classify (repeatable; default: a PNG digit and a JPEG photograph)")
    args = parser.parse_args(argv)
    if args.model:
        MODEL = args.model.resolve()
    if args.image:
        IMAGES[:] = [image.resolve() for image in args.image]
    else:
        with contextlib.suppress(ImportError, AssertionError, KeyError):
            from bench.material import photo_files

            IMAGES.append(photo_files()["grace_hopper"][1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, _raise_interrupted)

    platforms = [PLATFORMS[name] for name in (args.platform or sorted(PLATFORMS))]
    problems = sorted({problem for p in platforms for problem in missing_prerequisites(p)})
    if problems:
        print("make test-platforms cannot run here: " + "; ".join(problems), file=sys.stderr)
        return 2
    CACHE.mkdir(parents=True, exist_ok=True)
    host_log = CACHE / "x86_64.log"
    host_log.write_text("")
    started = time.monotonic()
    results: List[PlatformResult] = []
    try:
        wheel = find_or_build_wheel(args.wheel, args.python, host_log)
        log.info("wheel: %s", wheel.name)
        reference, reference_steps = host_reference(args.python, host_log)
        log.info("x86_64 reference (MXNet) ready: %s", reference_steps)
        for platform in platforms:  # one at a time: each emulation takes the machine's cores
            results.append(run_platform(platform, wheel, reference, args.limit, args.keep))
    except PlatformError as exc:  # before any platform: the wheel or the x86_64 reference
        print(f"make test-platforms: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("interrupted: every mount was undone" if not mounted_under(CACHE) else
              f"interrupted; STILL MOUNTED: {mounted_under(CACHE)}", file=sys.stderr)
        return 130
    left = mounted_under(CACHE)
    table = summary_table(results, reference_steps)
    print("\n" + table)
    for result in results:
        if result.error:
            print(f"{result.platform}: {result.error}\n  (log: {result.log})")
    print(f"mounts left under {CACHE}: {left or 'none'}; total {time.monotonic() - started:.0f} s")
    report = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "host": {"machine": _platform.machine(), "cpus": os.cpu_count(), "reference": reference_steps},
              "tolerance": TOLERANCE, "wheel": wheel.name, "mounts_left": left,
              "platforms": [asdict(result) for result in results]}
    (CACHE / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.summary:
        for result in report["platforms"]:
            result.pop("answers")
        args.summary.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if results and all(r.passed for r in results) and not left else 1


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
