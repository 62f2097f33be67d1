"""A user Lambda that answers with what it received: the event, the client context and its context fields."""
import json
import logging


def function_handler(event, context):
    logging.info('echo received %s', json.dumps(event))
    return {
        "event": event,
        "custom": context.client_context.custom,
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
    }
