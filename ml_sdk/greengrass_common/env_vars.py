"""Environment settings a Greengrass v1 core gives each Lambda, captured once at import time.

They are module constants (not functions) because greengrasssdk imports them by name; the consequence is that
the environment must be complete *before* anything imports this module.  Unset variables read as None.
"""
import os

# This Lambda's own qualified ARN.  greengrasssdk treats None as "not on a core" and answers with canned data.
MY_FUNCTION_ARN = os.getenv('MY_FUNCTION_ARN')

# Token the IPC server expects verbatim in the Authorization header.
AUTH_TOKEN = os.getenv('AWS_CONTAINER_AUTHORIZATION_TOKEN')

# System functions that stand behind MQTT publish, the local shadow and secrets.
ROUTER_FUNCTION_ARN = os.getenv('ROUTER_FUNCTION_ARN')
SHADOW_FUNCTION_ARN = os.getenv('SHADOW_FUNCTION_ARN')
SECRETS_MANAGER_FUNCTION_ARN = os.getenv('SECRETS_MANAGER_FUNCTION_ARN')

# Port of the core's IPC HTTP server, as text (the core's ggDaemonPort setting); see DEFAULT_GG_DAEMON_PORT.
GG_DAEMON_PORT = os.getenv('GG_DAEMON_PORT')
DEFAULT_GG_DAEMON_PORT = 8000

# Highest "major.minor" SDK interface the core speaks; SDKs refuse to run against an older core.
GGC_MAX_INTERFACE_VERSION = os.getenv('GGC_MAX_INTERFACE_VERSION')

# How the runtime hands events to the handler: 'json' (parsed) or 'binary' (raw bytes).
ENCODING_TYPE = os.getenv('ENCODING_TYPE')

# Also set by the core for every Lambda; not imported by greengrasssdk but handy for runtime code.
AWS_REGION = os.getenv('AWS_REGION')
AWS_IOT_THING_NAME = os.getenv('AWS_IOT_THING_NAME')
AWS_GG_RESOURCE_PREFIX = os.getenv('AWS_GG_RESOURCE_PREFIX')
