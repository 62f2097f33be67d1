"""Client for the ML Feedback connector: send a model input and its prediction for upload and republishing.

The call only hands the sample to the connector (which samples and uploads asynchronously); success means
"accepted", not "uploaded".
"""
import base64
import json
import logging

from greengrass_ipc_python_sdk.ipc_facade import (GreengrassRuntimeException, GreengrassServiceClient,
                                                  GreengrassServiceMessage)
from greengrass_machine_learning_sdk import arguments
from greengrass_machine_learning_sdk.exception import (GreengrassDependencyException,  # noqa: F401 (re-exported)
                                                       GreengrassFeedbackException, chained)
from greengrass_machine_learning_sdk.interface_version import require_core_interface

logger = logging.getLogger(__name__)

_OPERATION = 'Feedback.Client.publish'


class Client(object):
    """Feedback client; build it with ``greengrass_machine_learning_sdk.client('feedback')``."""

    def __init__(self):
        require_core_interface()
        self._address = 'arn:aws:lambda:{}:aws:function:MLFeedback'.format(arguments.aws_region())
        self._service = GreengrassServiceClient()

    def publish(self, **kwargs):
        """Hand one sample to the ML Feedback connector.

        Keyword arguments: ConfigId (a key of the connector's FeedbackConfigurationMap), ModelInput (bytes-like,
        uploaded as the sample), ModelPrediction (list or dict) are required; Metadata (dict) is optional.
        Raises GreengrassFeedbackException when the connector rejects the sample and
        GreengrassDependencyException when no feedback connector can be reached.
        """
        config_id = arguments.required(kwargs, 'ConfigId', _OPERATION)
        model_input = arguments.required(kwargs, 'ModelInput', _OPERATION)
        model_prediction = arguments.required(kwargs, 'ModelPrediction', _OPERATION)
        metadata = kwargs.get('Metadata', {})
        arguments.check_name(config_id, 'ConfigId')
        arguments.check_payload(model_input, 'ModelInput')
        if not isinstance(model_prediction, (list, dict)):
            raise ValueError('"ModelPrediction" must be a list or a dict, not {}.'.format(
                type(model_prediction).__name__))
        if not isinstance(metadata, dict):
            raise ValueError('"Metadata" must be a dict, not {}.'.format(type(metadata).__name__))

        context = {'custom': {'ConfigId': config_id, 'ModelPrediction': model_prediction, 'Metadata': metadata}}
        try:
            context_json = json.dumps(context)
        except (TypeError, ValueError) as error:
            raise chained(ValueError('"ModelPrediction" and "Metadata" must be JSON-serialisable: {}'.format(error)))
        client_context = base64.b64encode(context_json.encode('utf-8'))

        try:
            output = self._service.call(self._address, GreengrassServiceMessage(client_context, model_input))
        except GreengrassRuntimeException as error:
            raise chained(GreengrassDependencyException(str(error)), error)
        if output.error_response is not None:
            raise GreengrassFeedbackException(output.error_response)
        logger.debug('Feedback sample for config %s accepted by %s', config_id, self._address)
