"""Request/response calls to a service that lives in another Lambda (e.g. an ML inference connector).

The ML SDKs speak to connectors through this facade rather than through IPCClient, so that they deal in
"response or error response" and a single runtime exception, not HTTP details.  The shapes are those of a real
core's facade, because the AWS ML SDK that Lambdas bundle builds and reads them positionally:

- ``GreengrassServiceMessage(context, payload)``: a namedtuple; ``context`` is the base64 client context (bytes or
  text), ``payload`` the body.  Answers carry ``context=''``.
- ``GreengrassServiceCallOutput(response, error_response)``: a namedtuple; exactly one is set.
- ``GreengrassServiceClient().call(address, message)``; ``GreengrassRuntimeException`` when the call did not
  complete.

What this core adds never changes those shapes: a message's ``str()`` is its payload as readable text; a call the
runtime refused for this request (its body over the runtime's limit, the function's queue full) is answered as
the service's error response, ``{"errorMessage": <the runtime's reason>, "errorType": ...}``, so that an ML SDK
reports it as it reports the service's own refusals (``GreengrassInferenceException``); and a failure the core
answered for the function is a ``GreengrassFunctionFailedException`` with the runtime's reason.
"""
import json
import logging
from collections import namedtuple

from greengrass_ipc_python_sdk.ipc_client import IPCClient, IPCException, with_cause

logger = logging.getLogger(__name__)

_TEXT_LIMIT = 2000  # characters of payload shown in str()/repr(): enough for an error text, not a whole image
_TEXT = type(u'')
# The runtime refused the call for this request: its errorType in the error response, by HTTP status.
_REFUSALS = {413: 'RequestTooLargeError', 429: 'QueueFullError'}


class GreengrassRuntimeException(Exception):
    """The call did not complete: runtime unreachable, target missing, or the target failed unhandled."""


class GreengrassFunctionFailedException(GreengrassRuntimeException):
    """The function was reached, but the core answered for it: it timed out, ran out of memory or died.

    ``function_error`` is the core's function error ('Unhandled'); the message carries the core's reason.
    """

    def __init__(self, message, function_error='Unhandled'):
        super(GreengrassFunctionFailedException, self).__init__(message)
        self.function_error = function_error


def _payload_text(payload):
    if payload is None:
        return ''
    if isinstance(payload, _TEXT):
        text = payload
    elif hasattr(payload, 'read'):  # a file object sent as a body: say so rather than consume it
        return '<{}>'.format(type(payload).__name__)
    else:
        text = bytes(bytearray(memoryview(payload)[:_TEXT_LIMIT * 4])).decode('utf-8', 'replace')
    if len(text) > _TEXT_LIMIT:
        text = text[:_TEXT_LIMIT] + '...'
    return text


class GreengrassServiceMessage(namedtuple('GreengrassServiceMessage', ['context', 'payload'])):
    """A payload sent to or received from a service, with the client context that travels with a request.

    str() is the payload as text, so an exception built from an error message reads as the service's reason.
    """

    __slots__ = ()

    @property
    def text(self):
        """The payload decoded as UTF-8 (undecodable bytes replaced), cut to a readable length."""
        return _payload_text(self.payload)

    def __str__(self):
        text = self.text
        return text if isinstance(text, str) else text.encode('utf-8')  # Python 2: str() must give bytes

    def __repr__(self):
        return 'GreengrassServiceMessage(context={!r}, payload={!r})'.format(self.context, self.text)


GreengrassServiceCallOutput = namedtuple('GreengrassServiceCallOutput', ['response', 'error_response'])


class GreengrassServiceClient(object):
    """Invokes a service function synchronously over IPC and sorts the outcome into response/error/exception.

    One IPCClient is kept per service client so that repeated calls reuse the thread's keep-alive connection.
    """

    def __init__(self, ipc_client=None):
        self._ipc = ipc_client if ipc_client is not None else IPCClient()

    def call(self, address, message):
        """Send ``message`` to the function at ``address`` and wait for its answer."""
        try:
            invocation_id = self._ipc.post_work(address, message.payload, message.context, 'RequestResponse')
            result = self._ipc.get_work_result(address, invocation_id)
        except IPCException as error:
            if error.status in _REFUSALS:
                logger.debug('The runtime refused the call to %s: %s', address, error)
                refusal = {'errorMessage': error.error_message or str(error), 'errorType': _REFUSALS[error.status]}
                return GreengrassServiceCallOutput(None, GreengrassServiceMessage('', json.dumps(refusal)))
            raise with_cause(GreengrassRuntimeException(str(error)), error)
        if not result.func_err:
            return GreengrassServiceCallOutput(GreengrassServiceMessage('', result.payload), None)
        if result.func_err == 'Handled':
            logger.debug('Service %s reported a handled error', address)
            return GreengrassServiceCallOutput(None, GreengrassServiceMessage('', result.payload))
        # The core detected the failure itself (timeout, out of memory, crash); the payload says which.
        reason = _payload_text(result.payload) or 'no details given'
        raise GreengrassFunctionFailedException('Function {} failed (function error "{}"): {}'.format(
            address, result.func_err, reason), result.func_err)
