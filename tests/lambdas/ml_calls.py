"""Inference and feedback calls from a plain process acting as a Lambda, on any Python (2.7, 3.7+), two ways:

- `facade`: the calls the AWS `greengrass_machine_learning_sdk` 1.0/1.1 makes, written here from its documented
  behaviour: it builds `GreengrassServiceMessage(context, body)` positionally, with the client context as base64
  bytes, hands it to `GreengrassServiceClient().call(address, message)`, reads `output.error_response`, JSON-decodes
  `output.response.payload` and encodes its `Body` text; Body may be bytes or a file object.
- `ml_sdk`: the same requests through this project's `greengrass_machine_learning_sdk`.

Usage: python ml_calls.py facade|ml_sdk '<request JSON>'; prints the outcomes as JSON. The request names the
service, a PNG and a JPEG file, the feedback ConfigId, a prediction and the metadata to send, and the size of a body
over the runtime's limit.
"""
import base64
import json
import os
import sys

ALGO_TYPE = 'image-classification'


def read(path):
    with open(path, 'rb') as image:
        return image.read()


def oversized(request):
    """A JPEG-looking body larger than the runtime's --max-request-bytes (and than the sockets buffer)."""
    return b'\xff\xd8\xff' + b'\0' * request['oversized_bytes']


def text(data):
    return data if isinstance(data, type(u'')) else bytes(bytearray(data)).decode('utf-8')


def facade(request):
    from greengrass_common.env_vars import GGC_MAX_INTERFACE_VERSION
    from greengrass_common.parse_version import parse_version
    from greengrass_ipc_python_sdk.ipc_facade import (GreengrassRuntimeException, GreengrassServiceClient,
                                                      GreengrassServiceMessage)

    region = os.environ['AWS_REGION']
    service = GreengrassServiceClient()

    def context(custom):
        return base64.b64encode(json.dumps({'custom': custom}).encode('utf-8'))

    def described(message):
        return {'fields': list(message._fields), 'context': message[0], 'payload': text(message[1])}

    def call(function_name, custom, body):
        address = 'arn:aws:lambda:{}:aws:function:{}'.format(region, function_name)
        try:
            output = service.call(address, GreengrassServiceMessage(context(custom), body))
        except GreengrassRuntimeException as error:
            return {'exception': type(error).__name__, 'base': 'GreengrassRuntimeException', 'message': str(error)}
        if output.error_response:
            return {'error_response': described(output.error_response), 'output_fields': list(output._fields)}
        if function_name == 'MLFeedback':
            return {'accepted': True}
        response = json.loads(output.response.payload)
        return {'ContentType': response['ContentType'], 'Body': text(response['Body'].encode('utf-8'))}

    inference = 'GG-ML-INF-{}-{}'.format(ALGO_TYPE, request['service'])
    feedback = {'ConfigId': request['config_id'], 'ModelPrediction': request['prediction'],
                'Metadata': request['metadata']}
    with open(request['jpeg'], 'rb') as jpeg_file:
        jpeg_from_file = call(inference, {'Content-Type': 'image/jpeg'}, jpeg_file)
    unknown_config = dict(feedback, ConfigId='NoSuchConfig')
    return {
        'interface': list(parse_version(GGC_MAX_INTERFACE_VERSION)),
        'png': call(inference, {'Content-Type': 'image/png'}, read(request['png'])),
        'jpeg_from_file': jpeg_from_file,
        'refused': call(inference, {'Content-Type': 'image/png'}, b'this is not an image'),
        'unreachable': call('GG-ML-INF-{}-noSuchService'.format(ALGO_TYPE), {'Content-Type': 'image/png'}, b'x'),
        'oversized': call(inference, {'Content-Type': 'image/jpeg'}, oversized(request)),
        'feedback': call('MLFeedback', feedback, read(request['png'])),
        'feedback_refused': call('MLFeedback', unknown_config, read(request['png'])),
    }


def ml_sdk(request):
    import greengrass_machine_learning_sdk as ml

    inference = ml.client('inference')
    feedback = ml.client('feedback')

    def infer(content_type, body, service=request['service']):
        try:
            response = inference.invoke_inference_service(AlgoType=ALGO_TYPE, ServiceName=service,
                                                           ContentType=content_type, Body=body)
        except (ml.GreengrassInferenceException, ml.GreengrassDependencyException) as error:
            return {'exception': type(error).__name__, 'message': str(error)}
        return {'ContentType': response['ContentType'], 'Body': response['Body'].read().decode('utf-8')}

    def publish(config_id):
        try:
            feedback.publish(ConfigId=config_id, ModelInput=read(request['png']),
                             ModelPrediction=request['prediction'], Metadata=request['metadata'])
        except ml.GreengrassFeedbackException as error:
            return {'exception': type(error).__name__, 'message': str(error)}
        return {'accepted': True}

    with open(request['jpeg'], 'rb') as jpeg_file:
        jpeg_from_file = infer('image/jpeg', jpeg_file)
    return {
        'sdk_file': ml.__file__,
        'png': infer('image/png', bytearray(read(request['png']))),
        'jpeg_from_file': jpeg_from_file,
        'refused': infer('image/png', b'this is not an image'),
        'unreachable': infer('image/png', b'x', service='noSuchService'),
        'oversized': infer('image/jpeg', oversized(request)),
        'feedback': publish(request['config_id']),
        'feedback_refused': publish('NoSuchConfig'),
    }


if __name__ == '__main__':
    outcome = {'facade': facade, 'ml_sdk': ml_sdk}[sys.argv[1]](json.loads(sys.argv[2]))
    outcome['python'] = '.'.join(str(part) for part in sys.version_info[:3])
    sys.stdout.write(json.dumps(outcome))
