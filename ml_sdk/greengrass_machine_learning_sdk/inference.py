"""Client for local inference connectors (e.g. ML Image Classification), called as a Lambda over IPC.

It uses only what a real core's `ipc_facade` offers (this SDK also runs in a Lambda zip on a real core). The
connector's refusals and the runtime's (a body over its limit, a full queue: this core's facade answers those as
error responses) are GreengrassInferenceExceptions; so is a failure the core answered for the connector, told apart
by its `function_error` attribute (a timeout, out of memory); a connector that cannot be reached is a
GreengrassDependencyException.
"""
import base64
import json
import logging

from greengrass_ipc_python_sdk.ipc_facade import (GreengrassRuntimeException, GreengrassServiceClient,
                                                  GreengrassServiceMessage)
from greengrass_machine_learning_sdk import arguments
from greengrass_machine_learning_sdk.exception import (GreengrassDependencyException, GreengrassInferenceException,
                                                       chained)
from greengrass_machine_learning_sdk.interface_version import require_core_interface
from greengrass_machine_learning_sdk.streaming_body import StreamingBody

logger = logging.getLogger(__name__)

_OPERATION = 'InferenceClient.invoke_inference_service'
_TEXT = type(u'')


def service_address(region, algo_type, service_name):
    """The connector's function ARN: connectors live under account 'aws', named after algorithm and service."""
    return 'arn:aws:lambda:{}:aws:function:GG-ML-INF-{}-{}'.format(region, algo_type, service_name)


def _is_request_failure(error):
    """Failed by the core for this request (a timeout, out of memory), not unreachable."""
    return getattr(error, 'function_error', None) is not None


class Client(object):
    """Inference client; build it with ``greengrass_machine_learning_sdk.client('inference')``."""

    def __init__(self):
        require_core_interface()
        self._service = GreengrassServiceClient()

    def invoke_inference_service(self, **kwargs):
        """Run one inference.

        Keyword arguments: AlgoType (e.g. 'image-classification'), ServiceName (the connector's
        LocalInferenceServiceName) and Body (bytes, bytearray, str or a readable file object) are required;
        ContentType (e.g. 'image/jpeg') and Accept are passed to the connector unchecked.  Returns the
        connector's response dict with 'Body' as a StreamingBody (for image classification, JSON text of
        per-class probabilities) and 'ContentType'.  Raises GreengrassInferenceException when the service rejects
        or fails this request (bad input, too large, busy, timed out, out of memory) and
        GreengrassDependencyException when it cannot be reached at all.
        """
        region = arguments.aws_region()
        service_name = arguments.required(kwargs, 'ServiceName', _OPERATION)
        body = arguments.required(kwargs, 'Body', _OPERATION)
        algo_type = arguments.required(kwargs, 'AlgoType', _OPERATION)
        arguments.check_name(algo_type, 'AlgoType')
        arguments.check_name(service_name, 'ServiceName')
        arguments.check_payload(body, 'Body')

        custom = {'Content-Type': kwargs.get('ContentType'), 'Accept': kwargs.get('Accept')}
        context = {'custom': dict((key, value) for key, value in custom.items() if value is not None)}
        client_context = base64.b64encode(json.dumps(context).encode('utf-8'))
        address = service_address(region, algo_type, service_name)

        logger.debug('Invoking inference service %s', address)
        try:
            output = self._service.call(address, GreengrassServiceMessage(client_context, body))
        except GreengrassRuntimeException as error:
            failure = GreengrassInferenceException if _is_request_failure(error) else GreengrassDependencyException
            raise chained(failure(str(error)), error)
        if output.error_response is not None:
            raise GreengrassInferenceException(output.error_response)
        return _parse_response(address, output.response.payload)


def _parse_response(address, payload):
    try:
        response = json.loads(payload.decode('utf-8') if isinstance(payload, bytes) else payload)
    except ValueError as error:
        raise chained(GreengrassDependencyException('Inference service {} answered with something that is not '
                                                    'JSON: {}'.format(address, error)))
    if not isinstance(response, dict):
        raise GreengrassDependencyException('Inference service {} answered with JSON that is not an object.'
                                            .format(address))
    if 'Body' in response:
        body = response['Body']
        # The connector sends the body as JSON text; tolerate an already-decoded value by re-serialising it.
        text = body if isinstance(body, _TEXT) else json.dumps(body)
        response['Body'] = StreamingBody(text.encode('utf-8'))
    return response
