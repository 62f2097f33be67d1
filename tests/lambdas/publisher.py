"""A user Lambda that publishes with the unmodified greengrasssdk's iot-data client, as Lambdas of a group do.

Event: {"messages": [{"topic": ..., "payload": <text> | "payload_b64": <base64 bytes>, "queueFullPolicy": ...}]}.
Each message is published in order; what the SDK raises is returned per message instead of failing the rest.
"""
import base64

import greengrasssdk

iot = greengrasssdk.client('iot-data')


def function_handler(event, context):
    errors = []
    for message in event['messages']:
        payload = base64.b64decode(message['payload_b64']) if 'payload_b64' in message else message.get('payload', '')
        kwargs = {'queueFullPolicy': message['queueFullPolicy']} if 'queueFullPolicy' in message else {}
        try:
            iot.publish(topic=message['topic'], payload=payload, **kwargs)
            errors.append(None)
        except Exception as exc:  # the test checks what the SDK raised
            errors.append('{}: {}'.format(type(exc).__name__, exc))
    return {'errors': errors}
