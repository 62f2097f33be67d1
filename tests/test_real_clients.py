"""Real clients, unmodified: the SDK releases users' Lambdas bundle, on the Pythons those Lambdas run on.

One `ggic run` hosts the image classification connector (a real ImageNet model), the ML Feedback connector (S3 on a
real moto_server) and user Lambdas, each on its own interpreter:

- greengrasssdk 1.3.0 ... 1.6.1 (from PyPI, build/clients/) x Python 2.7 and 3.7 to 3.13: a Lambda of each pair
  does `lambda` invoke (RequestResponse, Event, a failing target) and `iot-data` publish through subscriptions,
  hosted with `--lambda PATH@pythonX.Y` and as a plain process with `ggic env`;
- the connector documentation's Python 2.7 and Python 3.7 usage examples, hosted and as plain processes, each on
  its Python with numpy bundled: their answers equal a direct MXNet forward;
- the calls the AWS ML SDK makes on our core-side facade (positional message, base64 context as bytes), and the
  same requests through our ML SDK, for inference and feedback, on every Python.

A Python this machine lacks is skipped with the reason (pyenv has them all here).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from bench.harness import GGICRuntime, connector_entry, ggic
from bench.material import REPO, ReferenceModel, as_jpeg, photo_files
from client_packages import PYTHONS, SDK_VERSIONS, interpreter, numpy_dir, sdk_dir
from sagemaker_jobs import aws_env, client

LAMBDAS = REPO / "tests" / "lambdas"
REGION = "us-west-2"
ACCOUNT = "000000000000"  # ggic run's account
BUCKET = "ggic-real-clients"
MAX_REQUEST_BYTES = 4_000_000  # the runtime's body cap (the photos are well under it)
OVERSIZED_BYTES = 8 << 20      # a body over it, larger than the sockets buffer
OVER_THE_LIMIT = f"request body of {OVERSIZED_BYTES + 3} bytes exceeds the runtime's limit of {MAX_REQUEST_BYTES} bytes"
CALL_TIMEOUT_S = 120.0  # bounds one client's calls; they take well under a second each once the model is loaded
CELLS = [(sdk, python) for python in PYTHONS for sdk in SDK_VERSIONS]
USAGE_EXAMPLES = {"python2.7": "image_classification_lambda_py27", "python3.7": "image_classification_lambda"}


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def cell_name(sdk: str, python: str) -> str:
    return f"sdk_{sdk.replace('.', '_')}_py{python[len('python'):].replace('.', '')}"


def needs(runtime: str):
    """The interpreter of `runtime`; the test is skipped, with the reason, where this machine has none."""
    found = interpreter(runtime)
    if isinstance(found, str):
        pytest.skip(found)
    return found


def bundle(directory: Path, *packages: Path) -> None:
    """A Lambda's deployment package: its code's folder, with the packages it bundles beside the code."""
    for package in packages:
        if not package.is_dir():
            pytest.fail(f"{package} is missing: `make clients` installs the client packages (make test does)")
        (directory / package.name).symlink_to(package, target_is_directory=True)


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Dict[str, Tuple[Path, str]]:
    """Every Lambda's folder and runtime, by function name: the greengrasssdk cells and the usage examples."""
    root = tmp_path_factory.mktemp("lambdas")
    folders = {}
    for sdk, python in CELLS:
        if isinstance(interpreter(python), str):
            continue
        name = cell_name(sdk, python)
        folder = root / name
        folder.mkdir()
        shutil.copy(LAMBDAS / "sdk_client.py", folder / f"{name}.py")
        bundled = [sdk_dir(sdk) / "greengrasssdk"]
        if sdk == SDK_VERSIONS[-1]:  # these also bundle an ML SDK, which wins over the core's fallback copy
            bundled.append(REPO / "ml_sdk" / "greengrass_machine_learning_sdk")
        bundle(folder, *bundled)
        folders[name] = (folder, python)
    for python, example in USAGE_EXAMPLES.items():
        if isinstance(interpreter(python), str):
            continue
        folder = root / example
        folder.mkdir()
        shutil.copy(REPO / "examples" / f"{example}.py", folder)
        bundle(folder, numpy_dir(python) / "numpy")
        folders[example] = (folder, python)
    return folders


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    png = folder / "coffee.png"
    shutil.copy(photo_files()["coffee"][1], png)
    jpeg = folder / "test.jpg"
    jpeg.write_bytes(as_jpeg(png))
    return {"png": png, "jpeg": jpeg}


@pytest.fixture(scope="module")
def reference(efficientnet_model):
    return ReferenceModel(efficientnet_model, 0, (3, 224, 224))


def s3(endpoint: str):
    return client("s3", endpoint)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, efficientnet_model, moto_endpoint, packages, images):
    s3(moto_endpoint).create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    state = tmp_path_factory.mktemp("state")
    recorder_file = state.parent / f"{state.name}-published.jsonl"
    feedback = {"Id": "Feedback", "ConnectorArn": f"arn:aws:greengrass:{REGION}::/connectors/MLFeedback/versions/1",
                "Parameters": {"FeedbackConfigurationMap": json.dumps(
                    {"All": {"s3-bucket-name": BUCKET, "content-type": "image/png", "s3-prefix": "clients"}})}}
    # A queued request waits out the model's load: the hosted examples call as soon as they are imported.
    classifier = connector_entry(efficientnet_model, LocalInferenceServiceTimeoutSeconds="120")
    lambdas = [str(LAMBDAS / "echo.py"), str(LAMBDAS / "recorder.py"), "tests.lambdas.failing"]
    subscriptions = []
    for name, (folder, python) in packages.items():
        if name in USAGE_EXAMPLES.values():  # a runtime may also be an interpreter's path
            lambdas.append(f"{folder / name}.py@{interpreter(python).path}")
            continue
        # The oldest release's cells name their handler: PATH.py:handler@RUNTIME.
        handler = ":function_handler" if name.startswith(cell_name(SDK_VERSIONS[0], "")) else ""
        lambdas.append(f"{folder / name}.py{handler}@{python}")
        for source, how in ((name, "hosted"), (f"plain_{name}", "plain")):
            subscriptions.append({"Id": f"{name}-{how}", "Source": function_arn(source),
                                  "Subject": f"clients/{name}/{how}", "Target": function_arn("recorder")})
    rt = GGICRuntime(state, [classifier, feedback], lambdas=lambdas, subscriptions=subscriptions,
                     run_args=["--max-request-bytes", str(MAX_REQUEST_BYTES)],
                     extra_env=dict(aws_env(moto_endpoint), TEST_IMAGE=str(images["jpeg"]),
                                    RECORDER_FILE=str(recorder_file), PYTHONDONTWRITEBYTECODE="1"))
    rt.recorder_file = recorder_file
    with rt:
        yield rt


def published(runtime: GGICRuntime, source: str, subject: str, timeout: float = CALL_TIMEOUT_S) -> List[dict]:
    """What the recorder Lambda received on `subject` from `source` (waits for the first one)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = runtime.recorder_file.read_text().splitlines() if runtime.recorder_file.exists() else []
        found = [record for record in map(json.loads, lines)
                 if record["subject"] == subject and record["source"] == function_arn(source)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def run_plain(python: str, args: List[str], env: Dict[str, str], cwd: Path) -> dict:
    """A plain process on `python` acting as a Lambda; its stdout is JSON."""
    result = subprocess.run([needs(python).path, *args], env=env, cwd=cwd, capture_output=True,
                            timeout=CALL_TIMEOUT_S)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def plain_env(runtime: GGICRuntime, function_name: str) -> Dict[str, str]:
    """`ggic env` (the core-side modules on PYTHONPATH), as the function `function_name`."""
    return dict(runtime.client_env, MY_FUNCTION_ARN=function_arn(function_name), PYTHONUNBUFFERED="1")


def invoke(name: str, event: dict) -> dict:
    """Invoke a hosted Lambda through the runtime's IPC (this process acts as a Lambda: `sdk_env`); its answer."""
    from greengrass_ipc_python_sdk.ipc_client import IPCClient

    client = IPCClient(timeout=CALL_TIMEOUT_S)
    invocation = client.post_work(function_arn(name), json.dumps(event), None)
    result = client.get_work_result(function_arn(name), invocation)
    assert result.func_err == "", result.payload
    return json.loads(result.payload)


# --- greengrasssdk, every release x every Python --------------------------------------------------------------

def check_sdk_cell(runtime: GGICRuntime, packages, answer: dict, sdk: str, python: str, source: str, subject: str,
                   number: int) -> None:
    name = cell_name(sdk, python)
    folder = str(packages[name][0])
    assert answer["python"].startswith(python[len("python"):] + ".")
    assert answer["sdk"] == sdk and answer["sdk_file"].startswith(folder)  # the release the Lambda bundles
    # The newest release's cells also bundle an ML SDK, which wins over the core's fallback copy.
    expected_ml_sdk = folder if sdk == SDK_VERSIONS[-1] else str(runtime.state_dir / "lambda-site")
    assert answer["ml_sdk_file"].startswith(expected_ml_sdk), answer["ml_sdk_file"]
    # Hosted on another Python, nothing of the runtime's own PYTHONPATH; a plain process has ggic env's.
    assert answer["pythonpath"] == (None if source == name else runtime.client_env["PYTHONPATH"])
    assert answer["echo_error"] == ""
    assert answer["echo"]["event"] == {"n": number}
    assert answer["echo"]["custom"] == {"cell": name}  # the client context arrived
    assert answer["echo"]["invoked_function_arn"] == function_arn("echo")
    assert answer["event"] == {"payload": "", "error": ""}
    assert answer["failed"]["error"] == "Handled"
    assert answer["failed"]["payload"] == {"errorMessage": f"this handler always fails: {{'n': {number}}}",
                                           "errorType": "ValueError"}
    [record] = published(runtime, source, subject)
    assert record["event"] == {"n": number, "cell": name}
    for system_function in ("GGShadowService", "GGSecretManager"):  # services this core does not run
        [raised] = [text for text in answer["unserved"].values() if text and system_function in text]
        assert raised.startswith("InvocationException: Failed to invoke function due to ") and "not deployed" in raised


@pytest.mark.parametrize("sdk, python", CELLS)
def test_greengrasssdk_hosted_lambda(runtime, packages, sdk_env, sdk, python):
    needs(python)
    sdk_env(runtime)
    name = cell_name(sdk, python)
    subject = f"clients/{name}/hosted"
    answer = invoke(name, {"cell": name, "n": 11, "topic": subject})
    check_sdk_cell(runtime, packages, answer, sdk, python, name, subject, 11)
    assert f"initialized on Python {python[len('python'):]}." in runtime.log_of(name)
    [status] = [entry for entry in runtime.health()["functions"] if entry["function_arn"] == function_arn(name)]
    assert status["runtime"] == python  # what /health and `ggic status` report


@pytest.mark.parametrize("sdk, python", CELLS)
def test_greengrasssdk_plain_process(runtime, packages, sdk, python):
    needs(python)
    name = cell_name(sdk, python)
    subject = f"clients/{name}/plain"
    folder = packages[name][0]
    answer = run_plain(python, [str(folder / f"{name}.py"), json.dumps({"cell": name, "n": 22, "topic": subject})],
                       plain_env(runtime, f"plain_{name}"), folder)
    check_sdk_cell(runtime, packages, answer, sdk, python, f"plain_{name}", subject, 22)


def test_ggic_status_shows_each_functions_runtime(runtime, packages):
    shown = ggic("status", "--state-dir", str(runtime.state_dir)).stdout.decode()
    for name, (_, python) in packages.items():
        assert re.search(rf"^{name}: .*\n  process \d+ \({re.escape(python)}\) ", shown, re.MULTILINE), shown
    assert re.search(r"^echo: .*\n  process \d+ \(python3\.\d+ \(ggic's own\)\) ", shown, re.MULTILINE), shown


# --- the connector documentation's usage examples -----------------------------------------------------------

def predictions_in(line: str) -> np.ndarray:
    text = line.split("predictions: ", 1)[1].strip()
    assert text.startswith("[") and text.endswith("]")
    return np.array(text[1:-1].split(","), dtype=np.float32)


def check_predictions(served: np.ndarray, reference: ReferenceModel, images) -> None:
    direct = reference.probabilities(images["jpeg"].read_bytes()).astype(np.float32)
    assert served.shape == direct.shape == (1000,)
    assert float(np.abs(served - direct).max()) <= 1e-6
    assert int(served.argmax()) == 967  # espresso


@pytest.mark.parametrize("python", sorted(USAGE_EXAMPLES))
def test_usage_example_hosted_on_its_python(runtime, reference, images, python):
    needs(python)
    example = USAGE_EXAMPLES[python]
    deadline = time.monotonic() + CALL_TIMEOUT_S
    line = ""
    while not line and time.monotonic() < deadline:
        log = runtime.log_of(example)
        line = next((entry for entry in log.splitlines() if "predictions: [" in entry), "")
        time.sleep(0.2)
    assert line, f"the usage example logged no predictions:\n{runtime.log_of(example)}"
    assert f"initialized on Python {python[len('python'):]}." in runtime.log_of(example)
    check_predictions(predictions_in(line), reference, images)


@pytest.mark.parametrize("python", sorted(USAGE_EXAMPLES))
def test_usage_example_as_a_plain_process(runtime, packages, reference, images, python):
    """Logging configured as a core would, then the module imported: it calls at once and every second after."""
    interpreter_ = needs(python)
    example = USAGE_EXAMPLES[python]
    process = subprocess.Popen(
        [interpreter_.path, "-c", "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, "
                                  f"format='%(message)s'); import {example}"],
        env=dict(plain_env(runtime, f"plain_{example}"), TEST_IMAGE=str(images["jpeg"])), cwd=packages[example][0],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killer = threading.Timer(CALL_TIMEOUT_S, process.kill)
    killer.start()
    seen = []
    try:
        for raw in process.stdout:
            seen.append(raw.decode(errors="replace"))
            if "predictions: [" in seen[-1]:
                break
    finally:
        killer.cancel()
        process.kill()
        process.wait()
    assert seen and "predictions: [" in seen[-1], "".join(seen)
    check_predictions(predictions_in(seen[-1]), reference, images)


# --- the AWS ML SDK's calls on the facade, and our ML SDK, for inference and feedback --------------------------

def uploaded_metadata(moto_endpoint: str, marker: str, timeout: float = CALL_TIMEOUT_S) -> dict:
    """The S3 metadata of the sample the feedback connector uploaded with metadata marker=`marker`."""
    client = s3(moto_endpoint)
    deadline = time.monotonic() + timeout
    while True:
        for listed in client.list_objects_v2(Bucket=BUCKET, Prefix="clients/").get("Contents", []):
            metadata = client.head_object(Bucket=BUCKET, Key=listed["Key"])["Metadata"]
            if metadata.get("marker") == marker:
                return metadata
        assert time.monotonic() < deadline, f"no sample with marker {marker} in s3://{BUCKET}/clients/"
        time.sleep(0.2)


def ml_request(images, python: str, via: str) -> dict:
    return {"service": "imageClassification", "png": str(images["png"]), "jpeg": str(images["jpeg"]),
            "config_id": "All", "prediction": [0.25, 0.75], "oversized_bytes": OVERSIZED_BYTES,
            "metadata": {"marker": f"{via}-{python}-{uuid.uuid4().hex[:8]}"}}


def check_inference(outcome: dict, reference: ReferenceModel, images) -> None:
    for key, image in (("png", "png"), ("jpeg_from_file", "jpeg")):
        assert outcome[key]["ContentType"] == "application/json", outcome[key]
        served = np.array(outcome[key]["Body"][1:-1].split(","), dtype=np.float32)
        direct = reference.probabilities(images[image].read_bytes()).astype(np.float32)
        assert float(np.abs(served - direct).max()) <= 1e-6


@pytest.mark.parametrize("python", PYTHONS)
def test_aws_ml_sdk_calls_on_the_facade(runtime, moto_endpoint, reference, images, python):
    request = ml_request(images, python, "facade")
    outcome = run_plain(python, [str(LAMBDAS / "ml_calls.py"), "facade", json.dumps(request)],
                        plain_env(runtime, "plain_facade"), LAMBDAS)
    assert outcome["interface"] == [1, 5]
    check_inference(outcome, reference, images)  # ContentType (from the client context) reached the connector
    refused = outcome["refused"]["error_response"]
    assert refused["fields"] == ["context", "payload"] and refused["context"] == ""
    assert "does not start with any known image signature" in json.loads(refused["payload"])["errorMessage"]
    assert outcome["refused"]["output_fields"] == ["response", "error_response"]
    assert outcome["unreachable"]["exception"] == "GreengrassRuntimeException"
    assert "noSuchService" in outcome["unreachable"]["message"]
    # a body over the cap: the runtime's refusal naming the limit, as an error response (which the AWS ML SDK
    # raises as its GreengrassInferenceException), not a closed connection (issue 16, finding 6)
    oversized = json.loads(outcome["oversized"]["error_response"]["payload"])
    assert oversized["errorType"] == "RequestTooLargeError" and OVER_THE_LIMIT in oversized["errorMessage"]
    assert outcome["feedback"] == {"accepted": True}
    assert "NoSuchConfig" in outcome["feedback_refused"]["error_response"]["payload"]
    # ConfigId, ModelPrediction and Metadata arrived in the client context: the sample is in S3 with the metadata.
    assert uploaded_metadata(moto_endpoint, request["metadata"]["marker"])["marker"] == request["metadata"]["marker"]


@pytest.mark.parametrize("python", PYTHONS)
def test_our_ml_sdk_on_every_python(runtime, moto_endpoint, reference, images, python):
    request = ml_request(images, python, "ml-sdk")
    outcome = run_plain(python, [str(LAMBDAS / "ml_calls.py"), "ml_sdk", json.dumps(request)],
                        plain_env(runtime, "plain_ml_sdk"), LAMBDAS)
    assert "/lambda-site/" in outcome["sdk_file"]  # the core's copy: this plain process bundles none
    check_inference(outcome, reference, images)
    assert outcome["refused"]["exception"] == "GreengrassInferenceException"
    assert "does not start with any known image signature" in outcome["refused"]["message"]
    assert outcome["unreachable"]["exception"] == "GreengrassDependencyException"
    assert outcome["oversized"]["exception"] == "GreengrassInferenceException", outcome["oversized"]
    assert OVER_THE_LIMIT in outcome["oversized"]["message"], outcome["oversized"]
    assert outcome["feedback"] == {"accepted": True}
    assert outcome["feedback_refused"]["exception"] == "GreengrassFeedbackException"
    assert "NoSuchConfig" in outcome["feedback_refused"]["message"]
    uploaded_metadata(moto_endpoint, request["metadata"]["marker"])


# --- choosing a Lambda's runtime --------------------------------------------------------------------------------

@pytest.mark.parametrize("runtime_name, message", [
    ("python3.6", "runtime python3.6 is not supported: Lambdas here run on python2.7, or python3.7 and newer"),
    ("nodejs12.x", "runtime 'nodejs12.x' is not supported"),
    ("python3.99", "runtime python3.99: no Python 3.99 interpreter found on PATH or in"),
    ("/no/such/python", "runtime /no/such/python: no executable file /no/such/python"),
])
def test_a_runtime_that_cannot_run_is_refused_before_anything_starts(tmp_path, runtime_name, message):
    result = ggic("run", "--state-dir", str(tmp_path), "--port", "0",
                  "--lambda", f"{LAMBDAS / 'echo.py'}@{runtime_name}", timeout=60)
    assert result.returncode == 1
    assert message in result.stderr.decode()
    assert not (tmp_path / "runtime.json").exists()


def test_an_interpreter_path_is_a_runtime():
    from connector.core.interpreters import RuntimeNotSupportedError, pyenv_root, resolve

    python27 = needs("python2.7")
    explicit = resolve(python27.path)
    assert explicit.runtime == "python2.7" and explicit.path == python27.path and explicit.version[:2] == (2, 7)
    too_old = sorted((pyenv_root() / "versions").glob("3.6.*/bin/python3.6"))
    if not too_old:
        pytest.skip(f"no Python 3.6 in {pyenv_root() / 'versions'} to be refused by its path")
    with pytest.raises(RuntimeNotSupportedError, match=r"is Python 3\.6\.\d+, which is not supported"):
        resolve(str(too_old[-1]))


def test_a_candidate_that_is_not_that_python_is_passed_over_and_reported(tmp_path, monkeypatch):
    """As a pyenv shim for a version that is not active: on PATH, but it fails (or is another Python)."""
    from connector.core.interpreters import InterpreterNotFoundError, resolve

    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3.12").write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    (shims / "python3.10").write_text("#!/bin/sh\necho 3.11.7\n")
    for shim in shims.iterdir():
        shim.chmod(0o755)
    monkeypatch.setenv("PATH", str(shims))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    resolve.cache_clear()
    try:
        with pytest.raises(InterpreterNotFoundError) as failing:
            resolve("python3.12")
        with pytest.raises(InterpreterNotFoundError) as other:
            resolve("python3.10")
    finally:
        resolve.cache_clear()
    assert f"tried {shims / 'python3.12'} (exit status 127: pyenv: python3.12: command not found)" in str(failing.value)
    assert f"tried {shims / 'python3.10'} (is Python 3.11.7)" in str(other.value)
