"""Checks shared by the inference and feedback clients, so both reject bad calls with the same wording."""
import os
import re

from greengrass_machine_learning_sdk.exception import MissingEnvironmentError, chained

# Service names, algorithm types and feedback config ids all become part of a function name.
NAME_PATTERN = '^[a-zA-Z0-9][a-zA-Z0-9-]{1,62}$'
_NAME = re.compile(r'[a-zA-Z0-9][a-zA-Z0-9-]{1,62}\Z')  # the same rule; '$' alone would accept a trailing newline
_TEXT = type(u'')


def required(kwargs, name, operation):
    if name not in kwargs:
        raise ValueError('"{}" argument of {} is a required argument but was not provided.'.format(name, operation))
    return kwargs[name]


def check_name(value, name):
    try:
        valid = _NAME.match(value) is not None
    except TypeError:  # not text
        valid = False
    if not valid:
        raise ValueError('"{}" must match {} (letters, digits and hyphens, 2-63 characters), got {!r}.'
                         .format(name, NAME_PATTERN, value))
    return value


def check_payload(value, name):
    """Accept what can go on the wire: bytes-like, text (sent as UTF-8) or a readable file object."""
    if isinstance(value, (bytes, _TEXT)) or hasattr(value, 'read'):
        return value
    try:
        memoryview(value)
    except TypeError:
        raise chained(ValueError('"{}" must be bytes, bytearray, str or a readable file object, not {}.'.format(
            name, type(value).__name__)))
    return value


def aws_region():
    region = os.environ.get('AWS_REGION')
    if region is None:
        raise MissingEnvironmentError('AWS_REGION is not set; the Greengrass core sets it for every Lambda, so '
                                      'this code is not running inside a Greengrass core.')
    return region
