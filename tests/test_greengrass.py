"""Deploying to real Greengrass: the v1 group recipe (aws CLI script) and the v2 component recipe."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator
from jsonschema import Draft202012Validator

from bench.harness import ggic
from bench.material import REPO
from connector.contract import schemas
from connector.control import connector_definitions
from connector.devices.platforms import machine_platform
from tests.installs import clean_env

RECIPE = REPO / "install" / "greengrass-v2" / "recipe.yaml"
SCHEMA = json.loads((REPO / "schemas" / "greengrass-v2-recipe.schema.json").read_text())
V1_SCRIPT = REPO / "install" / "greengrass-v1-lambda.sh"
ROLE = "arn:aws:iam::123456789012:role/greengrass-lambda"
JOB = "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyImageClassifier"
#: Greengrass v2 `architecture` values -> (install script, connector name)
ARCHITECTURES = {"amd64": ("x86_64.sh", "ImageClassificationx86-64"), "arm": ("armv7l.sh", "ImageClassificationARMv7"),
                 "aarch64": ("nvidiajtx2.sh", "ImageClassificationAarch64JTX2")}


def recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


# --- Greengrass v2 ----------------------------------------------------------------------------------------

def test_the_component_recipe_is_valid_against_the_recipe_schema():
    Draft202012Validator.check_schema(SCHEMA)
    errors = list(Draft202012Validator(SCHEMA).iter_errors(recipe()))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


@pytest.mark.parametrize("break_it, where", [
    (lambda r: r.pop("ComponentVersion"), "ComponentVersion"),
    (lambda r: r.__setitem__("ComponentVersion", "1.0"), "ComponentVersion"),
    (lambda r: r.__setitem__("ComponentName", "aws.greengrass.Mine"), "ComponentName"),
    (lambda r: r["Manifests"][0]["Artifacts"][0].__setitem__("Unarchive", "TAR"), "Unarchive"),
    (lambda r: r["Manifests"][0]["Lifecycle"].__setitem__("Startup", "true"), "Run and Startup"),
    (lambda r: r["Manifests"][0]["Lifecycle"]["Install"].__setitem__("Skipif", "if missing"), "Skipif"),
    (lambda r: r["Manifests"][0]["Lifecycle"]["Install"].__setitem__("Timout", 5), "misspelt step key"),
])
def test_the_schema_rejects_broken_recipes(break_it, where):
    broken = copy.deepcopy(recipe())
    break_it(broken)
    assert list(Draft202012Validator(SCHEMA).iter_errors(broken)), where


def test_each_manifest_installs_and_runs_the_connector_of_its_architecture():
    catalog = {entry["name"]: entry["platform"] for entry in schemas.load_json("connectors.json")["connectors"]}
    seen = set()
    for manifest in recipe()["Manifests"]:
        architecture = manifest["Platform"]["architecture"]
        script, connector = ARCHITECTURES[architecture]
        seen.add(architecture)
        lifecycle = manifest["Lifecycle"]
        assert lifecycle["Setenv"]["GGIC_CONNECTOR_NAME"] == connector
        assert f"/ggic/install/{script} --venv {{work:path}}/venv" in lifecycle["Install"]["Script"]
        assert lifecycle["Install"]["RequiresPrivilege"] is True  # apt-get
        assert "/ggic/install/greengrass-v2/run.sh {work:path}" in lifecycle["Run"]["Script"]
        assert {"amd64": "x86_64", "arm": "armv7l", "aarch64": "aarch64"}[architecture] == catalog[connector]
        assert [a["Unarchive"] for a in manifest["Artifacts"]] == ["ZIP"]
        assert manifest["Artifacts"][0]["URI"].endswith("/ggic.zip")  # unpacks to {artifacts:decompressedPath}/ggic
    assert seen == set(ARCHITECTURES)
    defaults = recipe()["ComponentConfiguration"]["DefaultConfiguration"]
    arn = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/2"
    assert connector_definitions.validate_parameters("default", arn, defaults["Parameters"]) == []


def interpolate(script: str, variables: dict, configuration: dict) -> str:
    """What the nucleus does to a lifecycle script: {work:path}, {artifacts:...} and {configuration:/pointer}."""
    def configuration_value(match: re.Match) -> str:
        node = configuration
        for key in match.group(1).strip("/").split("/"):
            node = node[key]
        return json.dumps(node) if isinstance(node, (dict, list)) else str(node)

    script = re.sub(r"\{configuration:(/[^}]*)\}", configuration_value, script)
    for name, value in variables.items():
        script = script.replace("{" + name + "}", str(value))
    return script


def unpacked_artifact(directory: Path) -> Path:
    """ggic.zip (the source tree: git archive) as the nucleus unpacks it, from this checkout's working files."""
    ggic = directory / "ggic"
    ggic.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("connector", "ml_sdk", "schemas", "install"):
        shutil.copytree(REPO / name, ggic / name, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, ggic / name)
    return ggic


@pytest.mark.skipif(machine_platform() != "x86_64", reason="runs the amd64 manifest of the recipe")
def test_the_recipe_install_and_run_steps_serve_inferences_like_a_nucleus_would_run_them(tmp_path, digits_model,
                                                                                         installed_venv):
    """The amd64 manifest's Install script, then its Run script, interpolated as the nucleus does. Install runs
    install/x86_64.sh from the unpacked artifact for real, on the venv a clean run of that script made for this
    session (conftest.py: installed_venv): it checks and repairs it and installs ggic from the artifact's source."""
    manifest = next(m for m in recipe()["Manifests"] if m["Platform"]["architecture"] == "amd64")
    work, artifacts = tmp_path / "work", tmp_path / "artifacts"
    work.mkdir()
    ggic_source = unpacked_artifact(artifacts)
    venv, _ = installed_venv
    (work / "venv").symlink_to(venv)
    variables = {"work:path": work, "artifacts:decompressedPath": artifacts}
    install = interpolate(manifest["Lifecycle"]["Install"]["Script"], variables, {})
    done = subprocess.run(["bash", "-c", install], cwd=work, env=dict(clean_env(), PIP_NO_COMPILE="1"),
                          capture_output=True, text=True, timeout=manifest["Lifecycle"]["Install"]["Timeout"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"-c {ggic_source}/install/constraints.txt {ggic_source}" in done.stdout
    assert "Successfully installed ggic-" in done.stdout or "Requirement already satisfied: ggic" in done.stdout
    assert "No broken requirements found." in done.stdout
    configuration = copy.deepcopy(recipe()["ComponentConfiguration"]["DefaultConfiguration"])
    configuration["Parameters"]["MLModelDestinationPath"] = str(digits_model)
    configuration.update(FetchModel="false", Port="0")
    script = interpolate(manifest["Lifecycle"]["Run"]["Script"], variables, configuration)
    env = dict(clean_env(), AWS_REGION="us-west-2", **manifest["Lifecycle"]["Setenv"])
    log = tmp_path / "component.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (work / "state" / "env").is_file():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        from sklearn.datasets import load_digits

        from examples.models.digits import digit_png

        image = tmp_path / "digit.png"
        image.write_bytes(digit_png(load_digits().images[0]))
        answer = ggic("invoke", "--state-dir", str(work / "state"), "--service-name", "imageClassification",
                      "--content-type", "image/png", "--body", f"fileb://{image}")
        assert answer.returncode == 0, answer.stderr.decode()
        assert answer.stdout.decode().count(",") == 9
        definition = json.loads((work / "state" / "connectors.json").read_text())
        assert definition["Connectors"][0]["ConnectorArn"] == \
            "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/2"
    finally:
        process.send_signal(signal.SIGTERM)  # how the nucleus stops a component
        assert process.wait(30) == 0, log.read_text()


# --- Greengrass v1 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v1_dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("greengrass-v1")
    package = tmp / "connector.zip"
    subprocess.run([sys.executable, "-m", "connector.devices.packaging", str(package)], cwd=REPO, check=True,
                   capture_output=True)
    out = tmp / "out"
    result = subprocess.run(
        ["bash", str(V1_SCRIPT), "--dry-run", "--role-arn", ROLE, "--job-arn", JOB, "--model-path", "/ml/model",
         "--service-name", "digits", "--timeout", "7", "--memory-kb", "300000", "--region", "us-west-2",
         "--zip", str(package), "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]
    documents = {name: json.loads((out / f"{name}-definition-version.json").read_text())
                 for name in ("function", "resource")}
    return {"commands": commands, "documents": documents, "zip": package, "stdout": result.stdout}


def command(run: dict, *words: str) -> list[str]:
    return next(c for c in run["commands"] if c[:len(words)] == list(words))


def options(argv: list[str]) -> dict:
    return {argv[i][2:]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


def test_v1_lambda_is_created_with_the_connector_handler_and_package(v1_dry_run):
    create = options(command(v1_dry_run, "aws", "lambda", "create-function"))
    assert create["function-name"] == "GG-ML-INF-image-classification-digits"
    assert create["handler"] == "connector.image_classification.handler.function_handler"
    assert create["zip-file"] == f"fileb://{v1_dry_run['zip']}"
    assert create["role"] == ROLE
    lambda_model = botocore.session.get_session().get_service_model("lambda")
    assert create["runtime"] in lambda_model.shape_for("Runtime").enum
    publish = options(command(v1_dry_run, "aws", "lambda", "publish-version"))
    alias = options(command(v1_dry_run, "aws", "lambda", "create-alias"))
    assert publish["function-name"] == alias["function-name"] == create["function-name"] and alias["name"] == "live"


def test_v1_definitions_match_the_greengrass_api_and_the_connector(v1_dry_run):
    model = botocore.session.get_session().get_service_model("greengrass")
    for kind, operation in (("function", "CreateFunctionDefinition"), ("resource", "CreateResourceDefinition")):
        request = {"Name": "ggic", "InitialVersion": v1_dry_run["documents"][kind]}
        report = ParamValidator().validate(request, model.operation_model(operation).input_shape)
        assert not report.has_errors(), report.generate_report()
        argv = command(v1_dry_run, "aws", "greengrass", f"create-{kind}-definition")
        assert options(argv)["initial-version"].endswith(f"/{kind}-definition-version.json")

    [function] = v1_dry_run["documents"]["function"]["Functions"]
    assert function["FunctionArn"] == \
        "arn:aws:lambda:us-west-2:123456789012:function:GG-ML-INF-image-classification-digits:live"
    config = function["FunctionConfiguration"]
    assert config["Pinned"] is True and config["EncodingType"] == "binary"
    assert config["Timeout"] > 7 and config["MemorySize"] > 300000  # the container holds handler + worker
    variables = dict(config["Environment"]["Variables"])
    assert variables.pop("PYTHONPATH") == "/opt/ggic/venv/lib/python3.8/site-packages"
    arn = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/2"
    assert connector_definitions.validate_parameters("v1-lambda", arn, variables) == []  # exactly the connector's parameters
    assert variables["LocalInferenceServiceMemoryLimitKB"] == "300000"

    resources = {r["Id"]: r["ResourceDataContainer"] for r in v1_dry_run["documents"]["resource"]["Resources"]}
    policies = {p["ResourceId"]: p["Permission"] for p in config["Environment"]["ResourceAccessPolicies"]}
    assert set(policies) == set(resources) and set(policies.values()) == {"ro"}
    ml = resources[variables["MLModelResourceId"]]["SageMakerMachineLearningModelResourceData"]
    assert ml == {"DestinationPath": variables["MLModelDestinationPath"], "SageMakerJobArn": JOB}
    assert resources["ggic-home"]["LocalVolumeResourceData"]["SourcePath"] == "/opt/ggic"


def test_v1_script_refuses_missing_arguments_and_a_missing_package(tmp_path):
    result = subprocess.run(["bash", str(V1_SCRIPT), "--dry-run", "--role-arn", ROLE], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1 and "--job-arn and --model-path are required" in result.stderr
    result = subprocess.run(["bash", str(V1_SCRIPT), "--dry-run", "--role-arn", ROLE, "--job-arn", JOB,
                             "--model-path", "/m", "--region", "us-west-2", "--zip", str(tmp_path / "none.zip")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "make lambda-zip" in result.stderr
