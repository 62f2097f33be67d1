"""Checks shared by the inference and feedback clients, so both reject bad calls with the same wording."""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

from greengrass_machine_learning_sdk.exception import MissingEnvironmentError

# Service names, algorithm types and feedback config ids all become part of a function name.
# fullmatch: '$' alone would also accept a trailing newline.
NAME_PATTERN = re.compile(r'^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$')


def required(kwargs: Mapping[str, Any], name: str, operation: str) -> Any:
    if name not in kwargs:
        raise ValueError('"{}" argument of {} is a required argument but was not provided.'.format(name, operation))
    return kwargs[name]


def check_name(value: Any, name: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError('"{}" must match {} (letters, digits and hyphens, 2-63 characters), got {!r}.'
                         .format(name, NAME_PATTERN.pattern, value))
    return value


def check_payload(value: Any, name: str) -> Any:
    """Accept what can go on the wire without conversion (bytes-like) or with an obvious one (str)."""
    if isinstance(value, str):
        return value
    try:
        memoryview(value)
    except TypeError:
        raise ValueError('"{}" must be bytes, bytearray or memoryview, not {}.'.format(
            name, type(value).__name__)) from None
    return value


def aws_region() -> str:
    try:
        return os.environ['AWS_REGION']
    except KeyError:
        raise MissingEnvironmentError('AWS_REGION is not set; the Greengrass core sets it for every Lambda, so '
                                      'this code is not running inside a Greengrass core.') from None
