"""`ggic import-group`: a group exported with the AWS CLI (tests/data/aws-group: an AWS-sample-shaped group with an
image classification connector, its ML resource, two Lambda functions and their subscriptions, plus what ggic cannot
run) created again locally, with one warning per thing left out. Real `ggic` processes, real files; the end-to-end
run of the imported group also needs the runtime's side of issue 12."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from bench.harness import REPO, ggic
from client_packages import sdk_dir

EXPORT = REPO / "tests" / "data" / "aws-group"
FUNCTIONS = ("imageClassifier", "predictionLogger")
ML_SDK_PACKAGES = ("greengrass_machine_learning_sdk", "greengrass_common", "greengrass_ipc_python_sdk")
LAMBDA = "arn:aws:lambda:us-west-2:123456789012:function:"
# What the sample group holds that ggic does not run: one warning each, naming it.
LEFT_OUT = [
    "core '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f' (thing arn:aws:iot:us-west-2:123456789012:thing/"
    "ImageClassificationGroup_Core): not used",
    "device 'camera-device' (thing arn:aws:iot:us-west-2:123456789012:thing/Camera): left out",
    "logger 'system-logs' (GreengrassSystem at INFO to the file system",
    "logger 'lambda-logs-cloud' (Lambda at INFO to CloudWatch Logs: not sent",
    "resource 'Camera' (LocalDeviceResourceData): left out",
    "connector 'MyCloudWatchMetricsConnector' (arn:aws:greengrass:us-west-2::/connectors/CloudWatchMetrics/"
    "versions/4): left out",
    "function '4a5b6c7d-8e9f-4a0b-1c2d-3e4f5a6b7c8d' (arn:aws:lambda:::function:GGIPDetector:1): a Greengrass core "
    "system function",
    "subscription 'shadow-update' (",
    "subscription 'camera-frames' (",
    "subscription 'metrics' (",
]


def zip_lambdas(folder: Path) -> Path:
    """Each sample function's package, named after the function, as `aws lambda get-function`'s Code.Location
    downloads it: its code beside the SDKs it bundles, as the AWS samples' packages hold them (greengrasssdk 1.6.1
    from PyPI, installed by `make clients`, and the ML SDK)."""
    folder.mkdir(parents=True, exist_ok=True)
    bundled = [sdk_dir("1.6.1") / "greengrasssdk"] + [REPO / "ml_sdk" / package for package in ML_SDK_PACKAGES]
    for name in FUNCTIONS:
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as archive:
            for source in sorted((EXPORT / "lambdas" / name).iterdir()):
                archive.write(source, source.name)
            for package in bundled:
                for source in sorted(package.rglob("*.py")):
                    archive.write(source, str(source.relative_to(package.parent)))
    return folder


def run(state: Path, *args: str, expect: int = 0):
    result = ggic(*args, "--state-dir", str(state))
    stderr = result.stderr.decode()
    assert result.returncode == expect, stderr
    return (json.loads(result.stdout) if expect == 0 else None), stderr


def warnings_of(stderr: str) -> list:
    return [line[len("warning: "):] for line in stderr.splitlines() if line.startswith("warning: ")]


def test_an_aws_sample_group_is_imported_with_one_warning_per_thing_left_out(tmp_path):
    zips = zip_lambdas(tmp_path / "zips")
    state = tmp_path / "state"
    imported, stderr = run(state, "import-group", str(EXPORT), "--zip-dir", str(zips))
    warnings = warnings_of(stderr)
    assert len(warnings) == len(LEFT_OUT), warnings
    for expected, warning in zip(LEFT_OUT, warnings):
        assert warning.startswith(expected), (expected, warning)

    assert imported["Name"] == "ImageClassificationGroup"
    assert imported["FunctionVersionArns"] == [LAMBDA + "imageClassifier:3", LAMBDA + "predictionLogger:2"]
    version, _ = run(state, "get-group-version", "--group-id", imported["GroupId"], "--group-version-id",
                     imported["GroupVersionId"])
    assert sorted(version["Definition"]) == ["ConnectorDefinitionVersionArn", "FunctionDefinitionVersionArn",
                                             "ResourceDefinitionVersionArn", "SubscriptionDefinitionVersionArn"]

    def definition(kind: str) -> dict:
        arn = version["Definition"][f"{kind.capitalize()}DefinitionVersionArn"]
        definition_id, version_id = arn.split("/")[-3], arn.split("/")[-1]
        got, _ = run(state, f"get-{kind}-definition-version", f"--{kind}-definition-id", definition_id,
                     f"--{kind}-definition-version-id", version_id)
        return got["Definition"]

    exported = json.loads((EXPORT / "function-definition-version.json").read_text())["Definition"]
    assert definition("function") == dict(exported, Functions=exported["Functions"][1:])  # GGIPDetector left out
    assert [c["Id"] for c in definition("connector")["Connectors"]] == ["MyImageClassificationConnector"]
    assert [r["Id"] for r in definition("resource")["Resources"]] == ["ImageClassificationModel"]
    assert [s["Id"] for s in definition("subscription")["Subscriptions"]] == [
        "requests", "predictions-to-cloud", "predictions-to-logger"]

    # The functions keep their AWS ARNs, version numbers and aliases; their code is the zip's.
    classifier, _ = run(state, "get-function", "--function-name", LAMBDA + "imageClassifier:prod")
    assert classifier["Configuration"]["Version"] == "3" and classifier["Configuration"]["Runtime"] == "python3.8"
    assert classifier["Configuration"]["Handler"] == "classifier.handler"
    assert Path(classifier["Code"]["Location"][len("file://"):]).read_bytes() == \
        (zips / "imageClassifier.zip").read_bytes()
    listed, _ = run(state, "list-functions")
    assert [f["FunctionName"] for f in listed["Functions"]] == list(FUNCTIONS)

    # The same export as one document (a list of the documents) imports the same, reusing the functions.
    combined = tmp_path / "export.json"
    combined.write_text(json.dumps([json.loads(p.read_text()) for p in sorted(EXPORT.glob("*.json"))]))
    again, stderr = run(state, "import-group", str(combined), "--zip-dir", str(zips), "--name", "second")
    assert len(warnings_of(stderr)) == len(LEFT_OUT) and again["Name"] == "second"
    assert again["FunctionVersionArns"] == imported["FunctionVersionArns"]


def _python311(export: Path) -> None:
    document = json.loads((export / "function-predictionLogger.json").read_text())
    document["Configuration"]["Runtime"] = "python3.11"
    (export / "function-predictionLogger.json").write_text(json.dumps(document))


# What is wrong with the export → what the refusal must say.
INCOMPLETE = {
    "function-predictionLogger.json": f"add the output of `aws lambda get-function --function-name "
                                      f"{LAMBDA}predictionLogger:2`",
    "predictionLogger.zip": "no deployment package: put it at {export}/predictionLogger.zip",
    "subscription-definition-version.json": "add the output of `aws greengrass get-subscription-definition-version "
                                            "--subscription-definition-id 1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d "
                                            "--subscription-definition-version-id "
                                            "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e`",
    "runtime python3.11": f"function {LAMBDA}predictionLogger:2: runtime 'python3.11' is not one a Greengrass core "
                          f"runs Lambda functions on",
}


@pytest.mark.parametrize("problem", sorted(INCOMPLETE))
def test_an_incomplete_export_is_refused_naming_what_is_missing_and_nothing_is_created(tmp_path, problem):
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export, ignore=shutil.ignore_patterns("lambdas"))
    zip_lambdas(export)  # the packages next to the JSON: the default --zip-dir
    if problem.startswith("runtime"):
        _python311(export)
    else:
        os.remove(export / problem)
    _, stderr = run(tmp_path / "state", "import-group", str(export), expect=1)
    assert INCOMPLETE[problem].format(export=export) in stderr
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def documented_export_script() -> str:
    """The export commands of docs/functions.md ("Bringing your group"), as the page shows them."""
    page = (REPO / "docs" / "functions.md").read_text()
    return re.search(r"## Bringing your group\n.*?```bash\n(.*?)```", page, re.DOTALL).group(1)


def test_the_documented_export_commands_produce_what_import_group_takes(tmp_path):
    """The page's script, run with stand-ins for `aws` (each call checked against botocore's model, answered from
    the sample export) and `curl`: it asks for every document and package of the group, and nothing else, and
    `import-group` takes the folder it makes."""
    zips = zip_lambdas(tmp_path / "zips")
    folder = tmp_path / "exported"
    folder.mkdir()
    calls = tmp_path / "calls.jsonl"
    env = dict(os.environ, GROUP_ID="4e1f62a1-5c7d-4b5b-9d3e-2f0c8f6b7a10", AWS_STAND_IN_DATA=str(EXPORT),
               AWS_STAND_IN_LOG=str(calls), CURL_STAND_IN_ZIPS=str(zips),
               PATH=os.pathsep.join([str(REPO / "tests" / "stand_ins"), str(Path(sys.executable).parent),
                                     os.environ["PATH"]]))
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", documented_export_script()], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    made = sorted(p.name for p in folder.iterdir())
    assert made == sorted([p.name for p in EXPORT.glob("*.json")] + [f"{name}.zip" for name in FUNCTIONS])
    for name in made:
        if name.endswith(".json"):
            assert json.loads((folder / name).read_text()) == json.loads((EXPORT / name).read_text()), name
    commands = [tuple(json.loads(line)[:2]) for line in calls.read_text().splitlines()]
    assert len(commands) == len(set(commands)) + 1  # get-function twice, each of its own function
    imported, stderr = run(tmp_path / "state", "import-group", str(folder))
    assert imported["FunctionVersionArns"] == [LAMBDA + "imageClassifier:3", LAMBDA + "predictionLogger:2"]
    assert len(warnings_of(stderr)) == len(LEFT_OUT)


def test_an_imported_group_runs_and_its_lambdas_predictions_reach_the_broker(tmp_path, moto_endpoint, mqtt_broker):
    """The sample group, imported with its model's training job (moto) and its destination moved under tmp_path,
    deployed and run by `ggic run --group`: a request from the cloud reaches the pinned classifier Lambda (from its
    zip, with its Environment.Variables), which calls the connector through the ML SDK and publishes the
    probabilities; they reach the MQTT broker."""
    from sklearn.datasets import load_digits

    from bench.harness import GGICRuntime
    from bench.material import DIGITS_ARCHIVE
    from examples.models.digits import digit_png
    from mosquitto import Subscriber
    from sagemaker_jobs import aws_env, create_job

    export = tmp_path / "export"
    shutil.copytree(EXPORT, export, ignore=shutil.ignore_patterns("lambdas"))
    zip_lambdas(export)
    job = create_job(moto_endpoint, "MyImageClassifier", DIGITS_ARCHIVE.read_bytes())
    destination = str(tmp_path / "ml" / "image-classification")
    resources = json.loads((export / "resource-definition-version.json").read_text())
    container = resources["Definition"]["Resources"][0]["ResourceDataContainer"]
    container["SageMakerMachineLearningModelResourceData"].update(DestinationPath=destination, SageMakerJobArn=job)
    (export / "resource-definition-version.json").write_text(json.dumps(resources))
    connectors = json.loads((export / "connector-definition-version.json").read_text())
    connectors["Definition"]["Connectors"][0]["Parameters"].update(MLModelDestinationPath=destination,
                                                                   MLModelSageMakerJobArn=job)
    (export / "connector-definition-version.json").write_text(json.dumps(connectors))

    state = tmp_path / "state"
    env = dict(os.environ, **aws_env(moto_endpoint))
    imported = ggic("import-group", str(export), "--state-dir", str(state), env=env)
    assert imported.returncode == 0, imported.stderr.decode()
    deployed = ggic("create-deployment", "--group-id", "ImageClassificationGroup", "--deployment-type",
                    "NewDeployment", "--state-dir", str(state), env=env)
    assert deployed.returncode == 0, deployed.stderr.decode()

    digits = load_digits()
    image = base64.b64encode(digit_png(digits.images[0])).decode()
    cloud = Subscriber(mqtt_broker, "ml/ic/predictions")
    try:
        with GGICRuntime(state, [], extra_env=aws_env(moto_endpoint), run_args=["--group", "ImageClassificationGroup"],
                         mqtt_broker=mqtt_broker) as runtime:
            deadline = time.monotonic() + 30
            while not runtime.health()["mqtt"]["subscribed"] and time.monotonic() < deadline:
                time.sleep(0.1)  # the bridge subscribes to the group's cloud subscriptions once connected
            cloud.publish("ml/ic/requests", json.dumps({"id": "r1", "image": image}).encode())
            [(topic, payload)] = cloud.take(1)
            prediction = json.loads(payload)
            assert topic == "ml/ic/predictions" and prediction["request"] == "r1"
            assert prediction["thing"] == "ImageClassificationGroup_Core"  # from the function's Variables
            assert len(prediction["predictions"]) == 10
            assert max(range(10), key=prediction["predictions"].__getitem__) == int(digits.target[0])
    finally:
        cloud.close()
