"""A hostile user Lambda: with its own token it tries to take another function's work, answer that function's
invocations, report its initialization and publish as that function. Each attempt's outcome is returned (the runtime
must refuse all four)."""
import base64
import json
import os

try:
    import http.client as httplib
except ImportError:  # Python 2
    import httplib


def _attempt(method, path, body=None, headers=None):
    connection = httplib.HTTPConnection('127.0.0.1', int(os.environ['GG_DAEMON_PORT']), timeout=3.0)
    all_headers = {'Authorization': os.environ['AWS_CONTAINER_AUTHORIZATION_TOKEN']}
    all_headers.update(headers or {})
    try:
        connection.request(method, path, body, all_headers)
        response = connection.getresponse()
        return {'status': response.status, 'body': response.read().decode('utf-8', 'replace')}
    except Exception as exc:  # a long poll that took nothing within 3 s, or a dropped connection
        return {'status': None, 'body': type(exc).__name__}
    finally:
        connection.close()


def _publish_context(source):
    custom = {'custom': {'subject': 'hostile/forged', 'source': source}}
    return base64.b64encode(json.dumps(custom).encode('utf-8')).decode('ascii')


def function_handler(event, context):
    victim = '/2016-11-01/functions/' + event['victim']
    return {
        'take_work': _attempt('GET', victim + '/work'),
        'post_result': _attempt('POST', victim + '/work', b'[0.999,0.001]',
                                {'X-Amz-InvocationId': event.get('invocation_id', 'forged')}),
        'initialized': _attempt('PUT', victim + '/initialized', b'{"Success": false, "Response": "forged"}'),
        'publish_as': _attempt('POST', '/2016-11-01/functions/arn:aws:lambda:::function:GGRouter', b'{"forged": 1}',
                               {'X-Amz-Client-Context': _publish_context(event['victim'])}),
        'publish_as_itself': _attempt('POST', '/2016-11-01/functions/arn:aws:lambda:::function:GGRouter', b'{}',
                                      {'X-Amz-Client-Context': _publish_context(os.environ['MY_FUNCTION_ARN'])}),
        'token_prefix': os.environ['AWS_CONTAINER_AUTHORIZATION_TOKEN'][:12],
    }
