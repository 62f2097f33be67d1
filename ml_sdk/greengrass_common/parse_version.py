"""Read a "major.minor" interface version such as the core's GGC_MAX_INTERFACE_VERSION.

SDKs compare only major and minor (same major, enough minor), so a patch part is accepted and ignored.
"""
import re

_VERSION = re.compile(r'\s*(\d+)\.(\d+)(?:\.\d+)*\s*\Z')


def parse_version(text):
    """Return (major, minor) as ints; raise ValueError when the text is not of the form "1.5" (or "1.5.0")."""
    try:
        match = _VERSION.match(text)
    except TypeError:  # None (the variable is not set) or not text
        match = None
    if match is None:
        raise ValueError('Cannot parse {!r} as an interface version; expected "<major>.<minor>", e.g. "1.5".'
                         .format(text))
    return int(match.group(1)), int(match.group(2))
