"""Exceptions of the ML SDK, split by who is at fault so callers can react differently.

- GreengrassInferenceException / GreengrassFeedbackException: the connector refused or failed this request.
- GreengrassDependencyException: the connector could not be reached or crashed (not running, timed out, ...).
- MissingEnvironmentError: the Lambda is not running with the environment the core provides.
"""
import json

from greengrass_ipc_python_sdk.ipc_facade import GreengrassRuntimeException

_TEXT = type(u'')


def chained(exception, cause=None):
    """``raise chained(e, c)`` is ``raise e from c`` (``from None`` without a cause) on Python 2 and 3 alike.

    This SDK imports only what a real core's modules offer, so it keeps this one line of its own.
    """
    exception.__cause__ = cause
    return exception


def describe_error_response(error_response):
    """The reason a service gave: its errorMessage (with errorType when present) or the payload text."""
    text = str(error_response) if error_response is not None else ''
    payload = getattr(error_response, 'payload', text)  # parse the whole payload, not the shortened str()
    try:
        decoded = json.loads(payload if isinstance(payload, _TEXT) else bytes(bytearray(payload)).decode('utf-8'))
    except (TypeError, ValueError):
        return text
    if isinstance(decoded, dict) and decoded.get('errorMessage'):
        message = decoded['errorMessage']
        message = message if isinstance(message, _TEXT) else _TEXT(message)
        error_type = decoded.get('errorType')
        return u'{}: {}'.format(error_type, message) if error_type else message
    return text


class _ServiceErrorException(Exception):
    """A handled error answered by a connector; ``error_response`` keeps the full message."""

    def __init__(self, error_response):
        super(_ServiceErrorException, self).__init__(error_response)
        self.error_response = error_response

    def __str__(self):
        text = describe_error_response(self.error_response)
        return text if isinstance(text, str) else text.encode('utf-8')  # Python 2: str() must give bytes


class GreengrassInferenceException(_ServiceErrorException):
    """The inference connector rejected the request or failed to classify it."""


class GreengrassFeedbackException(_ServiceErrorException):
    """The ML Feedback connector rejected the request (unknown ConfigId, bad prediction, throttled...)."""


class GreengrassDependencyException(GreengrassRuntimeException):
    """The connector behind the call is unavailable or failed without handling the error."""


class MissingEnvironmentError(KeyError):
    """An environment variable the core always sets (e.g. AWS_REGION) is missing.

    A KeyError subclass because plain ``os.environ[...]`` raised KeyError here, and callers may catch that.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ''
