"""Client for local inference connectors (e.g. ML Image Classification), called as a Lambda over IPC."""
from __future__ import annotations

import base64
import json
import logging
from typing import Any, Dict

from greengrass_ipc_python_sdk.ipc_client import IPCException
from greengrass_ipc_python_sdk.ipc_facade import (GreengrassFunctionFailedException, GreengrassRuntimeException,
                                                  GreengrassServiceClient, GreengrassServiceMessage)
from greengrass_machine_learning_sdk import arguments
from greengrass_machine_learning_sdk.exception import GreengrassDependencyException, GreengrassInferenceException
from greengrass_machine_learning_sdk.interface_version import require_core_interface
from greengrass_machine_learning_sdk.streaming_body import StreamingBody

logger = logging.getLogger(__name__)

_OPERATION = 'InferenceClient.invoke_inference_service'
# The runtime refused the request on the service's behalf: its body is too large (413) or the service is busy (429).
_REFUSED_STATUSES = (413, 429)


def service_address(region: str, algo_type: str, service_name: str) -> str:
    """The connector's function ARN: connectors live under account 'aws', named after algorithm and service."""
    return 'arn:aws:lambda:{}:aws:function:GG-ML-INF-{}-{}'.format(region, algo_type, service_name)


class Client:
    """Inference client; build it with ``greengrass_machine_learning_sdk.client('inference')``."""

    def __init__(self) -> None:
        require_core_interface()
        self._service = GreengrassServiceClient()

    def invoke_inference_service(self, **kwargs: Any) -> Dict[str, Any]:
        """Run one inference.

        Keyword arguments: AlgoType (e.g. 'image-classification'), ServiceName (the connector's
        LocalInferenceServiceName) and Body (bytes-like) are required; ContentType (e.g. 'image/jpeg') and
        Accept are passed to the connector unchecked.  Returns the connector's response dict with 'Body' as a
        StreamingBody (for image classification, JSON text of per-class probabilities) and 'ContentType'.
        Raises GreengrassInferenceException when the service rejects or fails this request (bad input, too large,
        busy, timed out, out of memory) and GreengrassDependencyException when it cannot be reached at all.
        """
        region = arguments.aws_region()
        service_name = arguments.required(kwargs, 'ServiceName', _OPERATION)
        body = arguments.required(kwargs, 'Body', _OPERATION)
        algo_type = arguments.required(kwargs, 'AlgoType', _OPERATION)
        arguments.check_name(algo_type, 'AlgoType')
        arguments.check_name(service_name, 'ServiceName')
        arguments.check_payload(body, 'Body')

        custom = {'Content-Type': kwargs.get('ContentType'), 'Accept': kwargs.get('Accept')}
        context = {'custom': {key: value for key, value in custom.items() if value is not None}}
        client_context = base64.b64encode(json.dumps(context).encode('utf-8'))
        address = service_address(region, algo_type, service_name)

        logger.debug('Invoking inference service %s', address)
        try:
            output = self._service.call(address, GreengrassServiceMessage('', body, client_context))
        except GreengrassFunctionFailedException as error:
            raise GreengrassInferenceException(str(error)) from error
        except GreengrassRuntimeException as error:
            cause = error.__cause__
            if isinstance(cause, IPCException) and cause.status in _REFUSED_STATUSES:
                raise GreengrassInferenceException(cause.error_message or str(cause)) from error
            raise GreengrassDependencyException(str(error)) from error
        if output.error_response is not None:
            raise GreengrassInferenceException(output.error_response)
        return _parse_response(address, output.response.payload)


def _parse_response(address: str, payload: bytes) -> Dict[str, Any]:
    try:
        response = json.loads(payload)
    except ValueError as error:
        raise GreengrassDependencyException('Inference service {} answered with something that is not JSON: {}'
                                            .format(address, error)) from None
    if not isinstance(response, dict):
        raise GreengrassDependencyException('Inference service {} answered with JSON that is not an object.'
                                            .format(address))
    if 'Body' in response:
        body = response['Body']
        # The connector sends the body as JSON text; tolerate an already-decoded value by re-serialising it.
        text = body if isinstance(body, str) else json.dumps(body)
        response['Body'] = StreamingBody(text.encode('utf-8'))
    return response
