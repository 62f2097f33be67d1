"""The connector end to end: `ggic run` hosts the connector with a real ImageNet model, the documentation's usage
example Lambda and greengrasssdk Lambdas; requests travel over the real IPC."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.harness import GGICRuntime, connector_entry, ggic
from bench.material import REPO, ReferenceModel, as_jpeg, photo_files, photos

LAMBDAS = REPO / "tests" / "lambdas"
CONNECTOR_ARN = "arn:aws:lambda:us-west-2:aws:function:GG-ML-INF-image-classification-imageClassification"


@pytest.fixture(scope="module")
def test_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("test_img") / "test.jpg"
    path.write_bytes(as_jpeg(photo_files()["coffee"][1]))
    return path


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, efficientnet_model, test_image):
    state = tmp_path_factory.mktemp("state")
    rt = GGICRuntime(state, [connector_entry(efficientnet_model)],
                     lambdas=[str(REPO / "examples" / "image_classification_lambda.py"),
                              str(LAMBDAS / "echo.py"), str(LAMBDAS / "caller.py"), "tests.lambdas.failing",
                              str(LAMBDAS / "crashing.py")],
                     extra_env={"TEST_IMAGE": str(test_image)})
    with rt:
        yield rt


@pytest.fixture(scope="module")
def reference(efficientnet_model):
    return ReferenceModel(efficientnet_model, 0, (3, 224, 224))


@pytest.fixture
def ml(runtime, sdk_env):
    sdk_env(runtime)
    import greengrass_machine_learning_sdk

    return greengrass_machine_learning_sdk


def infer(ml, body: bytes, content_type: str = "image/jpeg", service: str = "imageClassification") -> str:
    response = ml.client("inference").invoke_inference_service(
        AlgoType="image-classification", ServiceName=service, ContentType=content_type, Body=body)
    assert response["ContentType"] == "application/json"
    return response["Body"].read().decode("utf-8")


def parse(text: str) -> np.ndarray:
    assert text.startswith("[") and text.endswith("]") and " " not in text
    return np.array([np.float32(value) for value in text[1:-1].split(",")], dtype=np.float32)


def test_usage_example_lambda_runs_unmodified_and_gets_probabilities(runtime):
    deadline = time.monotonic() + 60
    line = ""
    while time.monotonic() < deadline and not line:
        log = runtime.log_of("image_classification_lambda")
        line = next((l for l in log.splitlines() if "predictions: [" in l), "")
        time.sleep(0.2)
    assert line, f"the usage example logged no predictions:\n{runtime.log_of('image_classification_lambda')}"
    probabilities = parse(line.split("predictions: ", 1)[1])
    assert probabilities.shape == (1000,)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-3
    assert int(probabilities.argmax()) == 967  # espresso


@pytest.mark.parametrize("name", sorted(photo_files()))
def test_probabilities_equal_a_direct_mxnet_forward(ml, reference, name):
    content_type, body = photos()[name]
    served = parse(infer(ml, body, content_type))
    direct = reference.probabilities(body)
    assert served.shape == direct.shape == (1000,)
    assert float(np.abs(served - direct.astype(np.float32)).max()) <= 1e-6


def test_answer_round_trips_float32_exactly(ml, reference):
    content_type, body = photos()["chelsea"]
    text = infer(ml, body, content_type)
    values = text[1:-1].split(",")
    direct = reference.probabilities(body).astype(np.float32)
    # Each value reads back as the very float32 MXNet produced (no digits lost to formatting).
    assert np.array_equal(np.array(values, dtype=np.float32), direct)


@pytest.mark.parametrize("name, classes", [("coffee", {967}), ("chelsea", set(range(281, 286))),
                                           ("grace_hopper", {652})])
def test_real_photos_get_their_imagenet_class(ml, name, classes):
    content_type, body = photos()[name]
    assert int(parse(infer(ml, body, content_type)).argmax()) in classes


@pytest.mark.parametrize("content_type, body, reason", [
    ("image/jpeg", b"", "Body is empty"),
    ("image/gif", b"GIF89a\x01\x00\x01\x00", "not supported"),
    ("", b"\xff\xd8\xff\xe0", "ContentType is missing"),
    ("image/jpeg", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "looks like PNG"),
    ("image/png", b"hello, this is text", "does not start with any known image signature"),
    ("image/jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 64, "could not be decoded"),
])
def test_bad_input_is_refused_with_the_reason_and_the_service_keeps_serving(ml, content_type, body, reason):
    with pytest.raises(ml.GreengrassInferenceException) as refused:
        infer(ml, body, content_type)
    assert reason in str(refused.value)
    content_type, good = photos()["coffee"]
    assert int(parse(infer(ml, good, content_type)).argmax()) == 967


def test_unknown_service_is_a_dependency_error(ml):
    with pytest.raises(ml.GreengrassDependencyException) as missing:
        infer(ml, photos()["coffee"][1], "image/png", service="noSuchService")
    assert "not deployed" in str(missing.value)


def test_requests_without_the_right_token_are_refused(runtime):
    body = photos()["coffee"][1]
    for headers in ({}, {"Authorization": "not-the-token"}):
        connection = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=10)
        connection.request("POST", f"/2016-11-01/functions/{CONNECTOR_ARN}", body=body, headers=headers)
        response = connection.getresponse()
        assert response.status == 401
        assert "Authorization token" in json.loads(response.read())["errorMessage"]
        connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=10)
    connection.request("POST", f"/2016-11-01/functions/{CONNECTOR_ARN}", body=body,
                       headers={"Authorization": runtime.client_env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]})
    response = connection.getresponse()
    response.read()
    assert response.status == 200 and response.getheader("X-Amz-InvocationId")


def test_env_file_and_state_dir_are_private(runtime):
    assert (runtime.state_dir / "env").stat().st_mode & 0o077 == 0
    assert runtime.state_dir.stat().st_mode & 0o077 == 0


GREENGRASSSDK_CALL = r"""
import base64, json, os, sys
import greengrasssdk
client = greengrasssdk.client('lambda')
arn = 'arn:aws:lambda:{}:{}:function:{}'.format(os.environ['AWS_REGION'], os.environ['MY_FUNCTION_ARN'].split(':')[4], sys.argv[1])
context = base64.b64encode(json.dumps({'custom': {'subject': 'tests'}}).encode())
response = client.invoke(FunctionName=arn, Payload=sys.argv[2], ClientContext=context, InvocationType=sys.argv[3])
payload = response['Payload']
payload = payload.read() if hasattr(payload, 'read') else payload
print(json.dumps({'payload_type': type(response['Payload']).__name__, 'function_error': response['FunctionError'],
                  'payload': json.loads(payload) if payload else None}))
"""


def run_greengrasssdk(runtime, function_name: str, event: dict = {"n": 7},
                      invocation_type: str = "RequestResponse") -> dict:
    result = subprocess.run([sys.executable, "-c", GREENGRASSSDK_CALL, function_name, json.dumps(event),
                             invocation_type],
                            env=runtime.client_env,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_unmodified_greengrasssdk_lambda_invoke_reaches_a_hosted_lambda(runtime):
    import greengrasssdk

    assert greengrasssdk.__file__  # the PyPI package, not ours
    answer = run_greengrasssdk(runtime, "echo")
    assert answer["payload_type"] == "StreamingBody"  # a real answer, not greengrasssdk's silent mock
    assert answer["function_error"] == ""
    echo = answer["payload"]
    assert echo["event"] == {"n": 7}
    assert echo["custom"] == {"subject": "tests"}
    assert echo["function_name"] == "echo"
    assert len(echo["aws_request_id"]) == 36


def test_event_invocations_are_delivered_without_waiting_for_an_answer(runtime):
    answer = run_greengrasssdk(runtime, "echo", {"event-marker": 4242}, invocation_type="Event")
    assert answer == {"payload_type": "bytes", "function_error": "", "payload": None}
    deadline = time.monotonic() + 30
    while '"event-marker": 4242' not in runtime.log_of("echo") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 'echo received {"event-marker": 4242}' in runtime.log_of("echo")


def test_hosted_lambda_calls_another_with_greengrasssdk(runtime):
    answer = run_greengrasssdk(runtime, "caller")
    assert answer["function_error"] == ""
    chained = answer["payload"]
    assert chained["payload_type"] == "StreamingBody"
    assert chained["echo"]["event"] == {"via": "caller", "original": {"n": 7}}


def test_handler_exception_is_a_handled_function_error(runtime):
    answer = run_greengrasssdk(runtime, "failing")
    assert answer["function_error"] == "Handled"
    assert "this handler always fails" in answer["payload"]["errorMessage"]


def test_ggic_invoke_prints_top_k_with_labels(runtime, tmp_path):
    from examples.models.efficientnet_lite0 import imagenet_labels

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(imagenet_labels()))
    image = tmp_path / "coffee.png"
    image.write_bytes(photos()["coffee"][1])
    result = ggic("invoke", "--state-dir", str(runtime.state_dir), "--service-name", "imageClassification",
                  "--content-type", "image/png", "--body", f"fileb://{image}", "--labels", str(labels),
                  "--top-k", "3")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3
    assert "967" in lines[0] and "espresso" in lines[0]


def test_a_function_process_that_dies_answers_unhandled_and_is_restarted(runtime):
    before = run_greengrasssdk(runtime, "crashing", {})["payload"]["pid"]
    crashed = run_greengrasssdk(runtime, "crashing", {"crash": True})
    assert crashed["function_error"] == "Unhandled"
    assert "ended unexpectedly (exit code 3) while handling this request" in crashed["payload"]["errorMessage"]
    after = run_greengrasssdk(runtime, "crashing", {})  # queued until the restarted process takes it
    assert after["function_error"] == ""
    assert after["payload"]["pid"] != before


def test_health_check_api_reports_every_worker_like_a_core(runtime):
    connection = http.client.HTTPConnection("127.0.0.1", runtime.port, timeout=10)
    connection.request("GET", "/2016-11-01/health/workers")  # no token, as in the Greengrass documentation
    response = connection.getresponse()
    assert response.status == 200
    workers = {w["FuncArn"]: w for w in json.loads(response.read())}
    assert workers[CONNECTOR_ARN]["WorkerState"] in ("Waiting", "Working")
    assert workers[CONNECTOR_ARN]["ProcessId"] > 0 and len(workers[CONNECTOR_ARN]["WorkerId"]) == 36
    assert len(workers) == 6
    echo = next(arn for arn in workers if arn.endswith(":function:echo"))
    connection.request("POST", "/2016-11-01/health/workers",
                       body=json.dumps({"FuncArns": [echo + ":$LATEST", "some-malformed-arn"]}))
    answer = json.loads(connection.getresponse().read())
    assert [w["FuncArn"] for w in answer["Workers"]] == [echo]
    assert answer["InvalidArns"] == ["some-malformed-arn"]
    connection.request("POST", "/2016-11-01/health/workers", body=b"[1, 2]")
    refused = connection.getresponse()
    assert refused.status == 400 and "FuncArns" in json.loads(refused.read())["errorMessage"]
