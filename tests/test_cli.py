"""`ggic` as a user types it: connector definitions, start-up failures, the environment, the Lambda package; invoke's
content type and labels, list-functions and the state directory's lock against a real runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from bench.harness import GGIC, GGICRuntime, connector_entry, ggic
from bench.material import REPO
from connector.contract import archives

DOC_EXAMPLE = ('{ "Connectors": [ { "Id": "MyImageClassificationConnector", "ConnectorArn": '
               '"arn:aws:greengrass:region::/connectors/ImageClassificationARMv7/versions/2", "Parameters": { '
               '"MLModelDestinationPath": "/path-to-model", "MLModelResourceId": "my-ml-resource", '
               '"MLModelSageMakerJobArn": "arn:aws:sagemaker:us-west-2:123456789012:training-job:MyImageClassifier", '
               '"LocalInferenceServiceName": "imageClassification", "LocalInferenceServiceTimeoutSeconds": "10", '
               '"LocalInferenceServiceMemoryLimitKB": "500000", "MLFeedbackConnectorConfigId": "MyConfig0" } } ] }')
# The example's MLFeedbackConnectorConfigId names a config of the group's ML Feedback connector: with it, it is whole.
FEEDBACK_CONNECTOR = {"Id": "MyFeedbackConnector",
                      "ConnectorArn": "arn:aws:greengrass:region::/connectors/MLFeedback/versions/1",
                      "Parameters": {"FeedbackConfigurationMap": json.dumps(
                          {"MyConfig0": {"s3-bucket-name": "my-aws-bucket", "content-type": "image/jpeg"}})}}
DEFINITION = json.dumps({"Connectors": json.loads(DOC_EXAMPLE)["Connectors"] + [FEEDBACK_CONNECTOR]})


def stored(state_dir, definition_id: str) -> dict:
    return json.loads((state_dir / "definitions" / "connectors" / f"{definition_id}.json").read_text())


def test_the_documentation_cli_example_needs_the_feedback_connector_it_names(tmp_path):
    result = ggic("create-connector-definition", "--state-dir", str(tmp_path), "--initial-version", DOC_EXAMPLE)
    assert result.returncode == 254
    details = json.loads(result.stderr.decode().split("\n", 1)[1])["ErrorDetails"]
    assert [d["DetailedErrorCode"] for d in details] == ["UnknownFeedbackConfigId"]
    assert not (tmp_path / "definitions").exists()


def test_the_documentation_cli_example_is_accepted_and_its_job_arn_normalised(tmp_path):
    result = ggic("create-connector-definition", "--state-dir", str(tmp_path), "--name", "MyGreengrassConnectors",
                  "--initial-version", DEFINITION)
    assert result.returncode == 0, result.stderr.decode()
    response = json.loads(result.stdout)
    assert set(response) == {"Arn", "CreationTimestamp", "Id", "LastUpdatedTimestamp", "LatestVersion",
                             "LatestVersionArn", "Name"}
    assert response["Name"] == "MyGreengrassConnectors"
    assert response["Arn"].endswith(f":/greengrass/definition/connectors/{response['Id']}")
    assert response["LatestVersionArn"] == f"{response['Arn']}/versions/{response['LatestVersion']}"
    assert "normalised MLModelSageMakerJobArn" in result.stderr.decode()
    parameters = stored(tmp_path, response["Id"])["Version"]["Connectors"][0]["Parameters"]
    assert parameters["MLModelSageMakerJobArn"] == \
        "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyImageClassifier"


def test_file_url_input_is_read_like_the_aws_cli(tmp_path):
    request = tmp_path / "version.json"
    request.write_text(DEFINITION)
    result = ggic("create-connector-definition", "--state-dir", str(tmp_path), "--initial-version",
                  f"file://{request}")
    assert result.returncode == 0, result.stderr.decode()
    assert "Name" not in json.loads(result.stdout)


def test_every_problem_is_reported_at_once_as_a_bad_request(tmp_path):
    version = json.loads(DEFINITION)
    parameters = version["Connectors"][0]["Parameters"]
    parameters["LocalInferenceServiceTimeoutSeconds"] = "0"
    parameters["LocalInferenceServiceMemoryLimitKB"] = "lots"
    parameters["GPUAcceleration"] = "GPU"
    del parameters["MLModelResourceId"]
    result = ggic("create-connector-definition", "--state-dir", str(tmp_path), "--initial-version",
                  json.dumps(version))
    assert result.returncode == 254
    stderr = result.stderr.decode()
    assert stderr.startswith("An error occurred (BadRequestException) when calling the "
                             "CreateConnectorDefinition operation")
    details = json.loads(stderr.split("\n", 1)[1])["ErrorDetails"]
    codes = sorted(d["DetailedErrorCode"] for d in details)
    assert codes == ["InvalidParameterValue", "InvalidParameterValue", "MissingRequiredParameter",
                     "UnknownParameter"]
    messages = " ".join(d["DetailedErrorMessage"] for d in details)
    for fragment in ("MyImageClassificationConnector", "LocalInferenceServiceTimeoutSeconds", "'0'", "'lots'",
                     "MLModelResourceId", "GPUAcceleration"):
        assert fragment in messages
    assert not (tmp_path / "definitions").exists()  # nothing stored


def test_two_versions_of_one_connector_in_a_definition_are_rejected(tmp_path):
    first = json.loads(DEFINITION)["Connectors"][0]
    second = json.loads(json.dumps(first))
    second["Id"] = "Another"
    second["ConnectorArn"] = second["ConnectorArn"].replace("versions/2", "versions/1")
    del second["Parameters"]["MLFeedbackConnectorConfigId"]
    second["Parameters"]["LocalInferenceServiceName"] = "other"
    result = ggic("create-connector-definition", "--state-dir", str(tmp_path), "--initial-version",
                  json.dumps({"Connectors": [first, second]}))
    assert result.returncode == 254
    assert "DuplicateConnector" in result.stderr.decode()


def test_run_with_an_unknown_definition_says_which_exist(tmp_path):
    ggic("create-connector-definition", "--state-dir", str(tmp_path), "--name", "known",
         "--initial-version", DEFINITION)
    result = ggic("run", "--state-dir", str(tmp_path), "--connector-definition", "unknown", "--port", "0")
    assert result.returncode == 1
    assert "no connector definition 'unknown'" in result.stderr.decode()
    assert "known (" in result.stderr.decode()


def test_env_and_invoke_without_a_runtime_say_so(tmp_path):
    for command in (["env"], ["invoke", "--service-name", "x", "--body", "-"]):
        result = ggic(*command, "--state-dir", str(tmp_path), input=b"")
        assert result.returncode == 1
        assert "no Greengrass runtime is running" in result.stderr.decode()


def test_a_missing_model_fails_the_start_with_the_reason(tmp_path):
    rt = GGICRuntime(tmp_path / "state", [connector_entry(tmp_path / "no-model-here")]).start(expect_ready=False)
    try:
        assert rt.wait_exit() == 1
        assert "is not a directory: deploy the ML resource there first" in rt.output()
    finally:
        rt.stop()


def test_eval_ggic_env_makes_a_shell_process_a_lambda_of_the_runtime(tmp_path, digits_model):
    with GGICRuntime(tmp_path / "state", [connector_entry(digits_model, service_name="digits")]) as rt:
        script = (f'eval "$({sys.executable} -m connector.control.cli env --state-dir {rt.state_dir})" && '
                  f'{sys.executable} -c "import os; print(os.environ[\'MY_FUNCTION_ARN\'], '
                  f'os.environ[\'GG_DAEMON_PORT\'])"')
        result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        arn, port = result.stdout.split()
        assert arn == "arn:aws:lambda:us-west-2:000000000000:function:ggic-client"
        assert int(port) == rt.port


def test_gpu_acceleration_without_a_gpu_fails_the_start_clearly(tmp_path, digits_model):
    import mxnet as mx

    if mx.runtime.Features().is_enabled("CUDA") and mx.context.num_gpus() > 0:
        pytest.skip("this machine has a usable GPU")
    entry = connector_entry(digits_model, platform="Aarch64JTX2", GPUAcceleration="GPU")
    rt = GGICRuntime(tmp_path / "state", [entry], run_args=["--allow-platform-mismatch"]).start(expect_ready=False)
    try:
        assert rt.wait_exit() == 1
        assert "GPUAcceleration=GPU, but" in rt.output()
        assert "set GPUAcceleration=CPU" in rt.output()
    finally:
        rt.stop()


def test_gpu_acceleration_serves_on_the_gpu_when_there_is_one(tmp_path, digits_model, sdk_env):
    import mxnet as mx

    if not (mx.runtime.Features().is_enabled("CUDA") and mx.context.num_gpus() > 0):
        pytest.skip("no CUDA build of MXNet or no GPU on this machine (CI has none)")
    entry = connector_entry(digits_model, platform="Aarch64JTX2", GPUAcceleration="GPU")
    with GGICRuntime(tmp_path / "state", [entry], run_args=["--allow-platform-mismatch"]) as rt:
        assert "bound on gpu(0)" in rt.log_of("GG-ML-INF-image-classification-imageClassification")


def test_lambda_zip_deploys_an_importable_working_handler(tmp_path, digits_model):
    archive = tmp_path / "connector.zip"
    result = subprocess.run([sys.executable, "-m", "connector.devices.packaging", str(archive)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names = zipfile.ZipFile(archive).namelist()
    assert "connector/image_classification/handler.py" in names and "schemas/image-classification-v2.schema.json" in names
    # Exactly what the connector needs on a core (its package, the contract), the ML SDK (for feedback) and the
    # schemas: nothing compiled, no tests, nothing of our runtime, control plane or device tools.
    expected = {"connector/__init__.py"} | {p.relative_to(REPO).as_posix() for package in ("contract",
                                                                                          "image_classification")
                                            for p in (REPO / "connector" / package).glob("*.py")}
    expected |= {f"greengrass_machine_learning_sdk/{p.name}"
                 for p in (REPO / "ml_sdk" / "greengrass_machine_learning_sdk").glob("*.py")}
    expected |= {f"schemas/{p.name}" for p in (REPO / "schemas").glob("*.json")}
    assert set(names) == expected and len(names) == len(expected)
    assert not [name for name in names if name.startswith(("connector/core/", "connector/control/",
                                                            "connector/devices/", "connector/feedback/"))]
    probe = (
        "import sys, types, json\n"
        "import connector.image_classification.handler as h\n"
        "assert h.__file__.startswith(sys.argv[1]), h.__file__\n"
        "from examples.models.digits import digit_png\n"
        "from sklearn.datasets import load_digits\n"
        "d = load_digits()\n"
        "ctx = types.SimpleNamespace(client_context=types.SimpleNamespace(custom={'Content-Type': 'image/png'}),"
        " aws_request_id='r1')\n"
        "answer = h.function_handler(digit_png(d.images[0]), ctx)\n"
        "assert not [m for m in sys.modules if m.startswith(('connector.core', 'connector.control', "
        "'connector.devices', 'connector.feedback'))], sorted(sys.modules)\n"
        "print(json.dumps(answer))\n")
    # Greengrass unpacks a Lambda's deployment package into a directory of its own and imports from there.
    deployed = tmp_path / "deployment" / "lambda"
    deployed.mkdir(parents=True)
    archives.extract(archive, deployed, kind="package")  # the bounded extractor a package goes through
    env = dict(os.environ, **connector_entry(digits_model)["Parameters"])
    env["PYTHONPATH"] = os.pathsep.join([str(deployed), str(REPO)])
    # Run from an empty directory: the deployed copy comes first on the path, not the repository's.
    result = subprocess.run([sys.executable, "-c", probe, str(deployed)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["ContentType"] == "application/json"
    assert answer["Body"].count(",") == 9


# --- invoke, list-functions and the state directory, against a real runtime ---------------------------------------

@pytest.fixture(scope="module")
def digits_runtime(tmp_path_factory, digits_model):
    with GGICRuntime(tmp_path_factory.mktemp("cli") / "state", [connector_entry(digits_model,
                                                                                service_name="digits")]) as rt:
        yield rt


@pytest.fixture(scope="module")
def digit_image() -> bytes:
    from sklearn.datasets import load_digits

    from examples.models.digits import digit_png

    return digit_png(load_digits().images[0])


def invoke(rt, *args: str, input: bytes = None):
    return ggic("invoke", "--state-dir", str(rt.state_dir), "--service-name", "digits", *args, input=input)


def test_invoke_tells_the_content_type_from_the_file_and_an_explicit_one_wins(digits_runtime, digit_image, tmp_path):
    for name in ("digit.png", "digit.bin", "digit.jpg"):  # the first bytes say PNG, whatever the name says
        (tmp_path / name).write_bytes(digit_image)
        result = invoke(digits_runtime, "--body", f"fileb://{tmp_path / name}")
        assert result.returncode == 0, (name, result.stderr.decode())
        assert result.stdout.decode().count(",") == 9  # ten classes
    assert invoke(digits_runtime, "--body", "-", input=digit_image).returncode == 0
    explicit = invoke(digits_runtime, "--body", f"fileb://{tmp_path / 'digit.png'}", "--content-type", "image/jpeg")
    assert explicit.returncode == 1 and "the inference service refused the request" in explicit.stderr.decode()

    (tmp_path / "notes.txt").write_bytes(b"hello, world")
    unknown = invoke(digits_runtime, "--body", f"fileb://{tmp_path / 'notes.txt'}")
    assert unknown.returncode == 1
    assert f"cannot tell the content type of --body {tmp_path / 'notes.txt'}" in unknown.stderr.decode()
    assert "give --content-type image/jpeg or image/png" in unknown.stderr.decode()
    (tmp_path / "x.gif").write_bytes(b"GIF89a" + bytes(32))
    gif = invoke(digits_runtime, "--body", f"fileb://{tmp_path / 'x.gif'}")
    assert gif.returncode == 1 and "is a GIF image: the image classification connector takes JPEG or PNG" in \
        gif.stderr.decode()
    # Unknown bytes named .jpg go as image/jpeg: the connector, not the CLI, says what is wrong with them.
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    by_name = invoke(digits_runtime, "--body", f"fileb://{tmp_path / 'broken.jpg'}")
    assert by_name.returncode == 1 and "the inference service refused the request" in by_name.stderr.decode()
    assert "image/jpeg" in by_name.stderr.decode()


def test_labels_that_do_not_fit_the_model_are_an_error_naming_both_counts(digits_runtime, digit_image, tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(digit_image)
    (tmp_path / "three.txt").write_text("zero\none\ntwo\n")
    short = invoke(digits_runtime, "--body", str(image), "--labels", str(tmp_path / "three.txt"))
    assert short.returncode == 1 and short.stdout == b""
    assert f"--labels {tmp_path / 'three.txt'} names 3 classes, but the model answered 10" in short.stderr.decode()
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (tmp_path / "ten.json").write_text(json.dumps(names))
    fitting = invoke(digits_runtime, "--body", str(image), "--labels", str(tmp_path / "ten.json"), "--top-k", "3")
    assert fitting.returncode == 0, fitting.stderr.decode()
    lines = fitting.stdout.decode().splitlines()
    assert len(lines) == 3 and all(line.split()[2] == names[int(line.split()[1])] for line in lines)
    (tmp_path / "broken.json").write_text("[not json")
    broken = invoke(digits_runtime, "--body", str(image), "--labels", str(tmp_path / "broken.json"))
    assert broken.returncode == 1 and f"--labels {tmp_path / 'broken.json'}: cannot read class names" in \
        broken.stderr.decode()


def test_invoke_into_a_closed_pipe_ends_quietly(digits_runtime, digit_image, tmp_path):
    image = tmp_path / "digit.png"
    image.write_bytes(digit_image)
    process = subprocess.Popen(GGIC + ["invoke", "--state-dir", str(digits_runtime.state_dir), "--service-name",
                                       "digits", "--body", str(image), "--top-k", "10"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the answer is printed, as `| head -1` can be
    stderr = process.stderr.read().decode()
    assert process.wait(60) == 141 and stderr == ""


def test_list_functions_running_shows_the_running_runtimes_functions(digits_runtime):
    result = ggic("list-functions", "--running", "--state-dir", str(digits_runtime.state_dir))
    assert result.returncode == 0, result.stderr.decode()
    functions = json.loads(result.stdout)["Functions"]
    health = {entry["function_arn"]: entry for entry in digits_runtime.health()["functions"]}
    assert [f["FunctionArn"] for f in functions] == sorted(health)
    (function,) = functions
    assert function["FunctionName"] == "GG-ML-INF-image-classification-digits"
    assert function["Runtime"] == health[function["FunctionArn"]]["runtime"]
    assert function["Timeout"] == health[function["FunctionArn"]]["timeout_s"]
    assert function["Handler"]  # the catalog's handler of the connector
    text = ggic("list-functions", "--running", "--state-dir", str(digits_runtime.state_dir), "--output", "text")
    assert text.stdout.decode().startswith(f"FUNCTIONS\t{function['FunctionArn']}\t{function['FunctionName']}\t")
    stored = ggic("list-functions", "--state-dir", str(digits_runtime.state_dir))  # the stored ones: none here
    assert json.loads(stored.stdout) == {"Functions": []}
    assert "`ggic list-functions --running` lists the functions the running runtime hosts" in stored.stderr.decode()


def test_list_functions_running_without_a_runtime_is_an_empty_list(tmp_path):
    result = ggic("list-functions", "--running", "--state-dir", str(tmp_path))
    assert result.returncode == 0 and json.loads(result.stdout) == {"Functions": []}
    assert "no runtime is running" in result.stderr.decode()


def hold_state_lock(state) -> subprocess.Popen:
    """A process holding the state directory's lock (as a runtime that is still starting does), once it returns."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from connector.core.state_lock import StateDirectoryLock; "
                               "StateDirectoryLock.acquire(Path(sys.argv[1])); print('locked', flush=True); "
                               "time.sleep(600)", str(state)], cwd=REPO, stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"locked\n"
    return holder


def test_a_refused_group_run_names_the_holder_and_leaves_the_deployment_alone(tmp_path):
    state = tmp_path / "state"
    subscriptions = ggic("create-subscription-definition", "--state-dir", str(state), "--initial-version", json.dumps(
        {"Subscriptions": [{"Id": "up", "Source": "arn:aws:lambda:us-west-2:000000000000:function:publisher",
                            "Subject": "out/#", "Target": "cloud"}]}))
    version = {"SubscriptionDefinitionVersionArn": json.loads(subscriptions.stdout)["LatestVersionArn"]}
    assert ggic("create-group", "--state-dir", str(state), "--name", "g", "--initial-version",
                json.dumps(version)).returncode == 0
    deployment = json.loads(ggic("create-deployment", "--state-dir", str(state), "--group-id", "g",
                                 "--deployment-type", "NewDeployment").stdout)["DeploymentId"]
    holder = hold_state_lock(state)
    try:
        # (the broker is never reached: the refusal comes before anything starts)
        result = ggic("run", "--state-dir", str(state), "--group", "g", "--port", "0", "--mqtt-broker", "127.0.0.1:9")
    finally:
        holder.kill()
        holder.wait(10)
    assert result.returncode == 1
    assert f"is in use by the runtime of pid {holder.pid}, still starting (not listening yet)" in \
        result.stderr.decode()
    status = json.loads(ggic("get-deployment-status", "--state-dir", str(state), "--group-id", "g",
                             "--deployment-id", deployment).stdout)
    assert status["DeploymentStatus"] == "InProgress" and status["ErrorMessage"] == ""


def test_a_second_run_on_a_state_directory_fails_at_once_and_a_stale_lock_is_taken(tmp_path, digits_model,
                                                                                   digit_image):
    state = tmp_path / "state"
    state.mkdir()
    # A runtime that died without stopping (SIGKILL) leaves its lock file behind, but not its lock.
    holder = hold_state_lock(state)
    holder.kill()
    holder.wait(10)
    assert (state / "runtime.lock").is_file()
    with GGICRuntime(state, [connector_entry(digits_model, service_name="digits")]) as first:
        files = {name: ((state / name).read_bytes(), (state / name).stat().st_mtime_ns) for name in
                 ("runtime.json", "env")}
        second = ggic("run", "--state-dir", str(state), "--connector-definition", "tests", "--port", "0")
        assert second.returncode == 1
        said = second.stderr.decode()
        assert f"state directory {state} is in use by the runtime of pid {first.process.pid}, listening on " \
               f"127.0.0.1:{first.port}" in said
        assert "Greengrass IPC server listening" not in said  # refused before it started anything
        # The first one's files are untouched, and it still answers through them.
        assert {name: ((state / name).read_bytes(), (state / name).stat().st_mtime_ns) for name in files} == files
        (tmp_path / "digit.png").write_bytes(digit_image)
        assert invoke(first, "--body", str(tmp_path / "digit.png")).returncode == 0
    assert first.process.returncode == 0
    assert not (state / "runtime.json").exists() and not (state / "env").exists()  # its own, removed at its stop
