"""A user Lambda that calls another one with the unmodified greengrasssdk, as Lambdas in a Greengrass group do."""
import json
import os

import greengrasssdk

lambda_client = greengrasssdk.client('lambda')


def function_handler(event, context):
    target = 'arn:aws:lambda:{}:{}:function:echo'.format(os.environ['AWS_REGION'],
                                                        os.environ['MY_FUNCTION_ARN'].split(':')[4])
    response = lambda_client.invoke(FunctionName=target, InvocationType='RequestResponse',
                                    Payload=json.dumps({'via': 'caller', 'original': event}))
    return {'payload_type': type(response['Payload']).__name__,
            'function_error': response['FunctionError'],
            'echo': json.loads(response['Payload'].read())}
