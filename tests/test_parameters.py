"""Tests of connector parameter and CreateConnectorDefinition validation (connector.image_classification.parameters)."""

import copy
import json
import logging
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from connector.contract import catalog, problems, schemas
from connector.control import connector_definitions
from connector.image_classification import parameters
from connector.image_classification.errors import ConfigurationError

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"

X86_V1 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/1"
X86_V2 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/2"
ARM_V1 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationARMv7/versions/1"
ARM_V2 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationARMv7/versions/2"
JTX2_V1 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationAarch64JTX2/versions/1"
JTX2_V2 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationAarch64JTX2/versions/2"

SLASH_JOB = "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyImageClassifier"
COLON_JOB = "arn:aws:sagemaker:us-west-2:123456789012:training-job:MyImageClassifier"

BASE = {
    "MLModelDestinationPath": "/path-to-model",
    "MLModelResourceId": "my-ml-resource",
    "MLModelSageMakerJobArn": SLASH_JOB,
    "LocalInferenceServiceName": "imageClassification",
    "LocalInferenceServiceTimeoutSeconds": "10",
    "LocalInferenceServiceMemoryLimitKB": "500000",
}
REQUIRED = list(BASE)


def params(**overrides):
    out = dict(BASE)
    out.update(overrides)
    return out


def codes(details):
    return [d["DetailedErrorCode"] for d in details]


def request(*connectors, **extra):
    body = {"Name": "MyGreengrassConnectors", "InitialVersion": {"Connectors": list(connectors)}}
    body.update(extra)
    return body


def connector(cid, arn, parameters):
    return {"Id": cid, "ConnectorArn": arn, "Parameters": parameters}


def bad_request(body):
    with pytest.raises(problems.BadRequestError) as info:
        connector_definitions.validate_connector_definition(body)
    return info.value


# --- schema files --------------------------------------------------------------------------------------------

SCHEMA_FILES = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_files_are_valid_draft_2020_12(name):
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/" + name)


@pytest.mark.parametrize("name", [n for n in SCHEMA_FILES if n.startswith("image-classification-")])
def test_parameter_schemas_explain_anchoring(name):
    description = json.loads((SCHEMAS / name).read_text())["description"]
    assert "^(?:...)$" in description and "unanchored" in description


def test_parameter_schema_shapes():
    load = lambda n: json.loads((SCHEMAS / n).read_text())  # noqa: E731
    v1, v2 = load("image-classification-v1.schema.json"), load("image-classification-v2.schema.json")
    j1, j2 = load("image-classification-jtx2-v1.schema.json"), load("image-classification-jtx2-v2.schema.json")
    assert set(v1["properties"]) == set(REQUIRED)
    assert set(v2["properties"]) == set(REQUIRED) | {"MLFeedbackConnectorConfigId"}
    assert set(j1["properties"]) == set(REQUIRED) | {"GPUAcceleration"}
    assert set(j2["properties"]) == set(REQUIRED) | {"GPUAcceleration", "MLFeedbackConnectorConfigId"}
    for schema in (v1, v2):
        assert schema["required"] == REQUIRED and schema["additionalProperties"] is False
    for schema in (j1, j2):
        assert schema["required"] == REQUIRED + ["GPUAcceleration"] and schema["additionalProperties"] is False
    defs = load("image-classification-common.schema.json")["$defs"]
    assert defs["MLModelSageMakerJobArn"]["pattern"] == \
        "^arn:aws:sagemaker:[a-zA-Z0-9-]+:[0-9]+:training-job/[a-zA-Z0-9][a-zA-Z0-9-]+$"
    assert defs["MLFeedbackConnectorConfigId"]["pattern"] == "^$|^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$"
    assert defs["LocalInferenceServiceTimeoutSeconds"]["pattern"] == "^(?:[1-9][0-9]*)$"
    assert defs["GPUAcceleration"]["enum"] == ["CPU", "GPU"]
    assert defs["LocalInferenceServiceTimeoutSeconds"]["title"] == "Timeout (second)"


def test_catalog_lists_six_classifiers_and_the_feedback_connector_with_existing_schemas():
    catalog = json.loads((SCHEMAS / "connectors.json").read_text())["connectors"]
    assert {(c["name"], c["version"]) for c in catalog} == {
        (n, v) for n in ("ImageClassificationx86-64", "ImageClassificationARMv7", "ImageClassificationAarch64JTX2")
        for v in (1, 2)} | {("MLFeedback", 1)}
    for entry in catalog:
        assert (SCHEMAS / entry["schema"]).is_file()
        assert entry["functionNameTemplate"] == ("MLFeedback" if entry["name"] == "MLFeedback" else
                                                 "GG-ML-INF-image-classification-{LocalInferenceServiceName}")
        assert entry["arnPattern"] == (f"^arn:aws:greengrass:([a-z0-9-]+)::/connectors/{entry['name']}"
                                       f"/versions/{entry['version']}$")


def test_schema_dir_takes_the_first_directory_holding_the_catalog(tmp_path):
    installed = tmp_path / "connector" / "contract" / schemas.SCHEMA_PACKAGE_DIR  # a wheel's package data
    installed.mkdir(parents=True)
    (installed / "connectors.json").write_text("{}")
    assert schemas.locate_schema_dir([tmp_path / "missing", installed]) == installed
    with pytest.raises(schemas.SchemaNotFoundError):
        schemas.locate_schema_dir([tmp_path / "missing"])
    assert schemas.schema_dir() == SCHEMAS


# --- every documented pattern: valid and invalid values -----------------------------------------------------

PATTERN_CASES = {
    "MLModelDestinationPath": (
        ["/path-to-model", "/ml/model", "/", " ", "/with space/and-ü"],
        ["", "\n", "/model\n", "/a\nb", "/model\r"],
    ),
    "MLModelResourceId": (
        ["my-ml-resource", "a", "res:1_2-X", "0"],
        ["", "my resource", "res/1", "res.1", "id\n", "résumé"],
    ),
    "MLModelSageMakerJobArn": (
        [SLASH_JOB, "arn:aws:sagemaker:eu-west-1:1:training-job/ab",
         "arn:aws:sagemaker:us-gov-west-1:123456789012:training-job/a-b-",
         "arn:aws:sagemaker:us-west-2:123456789012:training-job/" + "a" * 63],
        ["", "arn:aws-cn:sagemaker:cn-north-1:123456789012:training-job/MyJob",
         "arn:aws-us-gov:sagemaker:us-gov-west-1:123456789012:training-job/MyJob",
         "arn:aws:sagemaker:us-west-2:123456789012:training-job/a",
         "arn:aws:sagemaker:us-west-2:123456789012:training-job/-ab",
         "arn:aws:sagemaker:us-west-2:123456789012:training-job/my_job",
         "arn:aws:sagemaker:us-west-2::training-job/MyJob",
         "arn:aws:sagemaker:us-west-2:12345678901a:training-job/MyJob",
         "arn:aws:sagemaker:us_west_2:123456789012:training-job/MyJob",
         "arn:aws:sagemaker:us-west-2:123456789012:model/MyJob",
         "arn:aws:sagemaker:us-west-2:123456789012:training-job:a",  # colon, but the name is too short
         "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyJob/x",
         "ARN:aws:sagemaker:us-west-2:123456789012:training-job/MyJob",
         " " + SLASH_JOB, SLASH_JOB + "\n", "MyImageClassifier"],
    ),
    "LocalInferenceServiceName": (
        ["ab", "imageClassification", "0-", "a" * 63, "A" + "-" * 62, "svc-01"],
        ["", "a", "a" * 64, "-ab", "image_class", "image classification", "abc\n", "image.class"],
    ),
    "LocalInferenceServiceTimeoutSeconds": (
        ["1", "9", "10", "500000", "99999999999999999999"],
        ["", "0", "00", "010", "abc1", "1abc", "-1", "+1", "1.5", " 1", "1 ", "10\n", "1e3", "١"],
    ),
    "LocalInferenceServiceMemoryLimitKB": (
        ["1", "500000", "1048576"],
        ["", "0", "0500000", "abc1", "500000KB", "5 00000", "500000\n"],
    ),
}
VALID_CASES = [(name, value) for name, (good, _) in PATTERN_CASES.items() for value in good]
INVALID_CASES = [(name, value) for name, (_, bad) in PATTERN_CASES.items() for value in bad]


@pytest.mark.parametrize("arn", [X86_V1, X86_V2, ARM_V1, ARM_V2, JTX2_V1, JTX2_V2])
@pytest.mark.parametrize("name,value", VALID_CASES)
def test_documented_patterns_accept(arn, name, value):
    extra = {"GPUAcceleration": "CPU"} if "JTX2" in arn else {}
    assert connector_definitions.validate_parameters("MyIC", arn, params(**{name: value}, **extra)) == []


@pytest.mark.parametrize("arn", [X86_V1, JTX2_V2])
@pytest.mark.parametrize("name,value", INVALID_CASES)
def test_documented_patterns_reject(arn, name, value):
    extra = {"GPUAcceleration": "GPU"} if "JTX2" in arn else {}
    details = connector_definitions.validate_parameters("MyIC", arn, params(**{name: value}, **extra))
    assert codes(details) == ["InvalidParameterValue"]
    message = details[0]["DetailedErrorMessage"]
    assert message.startswith(f"Connector 'MyIC': parameter {name} value {value!r} does not match pattern ")


def test_message_format_example():
    details = connector_definitions.validate_parameters("MyIC", X86_V2, params(LocalInferenceServiceTimeoutSeconds="0"))
    assert details == [{
        "DetailedErrorCode": "InvalidParameterValue",
        "DetailedErrorMessage": "Connector 'MyIC': parameter LocalInferenceServiceTimeoutSeconds value '0' "
                                "does not match pattern ^(?:[1-9][0-9]*)$"}]


def test_long_values_are_truncated_in_messages():
    details = connector_definitions.validate_parameters("MyIC", X86_V2, params(LocalInferenceServiceName="x" * 500))
    message = details[0]["DetailedErrorMessage"]
    assert "(500 characters)" in message and "x" * 500 not in message


def test_non_string_values_are_rejected():
    details = connector_definitions.validate_parameters("MyIC", X86_V2, params(LocalInferenceServiceTimeoutSeconds=10))
    assert codes(details) == ["InvalidParameterValue"]
    assert "value 10 must be of type string, not integer" in details[0]["DetailedErrorMessage"]


@pytest.mark.parametrize("value", ["CPU", "GPU"])
@pytest.mark.parametrize("arn", [JTX2_V1, JTX2_V2])
def test_gpu_acceleration_valid(arn, value):
    assert connector_definitions.validate_parameters("MyIC", arn, params(GPUAcceleration=value)) == []


@pytest.mark.parametrize("value", ["gpu", "Gpu", "cpu", "", "TPU", "CPU|GPU", "GPU ", "GPU\n"])
def test_gpu_acceleration_invalid(value):
    details = connector_definitions.validate_parameters("MyIC", JTX2_V2, params(GPUAcceleration=value))
    assert codes(details) == ["InvalidParameterValue"]
    assert f"GPUAcceleration value {value!r} is not one of 'CPU', 'GPU'" in details[0]["DetailedErrorMessage"]


def test_gpu_acceleration_lowercase_gets_case_hint():
    [detail] = connector_definitions.validate_parameters("MyIC", JTX2_V1, params(GPUAcceleration="gpu"))
    assert "did you mean 'GPU'" in detail["DetailedErrorMessage"]


@pytest.mark.parametrize("arn", [JTX2_V1, JTX2_V2])
def test_gpu_acceleration_required_on_jtx2(arn):
    details = connector_definitions.validate_parameters("MyIC", arn, params())
    assert codes(details) == ["MissingRequiredParameter"]
    assert "GPUAcceleration" in details[0]["DetailedErrorMessage"]


@pytest.mark.parametrize("arn", [X86_V1, X86_V2, ARM_V1, ARM_V2])
@pytest.mark.parametrize("value", ["CPU", "GPU"])
def test_gpu_acceleration_rejected_off_jtx2(arn, value):
    details = connector_definitions.validate_parameters("MyIC", arn, params(GPUAcceleration=value))
    assert codes(details) == ["UnknownParameter"]
    assert "GPUAcceleration exists only on ImageClassificationAarch64JTX2" in details[0]["DetailedErrorMessage"]


FEEDBACK_VALID = ["", "MyConfig0", "ab", "a" * 63, "0-config"]
FEEDBACK_INVALID = ["a", "-ab", "my_config", "a" * 64, "x\n", " MyConfig0", "My Config"]


@pytest.mark.parametrize("arn", [X86_V2, ARM_V2, JTX2_V2])
@pytest.mark.parametrize("value", FEEDBACK_VALID)
def test_feedback_config_id_valid_in_v2(arn, value):
    extra = {"GPUAcceleration": "GPU"} if "JTX2" in arn else {}
    assert connector_definitions.validate_parameters("MyIC", arn, params(MLFeedbackConnectorConfigId=value, **extra)) == []


@pytest.mark.parametrize("value", FEEDBACK_INVALID)
def test_feedback_config_id_invalid_in_v2(value):
    details = connector_definitions.validate_parameters("MyIC", X86_V2, params(MLFeedbackConnectorConfigId=value))
    assert codes(details) == ["InvalidParameterValue"]
    assert "^$|^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$" in details[0]["DetailedErrorMessage"]


@pytest.mark.parametrize("arn", [X86_V1, ARM_V1, JTX2_V1])
@pytest.mark.parametrize("value", ["", "MyConfig0"])
def test_feedback_config_id_rejected_in_v1(arn, value):
    extra = {"GPUAcceleration": "GPU"} if "JTX2" in arn else {}
    details = connector_definitions.validate_parameters("MyIC", arn, params(MLFeedbackConnectorConfigId=value, **extra))
    assert codes(details) == ["UnknownParameter"]
    assert "MLFeedbackConnectorConfigId" in details[0]["DetailedErrorMessage"]
    assert "later version" in details[0]["DetailedErrorMessage"]


def test_misspelt_parameter_is_unknown_with_suggestion():
    body = params()
    body["LocalInferenceServiceTimeoutSecond"] = body.pop("LocalInferenceServiceTimeoutSeconds")
    details = connector_definitions.validate_parameters("MyIC", X86_V2, body)
    assert sorted(codes(details)) == ["MissingRequiredParameter", "UnknownParameter"]
    unknown = next(d for d in details if d["DetailedErrorCode"] == "UnknownParameter")
    assert "did you mean LocalInferenceServiceTimeoutSeconds?" in unknown["DetailedErrorMessage"]


# --- connector ARNs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arn,name,version,platform,schema", [
    (X86_V1, "ImageClassificationx86-64", 1, "x86_64", "image-classification-v1.schema.json"),
    (X86_V2, "ImageClassificationx86-64", 2, "x86_64", "image-classification-v2.schema.json"),
    (ARM_V1, "ImageClassificationARMv7", 1, "armv7l", "image-classification-v1.schema.json"),
    (ARM_V2, "ImageClassificationARMv7", 2, "armv7l", "image-classification-v2.schema.json"),
    (JTX2_V1, "ImageClassificationAarch64JTX2", 1, "aarch64", "image-classification-jtx2-v1.schema.json"),
    (JTX2_V2, "ImageClassificationAarch64JTX2", 2, "aarch64", "image-classification-jtx2-v2.schema.json"),
])
def test_six_connector_arns(arn, name, version, platform, schema):
    spec = catalog.connector_spec(arn)
    assert (spec.name, spec.version, spec.platform, spec.region, spec.arn, spec.schema_file) == \
        (name, version, platform, "us-west-2", arn, schema)
    assert spec.function_name({"LocalInferenceServiceName": "imageClassification"}) == \
        "GG-ML-INF-image-classification-imageClassification"
    assert spec.function_arn({"LocalInferenceServiceName": "svc"}, "eu-west-1") == \
        "arn:aws:lambda:eu-west-1:aws:function:GG-ML-INF-image-classification-svc"
    assert spec.function_arn({"LocalInferenceServiceName": "svc"}) == \
        "arn:aws:lambda:us-west-2:aws:function:GG-ML-INF-image-classification-svc"
    # The documentation writes the literal placeholder 'region'.
    literal = catalog.connector_spec(arn.replace("us-west-2", "region"))
    assert (literal.name, literal.version, literal.region) == (name, version, "region")


@pytest.mark.parametrize("arn", [
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/3",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/0",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationAarch64JTX2/versions/01",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationX86-64/versions/1",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86_64/versions/1",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationArmv7/versions/1",
    "arn:aws:greengrass:us-west-2:123456789012:/connectors/ImageClassificationARMv7/versions/1",
    "arn:aws:greengrass:US-WEST-2::/connectors/ImageClassificationARMv7/versions/1",
    "arn:aws:greengrass:::/connectors/ImageClassificationARMv7/versions/1",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationARMv7/versions/1/",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationARMv7/versions/2\n",
    " arn:aws:greengrass:us-west-2::/connectors/ImageClassificationARMv7/versions/2",
    "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationARMv7",
    "arn:aws:greengrass:us-west-2::/connectors/ObjectDetectionx86-64/versions/1",
    "arn:aws:greengrass:us-west-2::/connectors/MLFeedback/versions/2",
    "arn:aws:lambda:us-west-2::/connectors/ImageClassificationx86-64/versions/1",
    "ImageClassificationx86-64",
    "",
])
def test_near_miss_arns_rejected(arn):
    with pytest.raises(problems.BadRequestError) as info:
        catalog.connector_spec(arn)
    [detail] = info.value.error_details
    assert detail["DetailedErrorCode"] == "InvalidConnectorArn"
    for name in ("ImageClassificationx86-64", "ImageClassificationARMv7", "ImageClassificationAarch64JTX2"):
        assert name in detail["DetailedErrorMessage"]
    assert codes(connector_definitions.validate_parameters("MyIC", arn, params())) == ["InvalidConnectorArn"]


# --- training-job ARN spelling ------------------------------------------------------------------------------

def test_normalise_training_job_arn():
    assert catalog.normalise_training_job_arn(COLON_JOB) == (SLASH_JOB, True)
    assert catalog.normalise_training_job_arn(SLASH_JOB) == (SLASH_JOB, False)
    # Only the documented pattern with a colon is rewritten; everything else is left for validation to report.
    for other in ("arn:aws-cn:sagemaker:cn-north-1:1:training-job:MyJob",
                  "arn:aws:sagemaker:us-west-2:123456789012:training-job:a",
                  "arn:aws:sagemaker:us-west-2:123456789012:training-job:My_Job", ""):
        assert catalog.normalise_training_job_arn(other) == (other, False)


def test_training_job_name():
    assert catalog.training_job_name(SLASH_JOB) == "MyImageClassifier"
    assert catalog.training_job_name(COLON_JOB) == "MyImageClassifier"
    assert catalog.training_job_name("arn:aws-cn:sagemaker:cn-north-1:123456789012:training-job/j") == "j"
    for bad in ("", "MyImageClassifier", "arn:aws:sagemaker:us-west-2:123456789012:model/x",
                "arn:aws:sagemaker:us-west-2:123456789012:training-job/"):
        with pytest.raises(catalog.InvalidTrainingJobArnError):
            catalog.training_job_name(bad)


def test_colon_job_arn_normalised_with_warning():
    body = request(connector("MyIC", X86_V2, params(MLModelSageMakerJobArn=COLON_JOB)))
    original = copy.deepcopy(body)
    normalised, warnings = connector_definitions.validate_connector_definition(body)
    assert body == original  # input untouched
    assert normalised["InitialVersion"]["Connectors"][0]["Parameters"]["MLModelSageMakerJobArn"] == SLASH_JOB
    [warning] = warnings
    assert "normalised MLModelSageMakerJobArn" in warning and "real SageMaker ARN form" in warning
    assert COLON_JOB in warning and SLASH_JOB in warning


def test_slash_job_arn_gives_no_warning():
    normalised, warnings = connector_definitions.validate_connector_definition(request(connector("MyIC", X86_V2, params())))
    assert warnings == []
    assert normalised == request(connector("MyIC", X86_V2, params()))


# --- whole requests -----------------------------------------------------------------------------------------

def test_missing_required_parameters_reported_all_at_once():
    error = bad_request(request(connector("A", JTX2_V2, {}), connector("B", X86_V1, {"MLModelResourceId": "r"})))
    assert codes(error.error_details) == ["MissingRequiredParameter"] * (7 + 5)
    messages = [d["DetailedErrorMessage"] for d in error.error_details]
    assert sum(m.startswith("Connector 'A': ") for m in messages) == 7
    assert sum(m.startswith("Connector 'B': ") for m in messages) == 5
    assert not any("MLModelResourceId" in m for m in messages if m.startswith("Connector 'B'"))


def test_absent_parameters_object_means_all_missing():
    error = bad_request(request({"Id": "A", "ConnectorArn": ARM_V1}))
    assert codes(error.error_details) == ["MissingRequiredParameter"] * 6


def test_every_problem_in_a_request_is_reported():
    body = request(
        connector("A", X86_V2, params(LocalInferenceServiceTimeoutSeconds="0", GPUAcceleration="CPU")),
        connector("A", ARM_V2, params(LocalInferenceServiceName="other")),
        connector("C", "arn:aws:greengrass:us-west-2::/connectors/MLFeedback/versions/2", {}),
        connector("bad id", JTX2_V1, params(LocalInferenceServiceName="third", GPUAcceleration="gpu")),
    )
    error = bad_request(body)
    assert sorted(codes(error.error_details)) == sorted([
        "InvalidParameterValue", "UnknownParameter",   # A
        "DuplicateConnectorId",                        # second A
        "InvalidConnectorArn",                         # C
        "InvalidRequest", "InvalidParameterValue",     # bad id
    ])
    assert error.message == "Invalid connector definition: 6 problems found"


def test_duplicate_connector_id():
    error = bad_request(request(connector("Same", X86_V2, params()),
                                connector("Same", JTX2_V2, params(LocalInferenceServiceName="gpu-svc",
                                                                  GPUAcceleration="GPU"))))
    [detail] = error.error_details
    assert detail["DetailedErrorCode"] == "DuplicateConnectorId"
    assert "'Same'" in detail["DetailedErrorMessage"] and "#0 and #1" in detail["DetailedErrorMessage"]


def test_duplicate_connector_v1_and_v2():
    error = bad_request(request(connector("One", X86_V1, params()),
                                connector("Two", X86_V2, params(LocalInferenceServiceName="second"))))
    [detail] = error.error_details
    assert detail["DetailedErrorCode"] == "DuplicateConnector"
    message = detail["DetailedErrorMessage"]
    assert "ImageClassificationx86-64 version 2" in message and "'One' (version 1)" in message
    assert "only one version of a connector" in message


def test_duplicate_service_name_across_connectors():
    error = bad_request(request(connector("One", X86_V2, params()), connector("Two", ARM_V2, params())))
    [detail] = error.error_details
    assert detail["DetailedErrorCode"] == "DuplicateServiceName"
    assert "GG-ML-INF-image-classification-imageClassification" in detail["DetailedErrorMessage"]


def test_same_connector_twice_reports_connector_and_service_collision():
    error = bad_request(request(connector("One", ARM_V2, params()), connector("Two", ARM_V2, params())))
    assert codes(error.error_details) == ["DuplicateConnector", "DuplicateServiceName"]


def test_mixed_platforms_warn():
    _, warnings = connector_definitions.validate_connector_definition(
        request(connector("One", X86_V2, params()), connector("Two", ARM_V1, params(LocalInferenceServiceName="bb"))))
    assert len(warnings) == 1 and "x86_64" in warnings[0] and "armv7l" in warnings[0]


@pytest.mark.parametrize("body,fragment", [
    ({}, "InitialVersion is required"),
    ({"InitialVersion": {}}, "InitialVersion.Connectors is required"),
    ({"InitialVersion": {"Connectors": {}}}, "InitialVersion.Connectors value {} must be of type array"),
    (request("not an object"), "InitialVersion.Connectors[0] value 'not an object' must be of type object"),
    (request({"ConnectorArn": X86_V2, "Parameters": BASE}), "InitialVersion.Connectors[0].Id is required"),
    (request({"Id": "A", "Parameters": BASE}), "InitialVersion.Connectors[0].ConnectorArn is required"),
    (request({"Id": "A", "ConnectorArn": 5}), "ConnectorArn value 5 must be of type string"),
    (request(connector("", X86_V2, params())), "Id value '' does not match pattern"),
    (request(connector("x" * 129, X86_V2, params())), "is longer than 128 characters (129)"),
    (request(connector("my connector", X86_V2, params())), "does not match pattern ^(?:[a-zA-Z0-9:_-]+)$"),
    (request(connector("A\n", X86_V2, params())), "does not match pattern"),
    (request(connector("A", X86_V2, "params")), "Parameters value 'params' must be of type object"),
    (request(connector("A", X86_V2, params()), Extra={"x": 1}), "Request field Extra is not allowed"),
    (request(connector("A", X86_V2, params()), Name=5), "Request field Name value 5 must be of type string"),
    (request(connector("A", X86_V2, params()), tags={"k": 1}), "Request field tags.k value 1 must be of type"),
    (request({"Id": "A", "ConnectorArn": X86_V2, "Parameters": BASE, "Version": "1"}),
     "InitialVersion.Connectors[0].Version is not allowed"),
])
def test_request_shape_errors(body, fragment):
    error = bad_request(body)
    assert codes(error.error_details) == ["InvalidRequest"]
    assert fragment in error.error_details[0]["DetailedErrorMessage"]


def test_request_id_limits_accepted():
    for cid in ("x" * 128, "a:b_c-D", "0"):
        normalised, warnings = connector_definitions.validate_connector_definition(
            request(connector(cid, X86_V2, params())))
        assert normalised["InitialVersion"]["Connectors"][0]["Id"] == cid and warnings == []
    # One character more, or one outside the pattern, is refused.
    for cid in ("x" * 129, "a b"):
        error = bad_request(request(connector(cid, X86_V2, params())))
        assert codes(error.error_details) == ["InvalidRequest"]
        assert "InitialVersion.Connectors[0].Id" in error.error_details[0]["DetailedErrorMessage"]


def test_non_object_request_rejected():
    error = bad_request(["not", "a", "request"])
    assert codes(error.error_details) == ["InvalidRequest"]


def test_non_string_parameter_reported_once():
    error = bad_request(request(connector("A", X86_V2, params(LocalInferenceServiceMemoryLimitKB=500000))))
    assert codes(error.error_details) == ["InvalidParameterValue"]


def test_empty_connector_list_accepted_with_warning():
    normalised, warnings = connector_definitions.validate_connector_definition({"InitialVersion": {"Connectors": []}})
    assert normalised == {"InitialVersion": {"Connectors": []}}
    assert len(warnings) == 1 and "empty" in warnings[0]


def test_bad_request_error_response_and_str():
    error = bad_request(request(connector("A", X86_V2, params(LocalInferenceServiceTimeoutSeconds="0",
                                                              LocalInferenceServiceMemoryLimitKB="abc1"))))
    response = error.to_response()
    assert set(response) == {"Message", "ErrorDetails"}
    assert response["Message"] == error.message
    assert response["ErrorDetails"] == error.error_details and len(response["ErrorDetails"]) == 2
    for detail in response["ErrorDetails"]:
        assert set(detail) == {"DetailedErrorCode", "DetailedErrorMessage"}
    text = str(error)
    assert text.splitlines()[0] == error.message
    assert "LocalInferenceServiceTimeoutSeconds value '0'" in text
    assert "LocalInferenceServiceMemoryLimitKB value 'abc1'" in text


# --- the documentation's CLI examples -----------------------------------------------------------------------

DOC_CPU = """{ "Connectors": [ { "Id": "MyImageClassificationConnector", "ConnectorArn": "arn:aws:greengrass:region::/connectors/ImageClassificationARMv7/versions/2", "Parameters": { "MLModelDestinationPath": "/path-to-model", "MLModelResourceId": "my-ml-resource", "MLModelSageMakerJobArn": "arn:aws:sagemaker:us-west-2:123456789012:training-job:MyImageClassifier", "LocalInferenceServiceName": "imageClassification", "LocalInferenceServiceTimeoutSeconds": "10", "LocalInferenceServiceMemoryLimitKB": "500000", "MLFeedbackConnectorConfigId": "MyConfig0" } } ] }"""  # noqa: E501
DOC_GPU = """{ "Connectors": [ { "Id": "MyImageClassificationConnector", "ConnectorArn": "arn:aws:greengrass:region::/connectors/ImageClassificationAarch64JTX2/versions/2", "Parameters": { "MLModelDestinationPath": "/path-to-model", "MLModelResourceId": "my-ml-resource", "MLModelSageMakerJobArn": "arn:aws:sagemaker:us-west-2:123456789012:training-job:MyImageClassifier", "LocalInferenceServiceName": "imageClassification", "LocalInferenceServiceTimeoutSeconds": "10", "LocalInferenceServiceMemoryLimitKB": "500000", "GPUAcceleration": "GPU", "MLFeedbackConnectorConfigId": "MyConfig0" } } ] }"""  # noqa: E501


DOC_FEEDBACK = {"Id": "MyFeedbackConnector",
                "ConnectorArn": "arn:aws:greengrass:region::/connectors/MLFeedback/versions/1",
                "Parameters": {"FeedbackConfigurationMap": json.dumps(
                    {"MyConfig0": {"s3-bucket-name": "my-aws-bucket", "content-type": "image/jpeg"}})}}


@pytest.mark.parametrize("initial_version", [DOC_CPU, DOC_GPU])
def test_documentation_cli_examples_need_the_feedback_connector_their_config_id_names(initial_version):
    # The examples set MLFeedbackConnectorConfigId "MyConfig0" but define no ML Feedback connector: refused, with
    # the reason, rather than failing on the device at the first sample.
    error = bad_request({"Name": "MyGreengrassConnectors", "InitialVersion": json.loads(initial_version)})
    assert codes(error.error_details) == [problems.UNKNOWN_FEEDBACK_CONFIG_ID]
    assert "'MyConfig0'" in error.error_details[0]["DetailedErrorMessage"]


@pytest.mark.parametrize("initial_version", [DOC_CPU, DOC_GPU])
@pytest.mark.parametrize("region", ["region", "us-west-2"])
def test_documentation_cli_examples(initial_version, region):
    version = json.loads(initial_version)
    version["Connectors"].append(DOC_FEEDBACK)
    body = {"Name": "MyGreengrassConnectors",
            "InitialVersion": json.loads(json.dumps(version).replace("greengrass:region:", f"greengrass:{region}:"))}
    normalised, warnings = connector_definitions.validate_connector_definition(body)
    [entry, _] = normalised["InitialVersion"]["Connectors"]
    assert entry["Parameters"]["MLModelSageMakerJobArn"] == SLASH_JOB
    assert entry["ConnectorArn"].startswith(f"arn:aws:greengrass:{region}::/connectors/")
    assert sum("normalised MLModelSageMakerJobArn" in w for w in warnings) == 1
    assert (sum("placeholder region" in w for w in warnings) == 2) == (region == "region")
    assert catalog.connector_spec(entry["ConnectorArn"]).region == region


# --- parameters from the environment ------------------------------------------------------------------------

def test_from_environment_without_arn_uses_x86_v2():
    env = dict(params(MLModelSageMakerJobArn=COLON_JOB), MLFeedbackConnectorConfigId="", PATH="/usr/bin")
    got = parameters.ImageClassificationParameters.from_environment(env)
    assert got == parameters.ImageClassificationParameters(
        model_destination_path="/path-to-model", model_resource_id="my-ml-resource",
        sagemaker_job_arn=SLASH_JOB, service_name="imageClassification", timeout_seconds=10,
        memory_limit_kb=500000, gpu_acceleration="CPU", feedback_config_id=None, connector_arn=None)


def test_from_environment_gpu_without_arn_uses_jtx2():
    env = dict(params(), GPUAcceleration="GPU", MLFeedbackConnectorConfigId="MyConfig0")
    got = parameters.ImageClassificationParameters.from_environment(env)
    assert (got.gpu_acceleration, got.feedback_config_id, got.connector_arn) == ("GPU", "MyConfig0", None)


def test_from_environment_with_arn(caplog):
    env = dict(params(), GGIC_CONNECTOR_ARN=ARM_V1, MLFeedbackConnectorConfigId="MyConfig0")
    with caplog.at_level(logging.WARNING, logger="connector.image_classification.parameters"):
        got = parameters.ImageClassificationParameters.from_environment(env)
    assert got.connector_arn == ARM_V1 and got.feedback_config_id is None
    assert "MLFeedbackConnectorConfigId" in caplog.text  # ignored on version 1, and said so


def test_from_environment_bad_environment_lists_every_problem():
    env = {"GGIC_CONNECTOR_ARN": JTX2_V2, "GGIC_CONNECTOR_ID": "MyIC", "MLModelDestinationPath": "", "MLModelResourceId": "my res",
           "LocalInferenceServiceName": "a", "LocalInferenceServiceTimeoutSeconds": "0",
           "LocalInferenceServiceMemoryLimitKB": "010", "GPUAcceleration": "gpu"}
    with pytest.raises(ConfigurationError) as info:
        parameters.ImageClassificationParameters.from_environment(env)
    text = str(info.value)
    assert text.startswith("Invalid connector configuration: 7 problems")
    assert len(text.splitlines()) == 1 + 7
    for fragment in ("MLModelDestinationPath value ''", "MLModelResourceId value 'my res'",
                     "MLModelSageMakerJobArn of ImageClassificationAarch64JTX2 version 2 is missing",
                     "LocalInferenceServiceName value 'a'", "LocalInferenceServiceTimeoutSeconds value '0'",
                     "LocalInferenceServiceMemoryLimitKB value '010'", "GPUAcceleration value 'gpu'"):
        assert fragment in text
    assert len(info.value.error_details) == 7
    assert all(line.startswith("  - [") and "Connector 'MyIC' (ImageClassificationAarch64JTX2 version 2, " in line
               for line in text.splitlines()[1:])


def test_from_environment_invalid_value_with_arn():
    env = dict(params(), GGIC_CONNECTOR_ARN=X86_V2, LocalInferenceServiceTimeoutSeconds="abc1")
    with pytest.raises(ConfigurationError) as info:
        parameters.ImageClassificationParameters.from_environment(env)
    assert codes(info.value.error_details) == ["InvalidParameterValue"]


def test_from_environment_unknown_arn():
    env = dict(params(), GGIC_CONNECTOR_ARN="arn:aws:greengrass:us-west-2::/connectors/MLFeedback/versions/1")
    with pytest.raises(ConfigurationError) as info:
        parameters.ImageClassificationParameters.from_environment(env)
    assert "GGIC_CONNECTOR_ARN" in str(info.value) and "ImageClassificationARMv7" in str(info.value)


def test_from_environment_empty_environment():
    with pytest.raises(ConfigurationError) as info:
        parameters.ImageClassificationParameters.from_environment({})
    assert codes(info.value.error_details) == ["MissingRequiredParameter"] * 6
