"""Tests of the ML Feedback connector's parameters (connector.feedback.configuration and its two schemas)."""

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from connector.feedback import configuration as C
from connector.feedback import sampling as S

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"

# The documentation's expanded FeedbackConfigurationMap example.
DOC_EXAMPLE = {
    "ConfigID1": {"s3-bucket-name": "my-aws-bucket-random-sampling", "content-type": "image/png", "file-ext": "png",
                  "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": 0.5}},
    "ConfigID2": {"s3-bucket-name": "my-aws-bucket-margin-sampling", "content-type": "image/png", "file-ext": "png",
                  "sampling-strategy": {"strategy-name": "MARGIN", "threshold": 0.4}},
    "ConfigID3": {"s3-bucket-name": "my-aws-bucket-least-confidence-sampling", "content-type": "image/png",
                  "file-ext": "png", "sampling-strategy": {"strategy-name": "LEAST_CONFIDENCE", "threshold": 0.4}},
    "ConfigID4": {"s3-bucket-name": "my-aws-bucket-entropy-sampling", "content-type": "image/png", "file-ext": "png",
                  "sampling-strategy": {"strategy-name": "ENTROPY", "threshold": 2}},
    "ConfigID5": {"s3-bucket-name": "my-aws-bucket-no-sampling", "s3-prefix": "DeviceA",
                  "content-type": "application/json"},
}

OK = {"s3-bucket-name": "my-bucket", "content-type": "image/jpeg"}


def problems_of(mapping):
    return C.configuration_problems(json.dumps(mapping))


def only_problem(mapping):
    found = problems_of(mapping)
    assert len(found) == 1, found
    return found[0]


# --- valid maps -------------------------------------------------------------------------------------------------

def test_documentation_example_parses():
    configs = C.parse_configuration_map(json.dumps(DOC_EXAMPLE))
    assert list(configs) == list(DOC_EXAMPLE)
    assert configs["ConfigID1"].strategy == S.RandomSampling(0.5)
    assert configs["ConfigID2"].strategy == S.Margin(0.4)
    assert configs["ConfigID3"].strategy == S.LeastConfidence(0.4)
    assert configs["ConfigID4"].strategy == S.Entropy(2.0)
    five = configs["ConfigID5"]
    assert five == C.FeedbackConfig(config_id="ConfigID5", bucket="my-aws-bucket-no-sampling",
                                    content_type="application/json", prefix="DeviceA", file_ext="", strategy=None)
    assert C.configuration_problems(json.dumps(DOC_EXAMPLE)) == []


def test_defaults_and_boundaries_that_are_valid():
    mapping = {
        "ab": OK,  # two characters: the shortest config ID
        "A" + "b-" * 31: OK,  # 63 characters: the longest
        "ent": {**OK, "sampling-strategy": {"strategy-name": "ENTROPY", "threshold": 1e6}},
        "lc0": {**OK, "sampling-strategy": {"strategy-name": "LEAST_CONFIDENCE", "threshold": 0}},
        "m1": {**OK, "sampling-strategy": {"strategy-name": "MARGIN", "threshold": 1}},
        "r0": {**OK, "s3-bucket-name": "a.b", "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": 0}},
    }
    configs = C.parse_configuration_map(json.dumps(mapping))
    assert configs["ab"].prefix == "" and configs["ab"].file_ext == "" and configs["ab"].strategy is None
    assert configs["ent"].strategy.threshold == 1e6
    assert configs["r0"].bucket == "a.b"


# --- object keys ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, ext, key", [
    ("DeviceA", "png", "DeviceA/ID.png"),
    ("", "png", "ID.png"),
    ("DeviceA", "", "DeviceA/ID"),
    ("", "", "ID"),
    ("DeviceA/", "png", "DeviceA/ID.png"),
    ("a/b", ".png", "a/b/ID.png"),
    ("s3-key-prefix", "file_ext", "s3-key-prefix/ID.file_ext"),
])
def test_object_key_shapes(prefix, ext, key):
    config = C.FeedbackConfig("cfg", "bucket", "image/png", prefix=prefix, file_ext=ext)
    assert config.object_key("ID") == key


def test_object_key_needs_a_sample_id():
    with pytest.raises(ValueError):
        C.FeedbackConfig("cfg", "bucket", "image/png").object_key("")


# --- invalid entries: each names the config ID, the field, the value and the rule ----------------------------------

@pytest.mark.parametrize("entry, expected", [
    ({"content-type": "image/png"}, "config 'cfg' is missing required field s3-bucket-name"),
    ({"s3-bucket-name": "my-bucket"}, "config 'cfg' is missing required field content-type"),
    ({**OK, "s3-bucket-name": "My_Bucket"},
     r"config 'cfg' field s3-bucket-name value 'My_Bucket' does not match pattern ^[a-z0-9\.\-]{3,63}$"),
    ({**OK, "s3-bucket-name": "ab"}, "field s3-bucket-name value 'ab' does not match pattern"),
    ({**OK, "s3-bucket-name": "a" * 64}, "field s3-bucket-name value 'aaaa"),
    ({**OK, "s3-bucket-name": "bucket\n"}, "field s3-bucket-name value 'bucket\\n' does not match pattern"),
    ({**OK, "s3-bucket-name": 7}, "field s3-bucket-name value 7 must be of type string, not integer"),
    ({**OK, "content-type": ""}, "field content-type value '' is shorter than 1 characters"),
    ({**OK, "content-type": ["image/png"]}, "field content-type value ['image/png'] must be of type string, not array"),
    ({**OK, "s3-prefix": None}, "field s3-prefix value None must be of type string, not null"),
    ({**OK, "file-ext": 3}, "field file-ext value 3 must be of type string, not integer"),
    ({**OK, "s3-bucket": "x"}, "config 'cfg' field s3-bucket is not allowed (value 'x'); did you mean s3-bucket-name?"),
    ({**OK, "sampling-strategy": "ENTROPY"},
     "field sampling-strategy value 'ENTROPY' must be of type object, not string"),
    ({**OK, "sampling-strategy": {"rate": 0.5}},
     "config 'cfg' is missing required field sampling-strategy.strategy-name"),
    ({**OK, "sampling-strategy": {"strategy-name": "TIME", "rate": 0.5}},
     "field sampling-strategy.strategy-name value 'TIME' is not one of 'RANDOM_SAMPLING', 'LEAST_CONFIDENCE', "
     "'MARGIN', 'ENTROPY'"),
    ({**OK, "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING"}},
     "config 'cfg' is missing required field sampling-strategy.rate"),
    ({**OK, "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": 1.5}},
     "field sampling-strategy.rate value 1.5 is greater than the maximum of 1"),
    ({**OK, "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": "0.5"}},
     "field sampling-strategy.rate value '0.5' must be of type number, not string"),
    ({**OK, "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": True}},
     "field sampling-strategy.rate value True must be of type number, not boolean"),
    ({**OK, "sampling-strategy": {"strategy-name": "MARGIN"}},
     "config 'cfg' is missing required field sampling-strategy.threshold"),
    ({**OK, "sampling-strategy": {"strategy-name": "MARGIN", "threshold": -0.1}},
     "field sampling-strategy.threshold value -0.1 is less than the minimum of 0"),
    ({**OK, "sampling-strategy": {"strategy-name": "LEAST_CONFIDENCE", "threshold": 1.2}},
     "field sampling-strategy.threshold value 1.2 is greater than the maximum of 1"),
    ({**OK, "sampling-strategy": {"strategy-name": "ENTROPY", "threshold": 0}},
     "field sampling-strategy.threshold value 0 is less than or equal to the minimum of 0"),
    ({**OK, "sampling-strategy": {"strategy-name": "ENTROPY", "threshold": -1}},
     "field sampling-strategy.threshold value -1 is less than or equal to the minimum of 0"),
    ({**OK, "sampling-strategy": {"strategy-name": "LEAST_CONFIDENCE", "threshold": 0.4, "rate": 0.4}},
     "field sampling-strategy.rate value 0.4 is not used by strategy LEAST_CONFIDENCE"),
    ({**OK, "sampling-strategy": {"strategy-name": "RANDOM_SAMPLING", "rate": 0.4, "threshold": 0.4}},
     "field sampling-strategy.threshold value 0.4 is not used by strategy RANDOM_SAMPLING"),
    ({**OK, "sampling-strategy": {"strategy-name": "ENTROPY", "threshold": 1, "treshold": 1}},
     "field sampling-strategy.treshold is not allowed (value 1); did you mean threshold?"),
])
def test_each_kind_of_invalid_entry(entry, expected):
    problem = only_problem({"cfg": entry})
    if expected.startswith("field "):
        expected = "config 'cfg' " + expected
    assert problem.startswith(f"FeedbackConfigurationMap: {expected}"), problem
    with pytest.raises(C.InvalidFeedbackConfigurationError) as info:
        C.parse_configuration_map(json.dumps({"cfg": entry}))
    assert info.value.problems == [problem] and problem in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("config_id", ["a", "-ab", "a_b", "a b", "a" * 64, "ab\n", "é-id"])
def test_invalid_config_ids(config_id):
    problem = only_problem({config_id: OK})
    assert problem == (f"FeedbackConfigurationMap: config ID {config_id!r} does not match pattern "
                       f"^[a-zA-Z0-9][a-zA-Z0-9-]{{1,62}}$")


def test_every_problem_is_reported_at_once_in_map_order():
    mapping = {
        "x": OK,
        "good": OK,
        "bad-one": {"s3-bucket-name": "UPPER", "colour": "blue"},
        "y": {**OK, "sampling-strategy": {"strategy-name": "MARGIN", "threshold": 3}},
        "bad-two": "not an object",
    }
    with pytest.raises(C.InvalidFeedbackConfigurationError) as info:
        C.parse_configuration_map(json.dumps(mapping))
    problems = info.value.problems
    assert problems == [
        "FeedbackConfigurationMap: config ID 'x' does not match pattern ^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$",
        "FeedbackConfigurationMap: config 'bad-one' field s3-bucket-name value 'UPPER' does not match pattern "
        r"^[a-z0-9\.\-]{3,63}$",
        "FeedbackConfigurationMap: config 'bad-one' is missing required field content-type",
        "FeedbackConfigurationMap: config 'bad-one' field colour is not allowed (value 'blue'); allowed fields are "
        "s3-bucket-name, content-type, s3-prefix, file-ext, sampling-strategy",
        "FeedbackConfigurationMap: config ID 'y' does not match pattern ^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$",
        "FeedbackConfigurationMap: config 'y' field sampling-strategy.threshold value 3 is greater than the maximum "
        "of 1",
        "FeedbackConfigurationMap: config 'bad-two' must be of type object, not string",
    ]
    assert str(info.value).startswith("Invalid ML Feedback connector configuration: 7 problems\n  - ")
    assert all(f"  - {p}" in str(info.value) for p in problems)


def test_duplicate_config_ids_and_fields_are_reported():
    text = ('{"cfg-1": {"s3-bucket-name": "abc", "content-type": "a", "content-type": "b"},'
            ' "cfg-1": {"s3-bucket-name": "abc", "content-type": "a",'
            ' "sampling-strategy": {"strategy-name": "MARGIN", "threshold": 0.1, "threshold": 0.2}}}')
    assert C.configuration_problems(text) == [
        "FeedbackConfigurationMap: config ID 'cfg-1' is defined more than once; config IDs must be unique",
        "FeedbackConfigurationMap: config 'cfg-1' gives field sampling-strategy.threshold more than once",
    ]


@pytest.mark.parametrize("text, expected", [
    ('{"cfg": {"s3-bucket-name": "abc",}}',
     "FeedbackConfigurationMap is not valid JSON: Expecting property name enclosed in double quotes at line 1 "
     "column 34 (char 33)"),
    ('{"cfg": {"s3-bucket-name": "abc"}\n',
     "FeedbackConfigurationMap is not valid JSON: Expecting ',' delimiter at line 2 column 1 (char 34)"),
    ("{'cfg': {}}", "FeedbackConfigurationMap is not valid JSON: Expecting property name enclosed in double quotes "
                    "at line 1 column 2 (char 1)"),
    ('{"cfg": {"s3-bucket-name": "abc", "content-type": "x", "sampling-strategy": {"strategy-name": "ENTROPY", '
     '"threshold": NaN}}}', "FeedbackConfigurationMap is not valid JSON: NaN is not a JSON value"),
    ("", "FeedbackConfigurationMap is empty; it must be a JSON object of feedback configurations"),
    ("[]", "FeedbackConfigurationMap must be a JSON object of feedback configurations, not array"),
    ('"{}"', "FeedbackConfigurationMap must be a JSON object of feedback configurations, not string"),
    ("{}", "FeedbackConfigurationMap has no feedback configuration; it must define at least one config ID"),
])
def test_map_level_errors(text, expected):
    assert C.configuration_problems(text) == [expected]
    with pytest.raises(C.InvalidFeedbackConfigurationError, match="1 problem$|1 problem\n"):
        C.parse_configuration_map(text)


def test_a_map_that_is_not_a_string():
    assert C.configuration_problems(DOC_EXAMPLE) == [
        "FeedbackConfigurationMap must be a string holding a JSON object, not object"]


# --- RequestLimit ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, limit", [(None, 0), ("", 0), ("0", 0), ("10", 10), ("007", 7), ("999", 999)])
def test_request_limit(text, limit):
    assert C.parse_request_limit(text) == limit


@pytest.mark.parametrize("text", ["1000", "-1", "1.5", " 5", "5 ", "10\n", "ten", "٣"])
def test_invalid_request_limit(text):
    with pytest.raises(C.InvalidFeedbackConfigurationError) as info:
        C.parse_request_limit(text)
    assert info.value.problems == [f"RequestLimit value {text!r} does not match pattern ^$|^[0-9]{{1,3}}$ "
                                   f"(a number from 0 to 999)"]


def test_request_limit_must_be_a_string():
    with pytest.raises(C.InvalidFeedbackConfigurationError, match="RequestLimit must be a string.*not integer 5"):
        C.parse_request_limit(5)


# --- the Parameters object and the schema files -------------------------------------------------------------------

def test_schema_files():
    params = json.loads((SCHEMAS / "ml-feedback-v1.schema.json").read_text())
    content = json.loads((SCHEMAS / "ml-feedback-configuration-map.schema.json").read_text())
    for schema in (params, content):
        Draft202012Validator.check_schema(schema)
    assert params["required"] == ["FeedbackConfigurationMap"] and params["additionalProperties"] is False
    assert params["properties"]["RequestLimit"]["pattern"] == "^$|^[0-9]{1,3}$"
    assert params["properties"]["FeedbackConfigurationMap"]["type"] == "string"
    assert content["propertyNames"]["pattern"] == "^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$"
    entry = content["$defs"]["FeedbackConfiguration"]
    assert entry["required"] == ["s3-bucket-name", "content-type"] and entry["additionalProperties"] is False
    assert entry["properties"]["s3-bucket-name"]["pattern"] == r"^[a-z0-9\.\-]{3,63}$"
    # The documentation example is valid under the content schema read by a plain validator too.
    assert list(Draft202012Validator(content).iter_errors(DOC_EXAMPLE)) == []
