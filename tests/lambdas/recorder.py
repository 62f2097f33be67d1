"""A user Lambda that records each message routed to it: the event, and the topic and publisher a core puts in the
client context. One JSON line per message in the file named by RECORDER_FILE. An event {"sleep": s} keeps it busy."""
import json
import os
import time


def function_handler(event, context):
    custom = context.client_context.custom
    record = {'event': event, 'subject': custom.get('subject'), 'source': custom.get('source'),
              'function': context.function_name}
    with open(os.environ['RECORDER_FILE'], 'a') as records:
        records.write(json.dumps(record) + '\n')
    if isinstance(event, dict) and event.get('sleep'):
        time.sleep(float(event['sleep']))
    return record
