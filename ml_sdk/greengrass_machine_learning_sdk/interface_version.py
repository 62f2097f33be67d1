"""Refuse to run against a core whose IPC interface is older than this SDK needs.

Checked when a client is built so the mismatch shows up at start-up, not on the first request.
"""
import os

from greengrass_common.parse_version import parse_version
from greengrass_machine_learning_sdk.exception import chained

SDK_INTERFACE_VERSION = (1, 2)


def require_core_interface():
    """Raise ValueError unless GGC_MAX_INTERFACE_VERSION has our major version and at least our minor one."""
    needed = '{}.{}'.format(*SDK_INTERFACE_VERSION)
    core_text = os.environ.get('GGC_MAX_INTERFACE_VERSION')
    if not core_text:
        raise ValueError('Interface version incompatibility: the ML SDK needs Greengrass core interface {} but '
                         'GGC_MAX_INTERFACE_VERSION is not set (is this running inside a Greengrass core?).'
                         .format(needed))
    try:
        major, minor = parse_version(core_text)
    except ValueError as error:
        raise chained(ValueError('Interface version incompatibility: GGC_MAX_INTERFACE_VERSION is unreadable ({}).'
                                 .format(error)))
    if major != SDK_INTERFACE_VERSION[0] or minor < SDK_INTERFACE_VERSION[1]:
        raise ValueError('Interface version incompatibility: the ML SDK needs Greengrass core interface {} '
                         '(major {}, minor >= {}) but the core offers {}.'
                         .format(needed, SDK_INTERFACE_VERSION[0], SDK_INTERFACE_VERSION[1], core_text))
