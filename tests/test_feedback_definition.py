"""A connector definition with the ML Feedback connector: its parameters, and the image classification
connectors (version 2) that point at it through MLFeedbackConnectorConfigId."""

import json

import pytest

from connector.contract import catalog, problems
from connector.control import connector_definitions
from connector.devices.platforms import check_connector_platforms

FEEDBACK = "arn:aws:greengrass:us-west-2::/connectors/MLFeedback/versions/1"
X86_V1 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/1"
X86_V2 = "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/2"
IC_PARAMETERS = {
    "MLModelDestinationPath": "/path-to-model",
    "MLModelResourceId": "my-ml-resource",
    "MLModelSageMakerJobArn": "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyImageClassifier",
    "LocalInferenceServiceName": "imageClassification",
    "LocalInferenceServiceTimeoutSeconds": "10",
    "LocalInferenceServiceMemoryLimitKB": "500000",
}
MAP = {
    "RandomSamplingConfiguration": {"s3-bucket-name": "my-aws-bucket-random-sampling", "content-type": "image/png",
                                    "file-ext": "png",
                                    "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": 0.5}},
    "LeastConfidence": {"s3-bucket-name": "my-aws-bucket", "content-type": "image/jpeg", "s3-prefix": "lc",
                        "sampling-strategy": {"strategy-name": "LEAST_CONFIDENCE", "threshold": 0.4}},
}


def feedback(configuration=MAP, **extra):
    parameters = {"FeedbackConfigurationMap": configuration if isinstance(configuration, str)
                  else json.dumps(configuration)}
    parameters.update(extra)
    return {"Id": "MyFeedback", "ConnectorArn": FEEDBACK, "Parameters": parameters}


def classifier(arn=X86_V2, **extra):
    return {"Id": "MyClassifier", "ConnectorArn": arn, "Parameters": {**IC_PARAMETERS, **extra}}


def definition(*connectors):
    return {"Name": "with-feedback", "InitialVersion": {"Connectors": list(connectors)}}


def details_of(body):
    with pytest.raises(problems.BadRequestError) as info:
        connector_definitions.validate_connector_definition(body)
    return info.value.error_details


def test_the_documented_feedback_connector_with_a_classifier_that_uses_it_is_accepted():
    body, warnings = connector_definitions.validate_connector_definition(definition(
        feedback(RequestLimit="10"), classifier(MLFeedbackConnectorConfigId="LeastConfidence")))
    assert [c["Id"] for c in body["InitialVersion"]["Connectors"]] == ["MyFeedback", "MyClassifier"]
    assert not any("platform" in warning for warning in warnings)  # ML Feedback runs on any platform


def test_the_feedback_connector_is_hosted_as_the_documented_function():
    spec = catalog.connector_spec(FEEDBACK)
    assert (spec.name, spec.version, spec.platform, spec.is_feedback) == ("MLFeedback", 1, "any", True)
    assert spec.function_arn({}, "eu-west-1") == "arn:aws:lambda:eu-west-1:aws:function:MLFeedback"
    assert spec.handler == "connector.feedback.handler.function_handler"
    assert not catalog.connector_spec(X86_V2).is_feedback
    assert check_connector_platforms([("MyFeedback", "MLFeedback", "any")], machine="armv7l") == []


def test_a_config_id_the_feedback_connector_does_not_define_is_refused_naming_the_ones_it_does():
    details = details_of(definition(feedback(), classifier(MLFeedbackConnectorConfigId="Entropy")))
    assert [d["DetailedErrorCode"] for d in details] == [problems.UNKNOWN_FEEDBACK_CONFIG_ID]
    message = details[0]["DetailedErrorMessage"]
    assert "'MyClassifier'" in message and "'Entropy'" in message and "'MyFeedback'" in message
    assert "LeastConfidence, RandomSamplingConfiguration" in message


def test_a_config_id_without_any_feedback_connector_is_refused():
    details = details_of(definition(classifier(MLFeedbackConnectorConfigId="LeastConfidence")))
    assert [d["DetailedErrorCode"] for d in details] == [problems.UNKNOWN_FEEDBACK_CONFIG_ID]
    assert "this definition has none" in details[0]["DetailedErrorMessage"]
    assert "connectors/MLFeedback/versions/1" in details[0]["DetailedErrorMessage"]


def test_an_empty_config_id_means_no_feedback_and_needs_no_feedback_connector():
    normalised, warnings = connector_definitions.validate_connector_definition(
        definition(classifier(MLFeedbackConnectorConfigId="")))
    assert warnings == []
    assert normalised["InitialVersion"]["Connectors"][0]["Parameters"]["MLFeedbackConnectorConfigId"] == ""
    # The same definition with a config id is refused: it has no ML Feedback connector to name it.
    details = details_of(definition(classifier(MLFeedbackConnectorConfigId="LeastConfidence")))
    assert [d["DetailedErrorCode"] for d in details] == [problems.UNKNOWN_FEEDBACK_CONFIG_ID]


def test_version_1_has_no_feedback_parameter():
    details = details_of(definition(feedback(), classifier(X86_V1, MLFeedbackConnectorConfigId="LeastConfidence")))
    assert [d["DetailedErrorCode"] for d in details] == [problems.UNKNOWN_PARAMETER]


def test_a_bad_configuration_map_is_refused_with_the_definition_naming_the_config_and_field():
    bad = dict(MAP, Broken={"s3-bucket-name": "UPPER_CASE", "content-type": "image/png"})
    details = details_of(definition(feedback(bad), classifier(MLFeedbackConnectorConfigId="LeastConfidence")))
    assert {d["DetailedErrorCode"] for d in details} == {problems.INVALID_PARAMETER_VALUE}
    text = " ".join(d["DetailedErrorMessage"] for d in details)
    assert "FeedbackConfigurationMap" in text and "Broken" in text and "s3-bucket-name" in text
    # The classifier's reference is not reported on top of the broken map it points into.
    assert problems.UNKNOWN_FEEDBACK_CONFIG_ID not in [d["DetailedErrorCode"] for d in details]


@pytest.mark.parametrize("parameters, code", [
    ({}, problems.MISSING_REQUIRED_PARAMETER),
    ({"FeedbackConfigurationMap": "{not json"}, problems.INVALID_PARAMETER_VALUE),
    ({"FeedbackConfigurationMap": json.dumps(MAP), "RequestLimit": "1000"}, problems.INVALID_PARAMETER_VALUE),
    ({"FeedbackConfigurationMap": json.dumps(MAP), "RequestLimit": "-1"}, problems.INVALID_PARAMETER_VALUE),
    ({"FeedbackConfigurationMap": json.dumps(MAP), "LocalInferenceServiceName": "x"}, problems.UNKNOWN_PARAMETER),
])
def test_feedback_connector_parameter_problems(parameters, code):
    body = definition({"Id": "MyFeedback", "ConnectorArn": FEEDBACK, "Parameters": parameters})
    assert code in [d["DetailedErrorCode"] for d in details_of(body)]


def test_two_feedback_connectors_are_refused():
    second = dict(feedback(), Id="Other")
    details = details_of(definition(feedback(), second))
    assert [d["DetailedErrorCode"] for d in details] == [problems.DUPLICATE_CONNECTOR]
