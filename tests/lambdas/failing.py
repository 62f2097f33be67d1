"""A user Lambda whose handler raises: the caller must get a Handled function error with the message."""


def function_handler(event, context):
    raise ValueError('this handler always fails: {}'.format(event))
