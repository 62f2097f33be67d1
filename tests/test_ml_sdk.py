"""Tests of the Greengrass ML SDK packages under ml_sdk/: client factory, argument checks, StreamingBody,
function-ARN parsing, interface versions, and the core-side shapes that real SDK releases read.  Argument errors are raised before any I/O, so no runtime runs here;
the one call that gets that far goes to a closed port."""

from __future__ import annotations

import ast

import greengrass_machine_learning_sdk as ml
import numpy as np
import pytest
from greengrass_common.function_arn_fields import FunctionArnFields
from greengrass_common.parse_version import parse_version
from greengrass_ipc_python_sdk.ipc_client import IPCClient, _encode_payload
from greengrass_ipc_python_sdk.ipc_facade import GreengrassServiceCallOutput, GreengrassServiceMessage
from greengrass_machine_learning_sdk import feedback, inference
from greengrass_machine_learning_sdk.client import UnrecognizedClientTypeError
from greengrass_machine_learning_sdk.exception import MissingEnvironmentError
from greengrass_machine_learning_sdk.streaming_body import StreamingBody

from bench.material import REPO
from conftest import free_port

INFERENCE_OP = "InferenceClient.invoke_inference_service"
FEEDBACK_OP = "Feedback.Client.publish"
NAME_RULE = "must match ^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$ (letters, digits and hyphens, 2-63 characters)"


@pytest.fixture
def core_env(monkeypatch):
    """What a Greengrass core sets for a Lambda, with the IPC port pointing at nothing."""
    port = free_port()
    monkeypatch.setenv("GGC_MAX_INTERFACE_VERSION", "1.5")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    monkeypatch.setenv("GG_DAEMON_PORT", str(port))
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "test-token")
    return port


def missing(name: str, operation: str = INFERENCE_OP) -> str:
    return f'"{name}" argument of {operation} is a required argument but was not provided.'


# --- client factory and interface version -------------------------------------------------------------------

def test_inference_client_with_interface_1_5(core_env):
    assert isinstance(ml.client("inference"), inference.Client)


def test_feedback_client_with_interface_1_5(core_env):
    assert isinstance(ml.client("feedback"), feedback.Client)


@pytest.mark.parametrize("version", ["1.2", "1.10", "1.5.0", " 1.3 "])
def test_new_enough_interfaces_are_accepted(core_env, monkeypatch, version):
    monkeypatch.setenv("GGC_MAX_INTERFACE_VERSION", version)
    assert isinstance(ml.client("inference"), inference.Client)


@pytest.mark.parametrize("client_type", ["inference", "feedback"])
def test_interface_1_1_is_too_old(core_env, monkeypatch, client_type):
    monkeypatch.setenv("GGC_MAX_INTERFACE_VERSION", "1.1")
    with pytest.raises(ValueError) as info:
        ml.client(client_type)
    assert str(info.value) == ("Interface version incompatibility: the ML SDK needs Greengrass core interface 1.2 "
                               "(major 1, minor >= 2) but the core offers 1.1.")


@pytest.mark.parametrize("version", ["2.0", "0.9"])
def test_other_major_version_is_refused(core_env, monkeypatch, version):
    monkeypatch.setenv("GGC_MAX_INTERFACE_VERSION", version)
    with pytest.raises(ValueError, match=f"but the core offers {version}"):
        ml.client("inference")


@pytest.mark.parametrize("value", [None, ""])
def test_unset_interface_version(core_env, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("GGC_MAX_INTERFACE_VERSION")
    else:
        monkeypatch.setenv("GGC_MAX_INTERFACE_VERSION", value)
    with pytest.raises(ValueError) as info:
        ml.client("inference")
    message = str(info.value)
    assert message.startswith("Interface version incompatibility")
    assert "needs Greengrass core interface 1.2" in message
    assert "GGC_MAX_INTERFACE_VERSION is not set" in message


def test_unreadable_interface_version(core_env, monkeypatch):
    monkeypatch.setenv("GGC_MAX_INTERFACE_VERSION", "one.five")
    with pytest.raises(ValueError) as info:
        ml.client("feedback")
    assert "GGC_MAX_INTERFACE_VERSION is unreadable" in str(info.value)
    assert "'one.five'" in str(info.value)


@pytest.mark.parametrize("client_type", ["Inference", "lambda", "", "sagemaker-runtime"])
def test_unknown_client_type(core_env, client_type):
    with pytest.raises(UnrecognizedClientTypeError) as info:
        ml.client(client_type)
    assert str(info.value) == f"Client type {client_type} is not recognized."


def test_bad_daemon_port_is_reported_when_client_is_built(core_env, monkeypatch):
    monkeypatch.setenv("GG_DAEMON_PORT", "eight-thousand")
    with pytest.raises(ValueError, match="GG_DAEMON_PORT must be a port number, got 'eight-thousand'"):
        ml.client("inference")


# --- invoke_inference_service argument checks ---------------------------------------------------------------

def test_service_name_is_checked_first(core_env):
    client = ml.client("inference")
    with pytest.raises(ValueError) as info:
        client.invoke_inference_service()
    assert str(info.value) == missing("ServiceName")
    with pytest.raises(ValueError) as info:
        client.invoke_inference_service(AlgoType="image-classification", ContentType="image/png")
    assert str(info.value) == missing("ServiceName")


def test_body_is_checked_second(core_env):
    client = ml.client("inference")
    with pytest.raises(ValueError) as info:
        client.invoke_inference_service(ServiceName="svc")
    assert str(info.value) == missing("Body")
    with pytest.raises(ValueError) as info:
        client.invoke_inference_service(ServiceName="svc", AlgoType="image-classification")
    assert str(info.value) == missing("Body")


def test_algo_type_is_checked_third(core_env):
    with pytest.raises(ValueError) as info:
        ml.client("inference").invoke_inference_service(ServiceName="svc", Body=b"x", ContentType="image/jpeg")
    assert str(info.value) == missing("AlgoType")


def test_none_counts_as_provided_but_fails_the_name_check(core_env):
    with pytest.raises(ValueError) as info:
        ml.client("inference").invoke_inference_service(ServiceName=None, Body=b"x", AlgoType="image-classification")
    assert str(info.value) == f'"ServiceName" {NAME_RULE}, got None.'


BAD_NAMES = ["a", "-leading-hyphen", "has_underscore", "has space", "dotted.name", "x" * 64, "", "émoji", 123]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_service_name(core_env, name):
    with pytest.raises(ValueError) as info:
        ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName=name, Body=b"x", ContentType="image/jpeg")
    assert str(info.value) == f'"ServiceName" {NAME_RULE}, got {name!r}.'


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_algo_type(core_env, name):
    with pytest.raises(ValueError) as info:
        ml.client("inference").invoke_inference_service(AlgoType=name, ServiceName="svc", Body=b"x")
    assert str(info.value) == f'"AlgoType" {NAME_RULE}, got {name!r}.'


@pytest.mark.parametrize("body", [123, {"image": "x"}, ["x"], 1.5])
def test_body_must_be_bytes_like(core_env, body):
    with pytest.raises(ValueError) as info:
        ml.client("inference").invoke_inference_service(AlgoType="image-classification", ServiceName="svc",
                                                        Body=body)
    assert str(info.value) == f'"Body" must be bytes, bytearray, str or a readable file object, not {type(body).__name__}.'


def test_missing_region_is_reported(core_env, monkeypatch):
    client = ml.client("inference")
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(MissingEnvironmentError) as info:
        client.invoke_inference_service(AlgoType="image-classification", ServiceName="svc", Body=b"x")
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("AWS_REGION is not set")


@pytest.mark.parametrize("name", ["ab", "x" * 63, "A1-b2", "0-leading-digit"])
def test_valid_call_without_runtime_is_a_dependency_error(core_env, name):
    with pytest.raises(ml.GreengrassDependencyException) as info:
        ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName=name, Body=b"\x89PNG\r\n\x1a\n", ContentType="image/png")
    message = str(info.value)
    assert "unreachable" in message
    assert f"localhost:{core_env}" in message


@pytest.mark.parametrize("body", [b"bytes", bytearray(b"bytes"), memoryview(b"bytes"), "text"],
                         ids=["bytes", "bytearray", "memoryview", "str"])
def test_bytes_like_bodies_reach_the_network(core_env, body):
    with pytest.raises(ml.GreengrassDependencyException, match="unreachable"):
        ml.client("inference").invoke_inference_service(AlgoType="image-classification", ServiceName="svc",
                                                         Body=body)


def test_service_address():
    assert inference.service_address("eu-west-1", "image-classification", "my-svc") == \
        "arn:aws:lambda:eu-west-1:aws:function:GG-ML-INF-image-classification-my-svc"
    fields = FunctionArnFields(inference.service_address("eu-west-1", "image-classification", "my-svc"))
    assert (fields.account_id, fields.region, fields.qualifier) == ("aws", "eu-west-1", None)


def test_trailing_newline_in_service_name_is_refused(core_env):
    with pytest.raises(ValueError, match='"ServiceName" must match'):
        ml.client("inference").invoke_inference_service(AlgoType="image-classification", ServiceName="svc\n",
                                                         Body=b"x")


# --- StreamingBody ------------------------------------------------------------------------------------------

def test_streaming_body_read_all():
    body = StreamingBody(b'[0.1, 0.9]')
    assert body.content_length == 10
    assert body.read() == b'[0.1, 0.9]'
    assert body.read() == b''
    assert body.tell() == 10


def test_streaming_body_read_amount():
    body = StreamingBody(b"0123456789")
    assert body.read(3) == b"012"
    assert body.tell() == 3
    assert body.read(0) == b""
    assert body.read(4) == b"3456"
    assert body.read(None) == b"789"
    assert body.read(5) == b""


def test_streaming_body_read_more_than_available():
    body = StreamingBody(b"abc")
    assert body.read(100) == b"abc"
    assert body.read(100) == b""


def test_streaming_body_close():
    body = StreamingBody(b"abc")
    assert body.readable()
    assert "at 0" in repr(body)
    body.close()
    assert not body.readable()
    assert repr(body) == "<StreamingBody 3 bytes, closed>"
    with pytest.raises(ValueError):
        body.read()
    with pytest.raises(ValueError):
        body.read(1)
    body.close()  # closing twice is harmless


def test_streaming_body_context_manager_closes():
    with StreamingBody(b"abc") as body:
        assert body.read(1) == b"a"
    assert not body.readable()


def test_streaming_body_chunks_and_lines():
    assert list(StreamingBody(b"abcdefg").iter_chunks(3)) == [b"abc", b"def", b"g"]
    assert list(StreamingBody(b"ab")) == [b"ab"]
    assert list(StreamingBody(b"one\r\ntwo\nthree").iter_lines()) == [b"one", b"two", b"three"]
    assert list(StreamingBody(b"one\ntwo\n").iter_lines(keepends=True)) == [b"one\n", b"two\n"]
    body = StreamingBody(b"x\ny\n")
    assert body.read(2) == b"x\n"
    assert body.readlines() == [b"y\n"]


def test_streaming_body_empty():
    body = StreamingBody(b"")
    assert body.content_length == 0
    assert body.read() == b""
    assert list(body) == []


# --- FunctionArnFields --------------------------------------------------------------------------------------

def test_qualified_arn():
    arn = "arn:aws:lambda:us-west-2:123456789012:function:my-func:3"
    fields = FunctionArnFields(arn)
    assert fields.partition == "aws"
    assert fields.region == "us-west-2"
    assert fields.account_id == "123456789012"
    assert fields.name == "my-func"
    assert fields.qualifier == "3"
    assert fields.unqualified_arn == "arn:aws:lambda:us-west-2:123456789012:function:my-func"
    assert fields.to_arn_string() == arn
    assert repr(fields) == f"FunctionArnFields({arn!r})"


def test_unqualified_arn():
    arn = "arn:aws:lambda:us-west-2:123456789012:function:my_func"
    fields = FunctionArnFields(arn)
    assert fields.name == "my_func"
    assert fields.qualifier is None
    assert fields.unqualified_arn == arn
    assert fields.to_arn_string() == arn


def test_connector_arn_with_account_aws():
    fields = FunctionArnFields("arn:aws:lambda:eu-central-1:aws:function:GG-ML-INF-image-classification-svc:1")
    assert fields.account_id == "aws"
    assert fields.region == "eu-central-1"
    assert fields.name == "GG-ML-INF-image-classification-svc"
    assert fields.qualifier == "1"


def test_system_function_arn_with_empty_region_and_account():
    fields = FunctionArnFields("arn:aws:lambda:::function:GGRouter")
    assert (fields.region, fields.account_id, fields.name, fields.qualifier) == ("", "", "GGRouter", None)
    assert fields.unqualified_arn == "arn:aws:lambda:::function:GGRouter"


def test_latest_qualifier():
    fields = FunctionArnFields("arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST")
    assert fields.qualifier == "$LATEST"
    assert fields.unqualified_arn == "arn:aws:lambda:us-east-1:123456789012:function:f"


@pytest.mark.parametrize("arn, partition, region", [
    ("arn:aws-cn:lambda:cn-north-1:123456789012:function:f:prod", "aws-cn", "cn-north-1"),
    ("arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:f", "aws-us-gov", "us-gov-west-1"),
])
def test_other_partitions(arn, partition, region):
    fields = FunctionArnFields(arn)
    assert (fields.partition, fields.region) == (partition, region)
    assert fields.to_arn_string() == arn


def test_build_function_arn():
    build = FunctionArnFields.build_function_arn
    assert build("arn:aws:lambda:::function:f", "7") == "arn:aws:lambda:::function:f:7"
    assert build("arn:aws:lambda:::function:f", "$LATEST") == "arn:aws:lambda:::function:f:$LATEST"
    assert build("arn:aws:lambda:::function:f") == "arn:aws:lambda:::function:f"
    assert build("arn:aws:lambda:::function:f", "") == "arn:aws:lambda:::function:f"
    assert build("arn:aws:lambda:::function:f", None) == "arn:aws:lambda:::function:f"


@pytest.mark.parametrize("text", [
    "not an arn",
    "",
    None,
    42,
    "arn:aws:s3:::my-bucket",
    "arn:aws:lambda:us-west-2:123456789012:function:",
    "arn:aws:lambda:us-west-2:123456789012:function:f:1:extra",
    "arn:aws:lambda:us-west-2:123456789012:function:f:",
    "arn:aws:lambda:us-west-2:123456789012:function:f\n",
    "arn:aws:lambda:US-WEST-2:123456789012:function:f",
    "arn:aws:lambda:us-west-2:123456789012:layer:f",
    " arn:aws:lambda:::function:GGRouter",
], ids=repr)
def test_garbage_is_not_a_function_arn(text):
    with pytest.raises(ValueError) as info:
        FunctionArnFields(text)
    assert str(info.value) == "Cannot parse given string as a function ARN."


# --- parse_version ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1.5", (1, 5)),
    ("1.10", (1, 10)),
    ("2.0.3", (2, 0)),
    (" 1.2 ", (1, 2)),
    ("01.02", (1, 2)),
])
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("text", ["1", "1.", ".5", "v1.5", "1.5-beta", "one.five", "", None, 1.5])
def test_parse_version_rejects(text):
    with pytest.raises(ValueError) as info:
        parse_version(text)
    assert str(info.value) == (f"Cannot parse {text!r} as an interface version; "
                               'expected "<major>.<minor>", e.g. "1.5".')


# --- feedback publish validation ----------------------------------------------------------------------------

GOOD_FEEDBACK = {"ConfigId": "my-config", "ModelInput": b"\xff\xd8\xff", "ModelPrediction": [0.1, 0.9]}


def publish_without(*names, **overrides):
    kwargs = {k: v for k, v in GOOD_FEEDBACK.items() if k not in names}
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize("absent, reported", [
    (("ConfigId",), "ConfigId"),
    (("ConfigId", "ModelInput", "ModelPrediction"), "ConfigId"),
    (("ModelInput",), "ModelInput"),
    (("ModelInput", "ModelPrediction"), "ModelInput"),
    (("ModelPrediction",), "ModelPrediction"),
])
def test_feedback_missing_arguments_in_order(core_env, absent, reported):
    with pytest.raises(ValueError) as info:
        ml.client("feedback").publish(**publish_without(*absent))
    assert str(info.value) == missing(reported, FEEDBACK_OP)


@pytest.mark.parametrize("config_id", ["x", "bad_config", "-x", "a b", "y" * 64, 7], ids=repr)
def test_feedback_bad_config_id(core_env, config_id):
    with pytest.raises(ValueError) as info:
        ml.client("feedback").publish(**publish_without(ConfigId=config_id))
    assert str(info.value) == f'"ConfigId" {NAME_RULE}, got {config_id!r}.'


@pytest.mark.parametrize("prediction", ["[0.1, 0.9]", 0.9, (0.1, 0.9), None, b"x"], ids=repr)
def test_feedback_prediction_must_be_list_or_dict(core_env, prediction):
    with pytest.raises(ValueError) as info:
        ml.client("feedback").publish(**publish_without(ModelPrediction=prediction))
    assert str(info.value) == f'"ModelPrediction" must be a list or a dict, not {type(prediction).__name__}.'


@pytest.mark.parametrize("metadata", [["a"], "key=value", None, 3], ids=repr)
def test_feedback_metadata_must_be_dict(core_env, metadata):
    with pytest.raises(ValueError) as info:
        ml.client("feedback").publish(**publish_without(Metadata=metadata))
    assert str(info.value) == f'"Metadata" must be a dict, not {type(metadata).__name__}.'


def test_feedback_model_input_must_be_bytes_like(core_env):
    with pytest.raises(ValueError) as info:
        ml.client("feedback").publish(**publish_without(ModelInput=12345))
    assert str(info.value) == '"ModelInput" must be bytes, bytearray, str or a readable file object, not int.'


def test_feedback_prediction_must_be_json_serialisable(core_env):
    with pytest.raises(ValueError, match='"ModelPrediction" and "Metadata" must be JSON-serialisable'):
        ml.client("feedback").publish(**publish_without(ModelPrediction={"p": b"not json"}))


def test_feedback_client_needs_region(core_env, monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(MissingEnvironmentError, match="AWS_REGION is not set"):
        ml.client("feedback")


@pytest.mark.parametrize("extra", [{}, {"Metadata": {"camera": "front"}}, {"ModelPrediction": {"cat": 0.9}}],
                         ids=["plain", "metadata", "dict-prediction"])
def test_feedback_valid_call_without_runtime_is_a_dependency_error(core_env, extra):
    with pytest.raises(ml.GreengrassDependencyException) as info:
        ml.client("feedback").publish(**publish_without(**extra))
    assert "unreachable" in str(info.value)
    assert f"localhost:{core_env}" in str(info.value)


# --- the core-side modules, in the shapes real SDK releases read ------------------------------------------------

def test_service_message_is_the_cores_namedtuple_of_context_and_payload():
    """The AWS ML SDK builds it positionally as (base64 client context, body)."""
    message = GreengrassServiceMessage(b"e30=", b'{"errorMessage": "bad image"}')
    assert message._fields == ("context", "payload")
    context, payload = message
    assert (context, payload) == (message.context, message.payload) == (b"e30=", b'{"errorMessage": "bad image"}')
    assert message._replace(context="") == ("", b'{"errorMessage": "bad image"}')
    assert str(message) == '{"errorMessage": "bad image"}'  # an exception built from it reads as the reason
    assert repr(message) == "GreengrassServiceMessage(context=b'e30=', payload='{\"errorMessage\": \"bad image\"}')"


def test_a_long_payload_is_shortened_in_text_not_in_the_message():
    message = GreengrassServiceMessage("", b"x" * 10000)
    assert str(message) == "x" * 2000 + "..." and len(message.payload) == 10000


def test_call_output_is_the_cores_namedtuple():
    error = GreengrassServiceMessage("", b"no")
    output = GreengrassServiceCallOutput(None, error)
    assert output._fields == ("response", "error_response")
    assert output == (None, error) and output.error_response is error


def test_build_arn_string_is_how_greengrasssdk_1_3_0_rebuilds_an_arn():
    fields = FunctionArnFields("arn:aws:lambda:us-west-2:123456789012:function:echo")
    assert FunctionArnFields.build_arn_string(fields.region, fields.account_id, fields.name, "prod") == \
        "arn:aws:lambda:us-west-2:123456789012:function:echo:prod"
    assert FunctionArnFields.build_arn_string(fields.region, fields.account_id, fields.name, "") == \
        "arn:aws:lambda:us-west-2:123456789012:function:echo"
    assert FunctionArnFields.build_arn_string("", "", "GGRouter", "") == "arn:aws:lambda:::function:GGRouter"


def test_a_port_argument_is_ignored_in_favour_of_gg_daemon_port(core_env):
    """greengrasssdk 1.3.0 to 1.5.0 always pass port=8000; the core's port is GG_DAEMON_PORT."""
    with pytest.warns(DeprecationWarning, match="ignored"):
        client = IPCClient(endpoint="localhost", port=8000)
    assert client.port == core_env
    assert IPCClient("localhost").port == core_env


@pytest.mark.parametrize("payload, sent", [
    (b"jpeg", b"jpeg"), (bytearray(b"jpeg"), b"jpeg"), ("caf\u00e9", "caf\u00e9".encode("utf-8")), (None, b""),
    (np.array([1.0, 2.0], dtype=np.float32), np.array([1.0, 2.0], dtype=np.float32).tobytes()),
], ids=["bytes", "bytearray", "str", "none", "float32-buffer"])
def test_bodies_go_on_the_wire_as_bytes(payload, sent):
    assert bytes(_encode_payload(payload)) == sent


def test_a_file_object_body_is_read_from_where_it_stands(tmp_path):
    path = tmp_path / "image.jpg"
    path.write_bytes(b"header-and-image")
    with path.open("rb") as body:
        body.seek(len(b"header-"))
        assert _encode_payload(body) == b"and-image"


REAL_CORE_NAMES = {  # what a real core's modules offer (what the released SDKs import)
    "greengrass_ipc_python_sdk.ipc_facade": {"GreengrassServiceClient", "GreengrassServiceMessage",
                                             "GreengrassRuntimeException"},
    "greengrass_ipc_python_sdk.ipc_client": {"IPCClient", "IPCException"},
    "greengrass_common.parse_version": {"parse_version"},
    "greengrass_common.env_vars": {"GGC_MAX_INTERFACE_VERSION", "MY_FUNCTION_ARN"},
    "greengrass_common.function_arn_fields": {"FunctionArnFields"},
}


def test_our_ml_sdk_needs_nothing_a_real_core_lacks():
    """It also runs in a Lambda zip on a real core (`make lambda-zip`), beside that core's own modules."""
    for path in sorted((REPO / "ml_sdk" / "greengrass_machine_learning_sdk").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("greengrass_") \
                    and not node.module.startswith("greengrass_machine_learning_sdk"):
                names = {alias.name for alias in node.names}
                assert names <= REAL_CORE_NAMES.get(node.module, set()), f"{path.name} imports {node.module}.{names}"
