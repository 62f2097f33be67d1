"""The three engines (connector/image_classification/engines.py): which one each platform gets, refusals that name
what is missing, and the ONNX engines answering like MXNet, in process and through the real runtime.

The reference is a direct MXNet forward (bench/material.py `ReferenceModel`, no connector code). "A machine without
MXNet" is this machine with `import mxnet` made to fail: a `sitecustomize` on PYTHONPATH sets
`sys.modules["mxnet"] = None` in every process the test starts (the CLI, the probe); our code runs unchanged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bench.harness import GGICRuntime, connector_entry, ggic  # noqa: E402
from bench.material import ReferenceModel, photos, reference_tensor  # noqa: E402
from connector.image_classification.artifact import locate  # noqa: E402
from connector.image_classification.engines import EngineUnavailableError, choose_engine, engine_class  # noqa: E402
from connector.image_classification.model import InputShape  # noqa: E402

MAX_ABS_DIFF = 1e-5
DIGITS_SHAPE = (3, 28, 28)
IMAGENET_SHAPE = (3, 224, 224)
ALL = {"mxnet", "onnxruntime", "cv2"}


def hiding(tmp_path, *modules: str) -> dict:
    """An environment in which `import <module>` fails in every Python started with it."""
    import os

    shim = tmp_path / "hide-modules"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))


@pytest.mark.parametrize("machine, installed, requested, expected", [
    ("x86_64", ALL, None, "mxnet"),                       # the x86_64 default (docs/engines.md says why)
    ("x86_64", {"onnxruntime", "cv2"}, None, "onnxruntime"),
    ("x86_64", {"cv2"}, None, "opencv"),
    ("x86_64", ALL, "opencv", "opencv"),
    ("aarch64", ALL, None, "onnxruntime"),                # never MXNet on ARM, even where it is installed
    ("aarch64", {"cv2"}, None, "opencv"),
    ("armv7l", {"cv2"}, None, "opencv"),                  # Debian Bookworm armhf: python3-opencv only
    ("armv7l", {"onnxruntime", "cv2"}, None, "onnxruntime"),  # Debian Trixie armhf
    ("arm64", {"mxnet", "cv2"}, None, "opencv"),
    ("riscv64", {"onnxruntime", "cv2"}, None, "onnxruntime"),
])
def test_each_platform_gets_its_engine(machine, installed, requested, expected):
    choice = choose_engine(requested, machine, can_import=installed.__contains__)
    assert choice.name == expected
    assert ("asked for" in choice.reason) == bool(requested)


@pytest.mark.parametrize("machine, installed, requested, message", [
    ("armv7l", ALL, "mxnet", "the mxnet engine does not run on armv7l: PyPI's mxnet wheels for armv7l do not exist"),
    ("aarch64", ALL, "mxnet", "does not run on aarch64: PyPI's mxnet wheels for aarch64 cannot import"),
    ("x86_64", {"onnxruntime", "cv2"}, "mxnet", "its Python module 'mxnet' is not installed here: pip install"),
    ("armv7l", {"cv2"}, "onnxruntime", "apt-get install python3-onnxruntime (Debian Trixie)"),
    ("armv7l", set(), None, "no inference engine is installed for armv7l: install one of onnxruntime"),
    ("x86_64", ALL, "tensorflow", "GGIC_ENGINE='tensorflow' is not an engine: use one of mxnet, onnxruntime, opencv"),
])
def test_an_engine_that_cannot_run_here_is_refused_with_the_reason(machine, installed, requested, message):
    with pytest.raises(EngineUnavailableError) as error:
        choose_engine(requested, machine, can_import=installed.__contains__)
    assert message in str(error.value)


def test_run_with_an_engine_not_installed_here_stops_before_starting(tmp_path):
    env = hiding(tmp_path, "mxnet")
    result = ggic("run", "--state-dir", str(tmp_path / "state"), "--port", "0", "--engine", "mxnet", env=env)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "the mxnet engine was asked for, but its Python module 'mxnet' is not installed here" in stderr, stderr
    assert not (tmp_path / "state" / "runtime.json").exists()
    env["GGIC_ENGINE"] = "tensorflow"
    result = ggic("run", "--state-dir", str(tmp_path / "state"), "--port", "0", env=env)
    assert result.returncode == 1 and "GGIC_ENGINE='tensorflow' is not an engine" in result.stderr.decode()


# --- answers ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def digits_reference(digits_model):
    return ReferenceModel(digits_model, 6, DIGITS_SHAPE)


@pytest.fixture(scope="module")
def imagenet_reference(efficientnet_model):
    return ReferenceModel(efficientnet_model, 0, IMAGENET_SHAPE)


def _worst_against(reference, engine, shape, bodies) -> float:
    worst = 0.0
    for name, body in bodies.items():
        expected = reference.probabilities(body).astype(np.float64)
        got = engine.predict(reference_tensor(body, shape[1], shape[2])).astype(np.float64)
        assert got.shape == expected.shape
        assert got.argmax() == expected.argmax(), f"{name}: top-1 {got.argmax()} != MXNet's {expected.argmax()}"
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


@pytest.mark.parametrize("engine", ["onnxruntime", "opencv"])
def test_the_onnx_engines_answer_like_mxnet_on_real_photos(engine, digits_model, digits_reference,
                                                           efficientnet_model, imagenet_reference, cache):
    bodies = {name: body for name, (_, body) in photos().items()}
    served = engine_class(engine)(locate(digits_model), InputShape(*DIGITS_SHAPE, source="test"), threads=1,
                                  cache_dir=cache)
    assert served.num_classes == 10
    worst = _worst_against(digits_reference, served, DIGITS_SHAPE, bodies)
    assert worst <= MAX_ABS_DIFF, f"digits model: max |dp| {worst:.2e}"
    imagenet = engine_class(engine)(locate(efficientnet_model), InputShape(*IMAGENET_SHAPE, source="test"),
                                    threads=1, cache_dir=cache)
    assert imagenet.num_classes == 1000
    worst = _worst_against(imagenet_reference, imagenet, IMAGENET_SHAPE, bodies)
    assert worst <= MAX_ABS_DIFF, f"EfficientNet-Lite0: max |dp| {worst:.2e}"


def test_the_runtime_serves_with_opencv_when_asked(tmp_path, sdk_env, digits_model, digits_reference):
    import greengrass_machine_learning_sdk as ml

    with GGICRuntime(tmp_path / "state", [connector_entry(digits_model)], run_args=["--engine", "opencv"]) as rt:
        sdk_env(rt)
        client = ml.client("inference")
        for name, (content_type, body) in photos().items():
            response = client.invoke_inference_service(AlgoType="image-classification",
                                                       ServiceName="imageClassification",
                                                       ContentType=content_type, Body=body)
            got = np.array(json.loads(response["Body"].read()), dtype=np.float64)
            expected = digits_reference.probabilities(body)
            assert got.argmax() == expected.argmax() and np.max(np.abs(got - expected)) <= MAX_ABS_DIFF, name
        log = rt.log_of("GG-ML-INF-image-classification-imageClassification")
    assert "inference engine: opencv (asked for)" in log and "cv2.dnn (CPU)" in log


def test_doctor_checks_what_each_engine_needs(tmp_path):
    reports = {}
    for engine in ("onnxruntime", "opencv"):
        result = ggic("doctor", "--json", "--engine", engine)
        reports[engine] = report = json.loads(result.stdout)
        checks = {c["name"]: c for c in report["checks"]}
        assert result.returncode == 0 and report["ok"], [c for c in report["checks"] if c["status"] == "FAIL"]
        assert checks["engine"]["found"] == f"{engine} (asked for)"
        assert "libmxnet.so needs" not in checks and "mxnet" not in checks  # MXNet's libraries only for MXNet
    assert "CPUExecutionProvider" in {c["name"]: c for c in reports["onnxruntime"]["checks"]}["onnxruntime"]["found"]
    assert "cv2.dnn reads ONNX" in {c["name"]: c for c in reports["opencv"]["checks"]}["opencv-dnn"]["found"]

    result = ggic("doctor", "--json", "--engine", "onnxruntime", env=hiding(tmp_path, "onnxruntime"))
    assert result.returncode == 1
    engine = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["engine"]
    assert engine["status"] == "FAIL"
    assert "'onnxruntime' is not installed here: pip install -c install/constraints.txt onnxruntime" in engine["found"]

    result = ggic("doctor", "--json", "--platform", "aarch64-jtx2")  # the Jetson's default, as the worker picks it
    engine = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["engine"]
    assert engine["status"] == "OK" and engine["found"] == "onnxruntime (the aarch64 default)"

    result = ggic("doctor", "--json", "--platform", "armv7l", "--engine", "mxnet")
    engine = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["engine"]
    assert result.returncode == 1 and engine["status"] == "FAIL"
    assert "the mxnet engine does not run on armv7l" in engine["found"]


def test_doctor_advice_names_the_package_of_each_os():
    from connector.devices.doctor import engine_advice

    bookworm = {"ID": "debian", "VERSION_CODENAME": "bookworm", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}
    trixie = {"ID": "debian", "VERSION_CODENAME": "trixie", "PRETTY_NAME": "Debian GNU/Linux 13 (trixie)"}
    assert "has no python3-onnxruntime: use --engine opencv" in engine_advice("onnxruntime", "armv7l", bookworm)
    assert engine_advice("onnxruntime", "armv7l", trixie).startswith("sudo apt-get install python3-onnxruntime")
    assert "apt-get install python3-opencv" in engine_advice("opencv", "armv7l", bookworm)
    assert engine_advice("onnxruntime", "aarch64-jtx2", bookworm).startswith("pip install")
    assert "opencv-python-headless" in engine_advice("opencv", "x86_64", bookworm)
