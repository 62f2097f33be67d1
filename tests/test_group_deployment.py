"""Group deployment, locally: ML resources with a SageMaker source, groups, deployments, and a model swap under
load. Real `ggic` processes, a real moto_server (SageMaker + S3), the ML SDK over the runtime's real IPC."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from test_end_to_end import run_greengrasssdk

from bench.harness import REPO, GGICRuntime, connector_entry, ggic
from bench.material import DIGITS_ARCHIVE
from conftest import process_running
from examples.models.digits import digit_png, split
from sagemaker_jobs import aws_env, create_job, shifted_digits_files, tar_gz

CONNECTOR_FUNCTION = "GG-ML-INF-image-classification-digits"


class Group:
    """`ggic` group commands in one state directory, against moto."""

    def __init__(self, state_dir: Path, endpoint: str) -> None:
        self.state_dir = state_dir
        self.env = dict(os.environ, **aws_env(endpoint))

    def run(self, *args: str, expect: int = 0) -> dict:
        result = ggic(*args, "--state-dir", str(self.state_dir), env=self.env)
        self.stderr = result.stderr.decode()
        assert result.returncode == expect, self.stderr
        return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else {}

    def bad_request(self, *args: str) -> dict:
        """Run a command the service must refuse; its BadRequestException body."""
        self.run(*args, expect=254)
        assert "An error occurred (BadRequestException) when calling the " in self.stderr
        return json.loads(self.stderr[self.stderr.index("\n{") + 1:])

    def resources(self, destination: Path, job_arn: str, resource_id: str = "digits-model") -> str:
        version = {"Resources": [{"Id": resource_id, "Name": "digits", "ResourceDataContainer": {
            "SageMakerMachineLearningModelResourceData": {"DestinationPath": str(destination),
                                                          "SageMakerJobArn": job_arn}}}]}
        return self.run("create-resource-definition", "--name", "models",
                        "--initial-version", json.dumps(version))["LatestVersionArn"]

    def connectors(self, destination: Path, job_arn: str, resource_id: str = "digits-model") -> str:
        entry = connector_entry(destination, service_name="digits", job_arn=job_arn, MLModelResourceId=resource_id)
        return self.run("create-connector-definition", "--name", "connectors",
                        "--initial-version", json.dumps({"Connectors": [entry]}))["LatestVersionArn"]


def codes(body: dict) -> list:
    return [detail["DetailedErrorCode"] for detail in body["ErrorDetails"]]


def test_definitions_that_cannot_be_deployed_are_refused_with_the_reason(tmp_path, moto_endpoint):
    group = Group(tmp_path / "state", moto_endpoint)
    job = create_job(moto_endpoint, "group-checks", DIGITS_ARCHIVE.read_bytes())
    other_job = job.replace("group-checks", "another-job")

    body = group.bad_request("create-resource-definition", "--initial-version", json.dumps({"Resources": [
        {"Id": "a", "Name": "a", "ResourceDataContainer": {"S3MachineLearningModelResourceData": {
            "DestinationPath": "/ml/a", "S3Uri": "s3://bucket/model.tar.gz"}}},
        {"Id": "b", "Name": "b", "ResourceDataContainer": {"SageMakerMachineLearningModelResourceData": {
            "DestinationPath": "ml/relative", "SageMakerJobArn": "arn:aws:s3:::not-a-job"}}},
        {"Id": "b", "Name": "c", "ResourceDataContainer": {"SageMakerMachineLearningModelResourceData": {
            "DestinationPath": "/ml/c", "SageMakerJobArn": job}}},
        {"Id": "d", "Name": "d", "ResourceDataContainer": {"SageMakerMachineLearningModelResourceData": {
            "DestinationPath": "/ml/c/", "SageMakerJobArn": job}}}]}))
    assert sorted(codes(body)) == ["DuplicateDestinationPath", "DuplicateResourceId", "InvalidParameterValue",
                                   "InvalidRequest", "UnsupportedResourceType"]
    messages = "\n".join(d["DetailedErrorMessage"] for d in body["ErrorDetails"])
    assert ("Request field InitialVersion.Resources[1].ResourceDataContainer.SageMakerMachineLearningModelResourceData"
            ".DestinationPath value 'ml/relative' does not match pattern ^/.*$") in messages
    assert "Resource 'a': S3MachineLearningModelResourceData is a Greengrass resource type ggic does not deploy" \
           in messages
    assert "Resource 'b': SageMakerJobArn 'arn:aws:s3:::not-a-job' is not a SageMaker training-job ARN" in messages
    assert "Resource 'd': DestinationPath '/ml/c/' is also the destination of resource 'b'" in messages

    missing_arn = ("arn:aws:greengrass:us-west-2:000000000000:/greengrass/definition/connectors/"
                   "0f0f0f0f/versions/1a1a1a1a")
    body = group.bad_request("create-group", "--name", "g", "--initial-version",
                             json.dumps({"ConnectorDefinitionVersionArn": missing_arn, "Bogus": "x"}))
    assert codes(body) == ["InvalidRequest"]
    body = group.bad_request("create-group", "--name", "g", "--initial-version",
                             json.dumps({"ConnectorDefinitionVersionArn": missing_arn}))
    assert codes(body) == ["DefinitionVersionNotFound"]
    assert "is not the version ARN of a connector definition" in body["ErrorDetails"][0]["DetailedErrorMessage"]

    # The resource is at /ml/digits from job group-checks; the connector names another resource, then another
    # path and job. create-group warns; create-deployment refuses.
    resources = group.resources(tmp_path / "ml" / "digits", job)
    wrong_id = group.connectors(tmp_path / "ml" / "digits", job, resource_id="no-such-resource")
    created = group.run("create-group", "--name", "g", "--initial-version", json.dumps(
        {"ConnectorDefinitionVersionArn": wrong_id, "ResourceDefinitionVersionArn": resources}))
    assert "warning: this group version cannot be deployed as it is: [ResourceNotFound]" in group.stderr
    body = group.bad_request("create-deployment", "--group-id", created["Id"], "--deployment-type", "NewDeployment")
    assert codes(body) == ["ResourceNotFound"]
    assert body["ErrorDetails"][0]["DetailedErrorMessage"] == (
        "Connector 'MyImageClassificationConnector': MLModelResourceId 'no-such-resource' names no ML resource of "
        "the group version (its ML resources: digits-model)")

    elsewhere = group.connectors(tmp_path / "elsewhere", other_job)
    group.run("create-group-version", "--group-id", "g", "--connector-definition-version-arn", elsewhere,
              "--resource-definition-version-arn", resources)
    body = group.bad_request("create-deployment", "--group-id", "g", "--deployment-type", "NewDeployment")
    assert codes(body) == ["DestinationPathMismatch", "TrainingJobMismatch"]
    assert f"MLModelDestinationPath '{tmp_path / 'elsewhere'}' is not the DestinationPath " \
           f"'{tmp_path / 'ml' / 'digits'}' of ML resource 'digits-model'" in body["ErrorDetails"][0][
               "DetailedErrorMessage"]

    no_resources = group.run("create-group-version", "--group-id", "g", "--connector-definition-version-arn",
                             elsewhere)
    body = group.bad_request("create-deployment", "--group-id", "g", "--group-version-id", no_resources["Version"],
                             "--deployment-type", "NewDeployment")
    assert "(its ML resources: none: the group version binds no resource definition)" in \
           body["ErrorDetails"][0]["DetailedErrorMessage"]
    assert not (tmp_path / "ml").exists()  # nothing was fetched for a refused deployment


class Client:
    """Threads invoking the connector back to back through the ML SDK, recording every answer and failure."""

    def __init__(self, threads: int = 2) -> None:
        digits = load_digits()
        held_out = split()[1][:20]
        self.requests = [(digit_png(digits.images[i]), int(digits.target[i])) for i in held_out]
        self.answers: list = []   # (sent at, label, argmax)
        self.failures: list = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(threads)]

    def _loop(self, offset: int) -> None:
        import greengrass_machine_learning_sdk as ml

        client = ml.client("inference")
        index = offset
        while not self._stop.is_set():
            png, label = self.requests[index % len(self.requests)]
            index += 1
            sent = time.monotonic()
            try:
                response = client.invoke_inference_service(AlgoType="image-classification", ServiceName="digits",
                                                            ContentType="image/png", Body=png)
                text = response["Body"].read().decode()
                self.answers.append((sent, label, int(np.fromstring(text[1:-1], sep=",").argmax())))
            except Exception as exc:  # noqa: BLE001 (any failure is what this test counts)
                self.failures.append((sent, repr(exc)))

    def wait_for(self, count: int, after: float = 0.0, timeout: float = 60.0) -> None:
        """Until `count` answers to requests sent after `after` (time.monotonic) have come back."""
        deadline = time.monotonic() + timeout
        while sum(sent > after for sent, _, _ in list(self.answers)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout} s: {self.failures[:3]}"
            assert not self.failures, self.failures[:3]
            time.sleep(0.05)

    def __enter__(self) -> "Client":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def _generation(status: dict, hosting: str) -> int:
    """What runs a connector generation: its inference worker when hosted natively (in the runtime's process),
    its function process when hosted as a Lambda."""
    return int(status["supervisor"]["worker"]["pid"] if hosting == "native" else status["pid"])


@pytest.mark.parametrize("hosting", ["native", "lambda"])
def test_a_deployment_swaps_the_model_without_a_failed_request(tmp_path, moto_endpoint, sdk_env, hosting):
    group = Group(tmp_path / "state", moto_endpoint)
    destination = tmp_path / "ml" / "digits"
    first_job = create_job(moto_endpoint, "group-digits", DIGITS_ARCHIVE.read_bytes())
    second_job = create_job(moto_endpoint, "group-digits-shifted", tar_gz(shifted_digits_files(tmp_path)))

    created = group.run("create-group", "--name", "line-1", "--initial-version", json.dumps({
        "ConnectorDefinitionVersionArn": group.connectors(destination, first_job),
        "ResourceDefinitionVersionArn": group.resources(destination, first_job)}))
    first = group.run("create-deployment", "--group-id", "line-1", "--deployment-type", "NewDeployment")
    assert first["DeploymentArn"].startswith(created["Arn"] + "/deployments/")
    assert "`ggic run --group" in group.stderr and "will run this deployment" in group.stderr
    assert json.loads((destination / ".ggic-model.json").read_text())["TrainingJobName"] == "group-digits"

    runtime = GGICRuntime(group.state_dir, [], extra_env=aws_env(moto_endpoint),
                          run_args=["--group", "line-1", "--connector-hosting", hosting])
    with runtime:
        status = group.run("get-deployment-status", "--group-id", "line-1", "--deployment-id", first["DeploymentId"])
        assert status["DeploymentStatus"] == "Success"
        old = runtime.connector_status()
        assert old["ready"], old
        old_generation = _generation(old, hosting)
        sdk_env(runtime)
        with Client() as client:
            client.wait_for(20)
            group.run("create-group-version", "--group-id", "line-1",
                      "--connector-definition-version-arn", group.connectors(destination, second_job),
                      "--resource-definition-version-arn", group.resources(destination, second_job))
            deploy_started = time.monotonic()
            second = group.run("create-deployment", "--group-id", "line-1", "--deployment-type", "NewDeployment")
            deploy_done = time.monotonic()
            assert f"deployment {second['DeploymentId']} is serving" in group.stderr
            client.wait_for(20, after=deploy_done)

        assert client.failures == []
        before = [(label, answer) for sent, label, answer in client.answers if sent < deploy_started]
        after = [(label, answer) for sent, label, answer in client.answers if sent > deploy_done]
        assert len(before) >= 20 and len(after) >= 20, (len(before), len(after))
        # The first model answers the digit, the second one the digit + 1: every answer came from one of them.
        assert sum(answer == label for label, answer in before) >= 0.9 * len(before)
        assert sum(answer == (label + 1) % 10 for label, answer in after) >= 0.9 * len(after)

        status = group.run("get-deployment-status", "--group-id", "line-1", "--deployment-id", second["DeploymentId"])
        assert status["DeploymentStatus"] == "Success" and status["ErrorMessage"] == ""
        assert json.loads((destination / ".ggic-model.json").read_text())["TrainingJobName"] == "group-digits-shifted"
        state = json.loads((group.state_dir / "runtime.json").read_text())
        assert state["group"]["DeploymentId"] == second["DeploymentId"]
        new = runtime.connector_status()
        assert new["ready"] and _generation(new, hosting) != old_generation
        assert (new["pid"] == old["pid"] == runtime.process.pid) == (hosting == "native")
        # The old generation's processes end inside its retirement, which logs once it has finished retiring it.
        stopped = (f"stopped the previous generation arn:aws:lambda:us-west-2:aws:function:{CONNECTOR_FUNCTION}:"
                   f"{first['DeploymentId']}")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (process_running(old_generation)
                                               or stopped not in runtime.output()):
            time.sleep(0.1)
        assert not process_running(old_generation), "the previous generation still runs"
        assert stopped in runtime.output()
        assert len([entry for entry in runtime.health()["functions"] if entry["connector"]]) == 1


def test_a_deployment_whose_model_fails_to_load_keeps_the_old_one_serving(tmp_path, moto_endpoint, sdk_env):
    group = Group(tmp_path / "state", moto_endpoint)
    destination = tmp_path / "ml" / "digits"
    job = create_job(moto_endpoint, "group-keep", DIGITS_ARCHIVE.read_bytes())
    group.run("create-group", "--name", "line-2", "--initial-version", json.dumps({
        "ConnectorDefinitionVersionArn": group.connectors(destination, job),
        "ResourceDefinitionVersionArn": group.resources(destination, job)}))
    group.run("create-deployment", "--group-id", "line-2", "--deployment-type", "NewDeployment")
    run_args = ["--group", "line-2", "--lambda", str(REPO / "tests" / "lambdas" / "echo.py")]
    with GGICRuntime(group.state_dir, [], extra_env=aws_env(moto_endpoint), run_args=run_args) as rt:
        pid = rt.connector_status()["pid"]
        # The same model with a memory limit it cannot fit in: the new generation fails to start.
        entry = connector_entry(destination, service_name="digits", job_arn=job, MLModelResourceId="digits-model",
                                LocalInferenceServiceMemoryLimitKB="1000")
        tiny = group.run("create-connector-definition", "--initial-version",
                         json.dumps({"Connectors": [entry]}))["LatestVersionArn"]
        group.run("create-group-version", "--group-id", "line-2", "--connector-definition-version-arn", tiny,
                  "--resource-definition-version-arn", group.resources(destination, job))
        group.run("create-deployment", "--group-id", "line-2", "--deployment-type", "NewDeployment", expect=1)
        assert "failed: connector function arn:aws:lambda:us-west-2:aws:function:" \
               f"{CONNECTOR_FUNCTION}:" in group.stderr
        assert "LocalInferenceServiceMemoryLimitKB" in group.stderr
        assert rt.connector_status()["pid"] == pid and rt.connector_status()["ready"]
        sdk_env(rt)
        import greengrass_machine_learning_sdk as ml

        digits = load_digits()
        response = ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName="digits", ContentType="image/png",
            Body=digit_png(digits.images[split()[1][0]]))
        assert response["Body"].read().count(b",") == 9
        assert run_greengrasssdk(rt, "echo")["payload"]["event"] == {"n": 7}  # user Lambdas run beside the group


def test_a_deployment_brings_its_subscriptions(tmp_path, moto_endpoint, mqtt_broker, sdk_env):
    """The group version's subscription definition routes publishes; the next deployment's replaces it at the switch
    (for the cloud side too), and one this runtime cannot route fails with the reason, the old one kept."""
    from test_publishing import LAMBDAS, PUBLISHER, RECORDER, publish, wait_records

    from mosquitto import Subscriber

    group = Group(tmp_path / "state", moto_endpoint)
    destination = tmp_path / "ml" / "digits"
    job = create_job(moto_endpoint, "group-routes", DIGITS_ARCHIVE.read_bytes())
    connectors, resources = group.connectors(destination, job), group.resources(destination, job)

    def subscriptions(*entries: dict) -> str:
        version = {"Subscriptions": [dict(entry, Id=f"s{n}") for n, entry in enumerate(entries)]}
        return group.run("create-subscription-definition", "--initial-version",
                         json.dumps(version))["LatestVersionArn"]

    def deploy(routes: str, expect: int = 0) -> None:
        group.run("create-group-version", "--group-id", "line-3", "--connector-definition-version-arn", connectors,
                  "--resource-definition-version-arn", resources, "--subscription-definition-version-arn", routes)
        group.run("create-deployment", "--group-id", "line-3", "--deployment-type", "NewDeployment", expect=expect)

    group.run("create-group", "--name", "line-3", "--initial-version", json.dumps({
        "ConnectorDefinitionVersionArn": connectors, "ResourceDefinitionVersionArn": resources,
        "SubscriptionDefinitionVersionArn": subscriptions(
            {"Source": PUBLISHER, "Subject": "ggic/group/v1/#", "Target": "cloud"})}))
    group.run("create-deployment", "--group-id", "line-3", "--deployment-type", "NewDeployment")
    recorded = tmp_path / "recorded.jsonl"
    run_args = ["--group", "line-3", "--lambda", str(LAMBDAS / "publisher.py"), "--lambda",
                str(LAMBDAS / "recorder.py")]
    cloud = Subscriber(mqtt_broker, "ggic/group/#")
    try:
        with GGICRuntime(group.state_dir, [], extra_env=dict(aws_env(moto_endpoint), RECORDER_FILE=str(recorded)),
                         run_args=run_args, mqtt_broker=mqtt_broker) as runtime:
            assert publish(runtime, {"topic": "ggic/group/v1/a", "payload": "one"}) == [None]
            assert cloud.take(1) == [("ggic/group/v1/a", b"one")]

            deploy(subscriptions({"Source": PUBLISHER, "Subject": "ggic/group/v2/#", "Target": "cloud"},
                                 {"Source": "cloud", "Subject": "ggic/inbound/#", "Target": RECORDER}))
            assert publish(runtime, {"topic": "ggic/group/v1/a", "payload": "gone"},
                           {"topic": "ggic/group/v2/b", "payload": "two"}) == [None, None]
            assert cloud.take(1) == [("ggic/group/v2/b", b"two")]  # v1 is no longer routed
            deadline = time.monotonic() + 30
            while not runtime.health()["mqtt"]["subscribed"] and time.monotonic() < deadline:
                time.sleep(0.1)
            cloud.publish("ggic/inbound/door", b'{"open": true}')
            [record] = wait_records(recorded, lambda r: r["source"] == "cloud")
            assert (record["subject"], record["event"]) == ("ggic/inbound/door", {"open": True})

            nowhere = "arn:aws:lambda:us-west-2:000000000000:function:not-here"
            deploy(subscriptions({"Source": PUBLISHER, "Subject": "ggic/group/v3", "Target": nowhere}), expect=1)
            assert "not-here is not in this runtime's --lambda functions" in group.stderr
            assert publish(runtime, {"topic": "ggic/group/v2/c", "payload": "still"}) == [None]
            assert cloud.take(1) == [("ggic/group/v2/c", b"still")]  # the previous deployment still routes
    finally:
        cloud.close()
