"""Function definitions: `ggic create-function-definition` / `create-function-definition-version` in the Greengrass
API's shapes, checked against the schema from the API model and against the stored Lambda functions; a group version's
functions resolved into the runtime's `GroupFunction`s (alias → version at deployment time, DefaultConfig, resource
paths), and `create-deployment` refusing functions it cannot deploy. Real `ggic` processes, real files."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from test_lambda_functions import Lambda, package, write_package

from connector.control.function_definitions import FunctionResolutionError, resolved_versions
from connector.control.groups import GroupStore, LocalDeployments, resolve_group_version
from connector.control.lambda_functions import LambdaFunctionStore
from connector.core.group_functions import GroupFunction, ResourceAccess

ARN = "arn:aws:lambda:us-west-2:000000000000:function:"
JOB = "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyImageClassifier"


def bad_request(cli: Lambda, *args: str) -> dict:
    cli(*args, expect=254)
    assert "An error occurred (BadRequestException) when calling the " in cli.stderr
    return json.loads(cli.stderr[cli.stderr.index("\n{") + 1:])


@pytest.fixture
def stored(tmp_path):
    """A state directory with function `app` (versions 1 and 2, alias prod → 1) and `helper` (version 1), made
    through the store the Lambda commands use (those are tested through the CLI in test_lambda_functions)."""
    lambdas = LambdaFunctionStore(tmp_path / "state", "us-west-2")
    for name, text in (("app", "VERSION = 1\n"), ("helper", "")):
        lambdas.create_function(name, "python3.8", f"{name}.handler",
                                package({f"{name}.py": text + "def handler(e, c):\n    pass\n"}), publish=True)
    lambdas.update_function_code("app", package({"app.py": "VERSION = 2\ndef handler(e, c):\n    pass\n"}),
                                 publish=True)
    lambdas.create_alias("app", "prod", "1")
    return Lambda(tmp_path / "state")


EVERY_FIELD = {
    "DefaultConfig": {"Execution": {"IsolationMode": "GreengrassContainer", "RunAs": {"Uid": 1000, "Gid": 1000}}},
    "Functions": [
        {"Id": "app", "FunctionArn": ARN + "app:prod", "FunctionConfiguration": {
            "Pinned": True, "MemorySize": 65536, "Timeout": 12, "EncodingType": "binary",
            "Environment": {"Variables": {"THINGNAME": "pi"}, "AccessSysfs": True,
                            "ResourceAccessPolicies": [{"ResourceId": "model", "Permission": "ro"}],
                            "Execution": {"IsolationMode": "GreengrassContainer"}},
            "Executable": "app.py", "ExecArgs": "-v"}},
        {"Id": "helper", "FunctionArn": ARN + "helper:1",
         "FunctionConfiguration": {"Environment": {"Execution": {"IsolationMode": "NoContainer"}}}},
    ],
}


def test_a_definition_with_every_field_is_stored_and_read_back_in_the_api_shapes(stored):
    created = stored("create-function-definition", "--name", "user-lambdas", "--initial-version",
                     json.dumps(EVERY_FIELD))
    assert "RunAs is stored, not applied" in stored.stderr  # ggic cannot run as another user: it says so
    version = stored("get-function-definition-version", "--function-definition-id", "user-lambdas",
                     "--function-definition-version-id", created["LatestVersion"])
    assert version["Definition"] == EVERY_FIELD and version["Arn"] == created["LatestVersionArn"]

    added = stored("create-function-definition-version", "--function-definition-id", created["Id"],
                   "--functions", json.dumps(EVERY_FIELD["Functions"][1:]))
    versions = stored("list-function-definition-versions", "--function-definition-id", created["Id"])["Versions"]
    assert [v["Version"] for v in versions] == [created["LatestVersion"], added["Version"]]
    latest = stored("get-function-definition", "--function-definition-id", created["Id"])
    assert latest["LatestVersion"] == added["Version"] and latest["LatestVersionArn"] == added["Arn"]
    assert [d["Id"] for d in stored("list-function-definitions")["Definitions"]] == [created["Id"]]


def test_bad_definitions_are_bad_requests_naming_every_problem(stored):
    body = bad_request(stored, "create-function-definition", "--initial-version", json.dumps({"Functions": [
        {"Id": "a", "FunctionArn": ARN + "app", "FunctionConfiguration": {"Pinned": "yes", "EncodingType": "xml",
                                                                         "MemorySize": 0, "Colour": "red"}},
        {"Id": "b", "FunctionArn": ARN + "gone:1"}]}))
    messages = [d["DetailedErrorMessage"] for d in body["ErrorDetails"]]
    # Shape problems and what only the store can tell, at once; the unqualified ARN once, by the schema.
    assert [d["DetailedErrorCode"] for d in body["ErrorDetails"]] == ["InvalidRequest"] * 5 + ["FunctionNotFound"]
    assert "Functions[1] (Id 'b'): Function not found" in messages[-1]
    for field in ("Functions[0].FunctionArn", "Pinned", "EncodingType", "MemorySize", "Colour"):
        assert any(field in message for message in messages), (field, messages)

    body = bad_request(stored, "create-function-definition", "--initial-version", json.dumps({"Functions": [
        {"Id": "a", "FunctionArn": ARN + "app:staging"},
        {"Id": "a", "FunctionArn": ARN + "gone:1"},
        {"Id": "b", "FunctionArn": ARN + "app:7"},
        {"Id": "c", "FunctionArn": ARN + "app:$LATEST"},
        {"Id": "d", "FunctionArn": ARN + "helper:1", "FunctionConfiguration": {
            "MemorySize": 1024, "Environment": {"Execution": {"IsolationMode": "NoContainer"}}}}]}))
    details = [(d["DetailedErrorCode"], d["DetailedErrorMessage"]) for d in body["ErrorDetails"]]
    assert [code for code, _ in details] == ["FunctionNotFound", "DuplicateFunctionId", "FunctionNotFound",
                                             "FunctionNotFound", "FunctionNotFound", "InvalidFunctionConfiguration"]
    text = "\n".join(message for _, message in details)
    assert "app has no alias 'staging'" in text and "no function 'gone'" in text and "no version '7'" in text
    assert "a Greengrass group runs a published version" in text and "NoContainer" in text
    assert not (stored.state_dir / "definitions" / "functions").exists()  # nothing stored


def group_with(cli: Lambda, tmp_path: Path, functions: dict) -> str:
    resources = cli("create-resource-definition", "--initial-version", json.dumps({"Resources": [
        {"Id": "model", "Name": "model", "ResourceDataContainer": {"SageMakerMachineLearningModelResourceData": {
            "DestinationPath": str(tmp_path / "ml" / "model"), "SageMakerJobArn": JOB}}}]}))["LatestVersionArn"]
    definition = cli("create-function-definition", "--initial-version", json.dumps(functions))["LatestVersionArn"]
    return cli("create-group", "--name", "g", "--initial-version", json.dumps({
        "ResourceDefinitionVersionArn": resources, "FunctionDefinitionVersionArn": definition}))["Id"]


def test_a_group_versions_functions_resolve_to_what_the_runtime_runs(stored, tmp_path):
    group_id = group_with(stored, tmp_path, EVERY_FIELD)
    assert "not deployed" not in stored.stderr
    store = GroupStore(stored.state_dir, "us-west-2")
    version = GroupStore.version(store.get(group_id))["Version"]
    source = LocalDeployments(store, group_id, "us-west-2")

    def deploy() -> dict:
        """A deployment record as `ggic create-deployment` makes it: the versions its qualifiers name now."""
        contents = resolve_group_version(stored.state_dir, GroupStore.version(store.get(group_id))["Definition"])[0]
        return store.create_deployment(group_id, version, "NewDeployment",
                                       resolved_versions(stored.state_dir, contents.functions))

    first = deploy()
    app, helper = source.functions(first)
    code = stored("get-function", "--function-name", "app:1")["Configuration"]["CodeSha256"]
    assert app == GroupFunction(
        arn=ARN + "app:prod", version="1", code_dir=stored.state_dir / "lambda" / "code" /
        base64.b64decode(code).hex(), runtime="python3.8", handler="app.handler", pinned=True,
        memory_kb=65536, timeout_s=12.0, encoding="binary", variables={"THINGNAME": "pi"},
        resource_access=[ResourceAccess("model", tmp_path / "ml" / "model", "ro")], access_sysfs=True,
        executable="app.py", exec_args="-v")
    assert (app.code_dir / "app.py").read_text().startswith("VERSION = 1")
    # Unset: on-demand, the API's 3 s timeout, JSON, no memory limit for a NoContainer function.
    assert (helper.pinned, helper.timeout_s, helper.encoding, helper.memory_kb, helper.version) == \
        (False, 3.0, "json", None, "1")

    # The alias is resolved at deployment time: moved to version 2, the next deployment runs version 2's code,
    # while the first deployment (read again, as a restarted runtime does) still runs version 1's.
    stored("update-alias", "--function-name", "app", "--name", "prod", "--function-version", "2")
    moved = source.functions(deploy())[0]
    assert moved.version == "2" and (moved.code_dir / "app.py").read_text().startswith("VERSION = 2")
    again = source.functions(store.deployment(group_id, first["DeploymentId"]))[0]
    assert again == app and (again.code_dir / "app.py").read_text().startswith("VERSION = 1")
    # A deployment record without recorded versions resolves the qualifiers when it is read.
    assert source.functions(store.create_deployment(group_id, version, "NewDeployment"))[0].version == "2"


def test_functions_that_cannot_be_deployed_fail_the_deployment_naming_them(stored, tmp_path):
    functions = {"Functions": [{"Id": "app", "FunctionArn": ARN + "app:prod", "FunctionConfiguration": {
        "Environment": {"ResourceAccessPolicies": [{"ResourceId": "camera"}]}}}]}
    group_id = group_with(stored, tmp_path, functions)
    assert "cannot be deployed as it is: [ResourceNotFound] Function 'app': ResourceAccessPolicies names resource " \
           "'camera'" in stored.stderr
    body = bad_request(stored, "create-deployment", "--group-id", group_id, "--deployment-type", "NewDeployment")
    assert [d["DetailedErrorCode"] for d in body["ErrorDetails"]] == ["ResourceNotFound"]
    assert "(its resources: model)" in body["ErrorDetails"][0]["DetailedErrorMessage"]
    assert not (tmp_path / "ml").exists()  # refused before any model was fetched

    store = GroupStore(stored.state_dir, "us-west-2")
    deployment = store.create_deployment(group_id, GroupStore.version(store.get(group_id))["Version"],
                                         "NewDeployment")
    with pytest.raises(FunctionResolutionError, match="ResourceAccessPolicies names resource 'camera'"):
        LocalDeployments(store, group_id, "us-west-2").functions(deployment)


def test_create_deployment_records_the_version_each_alias_names_then(stored, tmp_path):
    """`ggic create-deployment` (no runtime serving the group, no model to fetch) pins what `app:prod` names then;
    moving the alias afterwards changes what the next deployment runs, not this one."""
    definition = stored("create-function-definition", "--initial-version", json.dumps({"Functions": [
        {"Id": "app", "FunctionArn": ARN + "app:prod"}]}))["LatestVersionArn"]
    group_id = stored("create-group", "--name", "g", "--initial-version",
                      json.dumps({"FunctionDefinitionVersionArn": definition}))["Id"]
    deployed = stored("create-deployment", "--group-id", group_id, "--deployment-type", "NewDeployment")
    assert "`ggic run --group" in stored.stderr  # nothing runs the group yet: the deployment waits for it
    stored("update-alias", "--function-name", "app", "--name", "prod", "--function-version", "2")
    store = GroupStore(stored.state_dir, "us-west-2")
    record = store.deployment(group_id, deployed["DeploymentId"])
    assert record["FunctionVersions"] == {ARN + "app:prod": "1"}
    (app,) = LocalDeployments(store, group_id, "us-west-2").functions(record)
    assert app.version == "1" and (app.code_dir / "app.py").read_text().startswith("VERSION = 1")


VERSIONED_SOURCE = '''import os
VERSION = {version!r}


def handler(event, context):
    return {{"version": VERSION, "pid": os.getpid(), "n": event["n"]}}
'''


def test_an_alias_moved_and_redeployed_swaps_the_code_without_a_failed_call(tmp_path, monkeypatch):
    """Through the CLI alone: `app:prod` (pinned) runs under `ggic run --group`; a client calls it continuously
    while version 2 is published, the alias moved to it and the group deployed again. Every call is answered,
    version 1 until the switch and version 2 after it, and the old process ends."""
    from bench.harness import GGICRuntime
    from conftest import process_running
    from test_group_functions import calling_continuously, forget_greengrass_sdk

    cli = Lambda(tmp_path / "state")
    v1 = write_package(tmp_path, "v1.zip", {"app.py": VERSIONED_SOURCE.format(version="1")})
    cli("create-function", "--function-name", "app", "--runtime", "python3.8", "--handler", "app.handler",
        "--zip-file", f"fileb://{v1}", "--publish")
    cli("create-alias", "--function-name", "app", "--name", "prod", "--function-version", "1")
    definition = cli("create-function-definition", "--initial-version", json.dumps({"Functions": [
        {"Id": "app", "FunctionArn": ARN + "app:prod", "FunctionConfiguration": {"Pinned": True, "Timeout": 30}}]}))
    group_id = cli("create-group", "--name", "alias-swap", "--initial-version", json.dumps(
        {"FunctionDefinitionVersionArn": definition["LatestVersionArn"]}))["Id"]
    cli("create-deployment", "--group-id", group_id, "--deployment-type", "NewDeployment")

    with GGICRuntime(cli.state_dir, [], run_args=["--group", group_id]) as runtime:
        for name, value in runtime.client_env.items():
            monkeypatch.setenv(name, value)
        forget_greengrass_sdk()
        try:
            with calling_continuously("app", "prod") as answers:
                began = time.monotonic()
                while len(answers) < 5 and time.monotonic() - began < 60:
                    time.sleep(0.05)
                v2 = write_package(tmp_path, "v2.zip", {"app.py": VERSIONED_SOURCE.format(version="2")})
                cli("update-function-code", "--function-name", "app", "--zip-file", f"fileb://{v2}", "--publish")
                cli("update-alias", "--function-name", "app", "--name", "prod", "--function-version", "2")
                began = time.monotonic()
                cli("create-deployment", "--group-id", group_id, "--deployment-type", "NewDeployment")
                swap_s = time.monotonic() - began  # the command returns once the new deployment serves
                count = len(answers)
                while len(answers) < count + 5 and time.monotonic() - began < 3 * swap_s + 30:
                    time.sleep(0.05)
        finally:
            forget_greengrass_sdk()
        assert [answer for error, answer in answers if error] == []
        versions = [answer["version"] for _, answer in answers]
        switch = versions.index("2")
        assert switch >= 5 and set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}, versions
        old = answers[0][1]["pid"]
        deadline = time.monotonic() + 3 * swap_s + 35  # its drain: the function's Timeout plus grace
        while process_running(old) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not process_running(old)
