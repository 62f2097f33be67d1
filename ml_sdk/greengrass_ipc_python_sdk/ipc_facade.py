"""Request/response calls to a service that lives in another Lambda (e.g. an ML inference connector).

The ML SDK speaks to connectors through this facade rather than through IPCClient so that it deals in
"response or error response" and a single runtime exception, not HTTP details.
"""
from __future__ import annotations

import logging
from typing import Optional, Union

from greengrass_ipc_python_sdk.ipc_client import IPCClient, IPCException

logger = logging.getLogger(__name__)

_TEXT_LIMIT = 2000  # characters of payload shown in str()/repr(): enough for an error text, not a whole image


class GreengrassRuntimeException(Exception):
    """The call did not complete: runtime unreachable, target missing, or the target failed unhandled."""


class GreengrassFunctionFailedException(GreengrassRuntimeException):
    """The function was reached, but the core answered for it: it timed out, ran out of memory or died."""


def _payload_text(payload: Union[bytes, bytearray, memoryview, str, None]) -> str:
    if payload is None:
        return ''
    if isinstance(payload, str):
        text = payload
    else:
        text = bytes(payload[:_TEXT_LIMIT * 4]).decode('utf-8', errors='replace')
    if len(text) > _TEXT_LIMIT:
        text = text[:_TEXT_LIMIT] + '...'
    return text


class GreengrassServiceMessage:
    """A payload sent to or received from a service; ``client_context`` (base64 bytes) travels with requests.

    str() is the payload as text, so an exception built from an error message reads as the service's reason.
    """

    def __init__(self, content_type: str, payload: Union[bytes, bytearray, memoryview, str, None],
                 client_context: Optional[bytes] = None) -> None:
        self.content_type = content_type
        self.payload = payload
        self.client_context = client_context

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (undecodable bytes replaced), cut to a readable length."""
        return _payload_text(self.payload)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return 'GreengrassServiceMessage(content_type={!r}, payload={!r})'.format(self.content_type, self.text)


class GreengrassServiceCallOutput:
    """Exactly one of ``response`` (success) and ``error_response`` (the service reported a handled error) is set."""

    def __init__(self, response: Optional[GreengrassServiceMessage],
                 error_response: Optional[GreengrassServiceMessage]) -> None:
        self.response = response
        self.error_response = error_response

    def __repr__(self) -> str:
        return 'GreengrassServiceCallOutput(response={!r}, error_response={!r})'.format(
            self.response, self.error_response)


class GreengrassServiceClient:
    """Invokes a service function synchronously over IPC and sorts the outcome into response/error/exception.

    One IPCClient is kept per service client so that repeated calls reuse the thread's keep-alive connection.
    """

    def __init__(self, ipc_client: Optional[IPCClient] = None) -> None:
        self._ipc = ipc_client if ipc_client is not None else IPCClient()

    def call(self, address: str, message: GreengrassServiceMessage) -> GreengrassServiceCallOutput:
        """Send ``message`` to the function at ``address`` and wait for its answer."""
        try:
            invocation_id = self._ipc.post_work(address, message.payload, message.client_context, 'RequestResponse')
            result = self._ipc.get_work_result(address, invocation_id)
        except IPCException as error:
            raise GreengrassRuntimeException(str(error)) from error
        if not result.func_err:
            return GreengrassServiceCallOutput(GreengrassServiceMessage('', result.payload), None)
        if result.func_err == 'Handled':
            logger.debug('Service %s reported a handled error', address)
            return GreengrassServiceCallOutput(None, GreengrassServiceMessage('', result.payload))
        # The core detected the failure itself (timeout, out of memory, crash); the payload says which.
        reason = _payload_text(result.payload) or 'no details given'
        raise GreengrassFunctionFailedException('Function {} failed (function error "{}"): {}'.format(
            address, result.func_err, reason))
