"""Greengrass Machine Learning SDK: call local ML inference connectors and the ML Feedback connector.

Usage inside a Greengrass Lambda::

    import greengrass_machine_learning_sdk as ml
    response = ml.client('inference').invoke_inference_service(
        AlgoType='image-classification', ServiceName='my-classifier', ContentType='image/jpeg', Body=jpeg_bytes)
    probabilities = json.loads(response['Body'].read())
"""
from greengrass_machine_learning_sdk.client import client
from greengrass_machine_learning_sdk.exception import (GreengrassDependencyException, GreengrassFeedbackException,
                                                       GreengrassInferenceException)
from greengrass_machine_learning_sdk.streaming_body import StreamingBody

__version__ = '1.1.0'

__all__ = ['client', 'GreengrassInferenceException', 'GreengrassDependencyException', 'GreengrassFeedbackException',
           'StreamingBody', '__version__']
