"""`ggic` as a user types it: connector definitions, start-up failures, the environment, the Lambda package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from bench.harness import GGICRuntime, connector_entry, ggic
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
