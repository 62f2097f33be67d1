"""A user Lambda whose process dies when asked to: the runtime must answer Unhandled and restart it."""
import os


def function_handler(event, context):
    if event.get('crash'):
        os._exit(3)
    return {'pid': os.getpid()}
