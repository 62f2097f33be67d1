"""The ML Feedback connector's parameters: FeedbackConfigurationMap and RequestLimit.

Greengrass checked connector parameters when a definition was created, so a bad map never reached a core.  The rules
live in ``schemas/ml-feedback-v1.schema.json`` (the Parameters object) and
``schemas/ml-feedback-configuration-map.schema.json`` (the map once parsed), and are applied with the same jsonschema
helpers as the Image Classification parameters (`connector.image_classification.parameters`), so the messages read the
same way and *every* problem is reported at once.

Object keys: ``<s3-prefix>/<uuid>.<file-ext>``, as the connector documents.  An empty prefix adds no leading
slash, a prefix that already ends in ``/`` does not get a second one, an empty extension adds no trailing dot,
and an extension written with its dot (``.png``) does not get a second one.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from connector.feedback.sampling import SamplingError, SamplingStrategy, sampling_strategy
from connector.contract.catalog import FEEDBACK_MAP_PARAMETER
from connector.contract.problems import Problem, find_problems, json_type, show
from connector.contract.schemas import ecma_regex, validator

logger = logging.getLogger("ggic.feedback.configuration")

MAP_SCHEMA = "ml-feedback-configuration-map.schema.json"

PARAMETERS_SCHEMA = "ml-feedback-v1.schema.json"
MAP_PARAMETER = FEEDBACK_MAP_PARAMETER
LIMIT_PARAMETER = "RequestLimit"


class InvalidFeedbackConfigurationError(ValueError):
    """FeedbackConfigurationMap or RequestLimit is invalid; `problems` holds one text per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(f"Invalid ML Feedback connector configuration: {count} problem{'s' if count != 1 else ''}"
                         + "".join(f"\n  - {p}" for p in self.problems))


@dataclass(frozen=True)
class FeedbackConfig:
    """One entry of FeedbackConfigurationMap: where the samples of one config ID go, and which are kept."""

    config_id: str
    bucket: str
    content_type: str
    prefix: str = ""
    file_ext: str = ""
    strategy: Optional[SamplingStrategy] = None  # None: every sample is uploaded

    def object_key(self, sample_id: str) -> str:
        """S3 key of a sample, ``<s3-prefix>/<sample_id>.<file-ext>`` (see the module docstring for joining)."""
        if not sample_id:
            raise ValueError("A sample needs a non-empty id to be given an S3 key")
        key = sample_id
        if self.file_ext:
            key += self.file_ext if self.file_ext.startswith(".") else "." + self.file_ext
        if self.prefix:
            key = (self.prefix if self.prefix.endswith("/") else self.prefix + "/") + key
        return key


# --- parsing ------------------------------------------------------------------------------------------------

class _Object(dict):
    """A parsed JSON object that remembers the keys it was given more than once (json keeps only the last)."""

    duplicates: tuple = ()


def _object_pairs(pairs: list) -> _Object:
    result = _Object(pairs)
    if len(result) != len(pairs):
        seen: set = set()
        result.duplicates = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
    return result


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have.
    raise ValueError(f"{name} is not a JSON value")


def _parse(text: Any) -> tuple[Any, list[str]]:
    """The parsed map, or None and the reason it could not be parsed."""
    if not isinstance(text, str):
        return None, [f"{MAP_PARAMETER} must be a string holding a JSON object, not {json_type(text)}"]
    if not text.strip():
        return None, [f"{MAP_PARAMETER} is empty; it must be a JSON object of feedback configurations"]
    try:
        return json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant), []
    except json.JSONDecodeError as error:
        return None, [f"{MAP_PARAMETER} is not valid JSON: {error.msg} at line {error.lineno} column "
                      f"{error.colno} (char {error.pos})"]
    except ValueError as error:
        return None, [f"{MAP_PARAMETER} is not valid JSON: {error}"]


def _field(path: tuple) -> str:
    return ".".join(str(part) for part in path)


def _problem_text(problem: Problem, data: Mapping) -> str:
    config_id, where = problem.path[0], _field(problem.path[1:])
    subject = f"{MAP_PARAMETER}: config {config_id!r}"
    if not where:
        return f"{subject} {problem.rule}"
    if problem.kind == "missing":
        return f"{subject} is missing required field {where}"
    if problem.kind == "unknown":
        allowed = validator(MAP_SCHEMA).schema["$defs"][
            "FeedbackConfiguration" if len(problem.path) == 2 else "SamplingStrategy"]["properties"]
        close = difflib.get_close_matches(str(problem.path[-1]), list(allowed), n=1)
        return (f"{subject} field {where} is not allowed (value {show(problem.value)})"
                + (f"; did you mean {close[0]}?" if close else f"; allowed fields are {', '.join(allowed)}"))
    rule = problem.rule
    if rule.endswith("should not be valid under {}"):  # the schema's "not used by this strategy" marker
        strategy = data.get(config_id, {}).get("sampling-strategy", {}).get("strategy-name")
        rule = f"is not used by strategy {strategy}"
    elif rule.startswith(repr(problem.value) + " "):  # jsonschema's own messages repeat the value
        rule = rule[len(repr(problem.value)) + 1:]
    return f"{subject} field {where} value {show(problem.value)} {rule}"


def _map_problems(data: Any) -> list[str]:
    schema = validator(MAP_SCHEMA)
    if not isinstance(data, dict):
        return [f"{MAP_PARAMETER} must be a JSON object of feedback configurations, not {json_type(data)}"]
    if not data:
        return [f"{MAP_PARAMETER} has no feedback configuration; it must define at least one config ID"]
    order = {config_id: i for i, config_id in enumerate(data)}
    problems: list[tuple] = []
    for config_id in getattr(data, "duplicates", ()):
        problems.append((order[config_id], 0, f"{MAP_PARAMETER}: config ID {config_id!r} is defined more than "
                                              f"once; config IDs must be unique"))
    # jsonschema reports each propertyNames failure at the map itself, so identical ones would merge: check here.
    id_pattern = schema.schema["propertyNames"]["pattern"]
    for config_id in data:
        if not ecma_regex(id_pattern).search(config_id):
            problems.append((order[config_id], 0, f"{MAP_PARAMETER}: config ID {show(config_id)} does not "
                                                  f"match pattern {id_pattern}"))
        entry = data[config_id]
        for name in getattr(entry, "duplicates", ()):
            problems.append((order[config_id], 1, f"{MAP_PARAMETER}: config {config_id!r} gives field {name} "
                                                  f"more than once"))
        strategy = entry.get("sampling-strategy") if isinstance(entry, dict) else None
        for name in getattr(strategy, "duplicates", ()):
            problems.append((order[config_id], 1, f"{MAP_PARAMETER}: config {config_id!r} gives field "
                                                  f"sampling-strategy.{name} more than once"))
    for problem in find_problems(schema, data):
        if problem.path:
            problems.append((order.get(problem.path[0], len(order)), 2, _problem_text(problem, data)))
    problems.sort(key=lambda item: item[:2])
    return [text for *_, text in problems]


def configuration_problems(text: Any) -> list[str]:
    """Every problem of a FeedbackConfigurationMap value, one text each; empty when it is valid."""
    data, problems = _parse(text)
    return problems or _map_problems(data)


def parse_configuration_map(text: str) -> Dict[str, FeedbackConfig]:
    """Parse and validate FeedbackConfigurationMap; raise InvalidFeedbackConfigurationError listing every problem."""
    data, problems = _parse(text)
    problems = problems or _map_problems(data)
    if problems:
        raise InvalidFeedbackConfigurationError(problems)
    configs = {}
    for config_id, entry in data.items():
        strategy = None
        if "sampling-strategy" in entry:
            try:
                strategy = sampling_strategy(entry["sampling-strategy"])
            except SamplingError as error:  # the schema should have caught it: keep the two in step
                raise InvalidFeedbackConfigurationError([f"{MAP_PARAMETER}: config {config_id!r}: {error}"]) from error
        configs[config_id] = FeedbackConfig(
            config_id=config_id, bucket=entry["s3-bucket-name"], content_type=entry["content-type"],
            prefix=entry.get("s3-prefix", ""), file_ext=entry.get("file-ext", ""), strategy=strategy)
        logger.debug("Feedback configuration %r: bucket %s, strategy %s", config_id, entry["s3-bucket-name"],
                     strategy.name if strategy else "none (every sample)")
    return configs


def parse_request_limit(text: Optional[str]) -> int:
    """RequestLimit as a number: None or "" is 0, which means no limit.  Raises InvalidFeedbackConfigurationError."""
    if text is None or text == "":
        return 0
    pattern = validator(PARAMETERS_SCHEMA).schema["properties"][LIMIT_PARAMETER]["pattern"]
    if not isinstance(text, str):
        raise InvalidFeedbackConfigurationError(
            [f"{LIMIT_PARAMETER} must be a string of 0 to 3 digits, not {json_type(text)} {show(text)}"])
    if not ecma_regex(pattern).search(text):
        raise InvalidFeedbackConfigurationError(
            [f"{LIMIT_PARAMETER} value {show(text)} does not match pattern {pattern} (a number from 0 to 999)"])
    return int(text)
