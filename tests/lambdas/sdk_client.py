"""A user Lambda written against greengrasssdk's documented API, as it runs with every release (1.3.0 to 1.6.1) on
every Python (2.7, 3.7+). tests/test_real_clients.py copies it once per cell of its matrix into a folder beside the
greengrasssdk release that cell bundles, and runs it hosted (`function_handler`) and as a plain process
(`python <cell>.py '<event JSON>'`, printing the answer).

It imports the ML SDK too, to show which copy a Lambda gets. Each call invokes the echo Lambda (RequestResponse,
with a client context), invokes it again as an Event, invokes a Lambda whose handler fails, publishes to the event's
topic, tries the local shadow and Secrets Manager (which this core does not run), and answers what each call
returned.
"""
import base64
import json
import os
import sys

import greengrasssdk
import greengrass_machine_learning_sdk  # the Lambda's own copy when it bundles one, else the core's

lambda_client = greengrasssdk.client('lambda')
iot_client = greengrasssdk.client('iot-data')


def function_arn(name):
    """A function of this one's region and account: arn:aws:lambda:<region>:<account>:function:<name>."""
    return ':'.join(os.environ['MY_FUNCTION_ARN'].split(':')[:6] + [name])


def text(payload):
    """A response payload (a StreamingBody, or bytes for an error) as text."""
    data = payload.read() if hasattr(payload, 'read') else payload
    return data.decode('utf-8')


def run(event):
    context = base64.b64encode(json.dumps({'custom': {'cell': event['cell']}}).encode('utf-8'))
    echoed = lambda_client.invoke(FunctionName=function_arn('echo'), ClientContext=context,
                                  Payload=json.dumps({'n': event['n']}))
    queued = lambda_client.invoke(FunctionName=function_arn('echo'), InvocationType='Event',
                                  Payload=json.dumps({'event': event['n']}))
    failed = lambda_client.invoke(FunctionName=function_arn('failing'), Payload=json.dumps({'n': event['n']}))
    iot_client.publish(topic=event['topic'], payload=json.dumps({'n': event['n'], 'cell': event['cell']}))
    return {
        'unserved': unserved(),
        'python': '.'.join(str(part) for part in sys.version_info[:3]),
        'sdk': greengrasssdk.__version__,
        'sdk_file': greengrasssdk.__file__,
        'ml_sdk_file': greengrass_machine_learning_sdk.__file__,
        'pythonpath': os.environ.get('PYTHONPATH'),
        'echo': json.loads(text(echoed['Payload'])),
        'echo_error': echoed['FunctionError'],
        'event': {'payload': text(queued['Payload']), 'error': queued['FunctionError']},
        'failed': {'payload': json.loads(text(failed['Payload'])), 'error': failed['FunctionError']},
    }


def unserved():
    """The local shadow and Secrets Manager, which this core does not run: what each call raises."""
    calls = {'shadow': lambda: iot_client.get_thing_shadow(thingName='thing'),
             'secretsmanager': lambda: greengrasssdk.client('secretsmanager').get_secret_value(SecretId='secret')}
    raised = {}
    for name, call in calls.items():
        try:
            call()
            raised[name] = None
        except Exception as error:  # the test checks which exception, with which reason
            raised[name] = '{}: {}'.format(type(error).__name__, error)
    return raised


def function_handler(event, context):
    return run(event)


if __name__ == '__main__':
    sys.stdout.write(json.dumps(run(json.loads(sys.argv[1]))))
