"""Factory for the ML SDK clients, mirroring boto3's ``client(name)`` style."""
from greengrass_machine_learning_sdk import feedback, inference


class UnrecognizedClientTypeError(Exception):
    """``client()`` was asked for a client type this SDK does not have."""


def client(client_type):
    """Return a new 'inference' or 'feedback' client; raises ValueError if the core's interface is too old."""
    if client_type == 'inference':
        return inference.Client()
    if client_type == 'feedback':
        return feedback.Client()
    raise UnrecognizedClientTypeError('Client type {} is not recognized.'.format(client_type))
