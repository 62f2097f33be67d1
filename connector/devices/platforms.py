"""Which connector platform this machine is, and refusing a connector built for another one.

Greengrass v1 shipped one connector per platform (x86-64, ARMv7, Aarch64 JTX2) because each bundled a native MXNet
for that CPU. Deploying, say, the ARMv7 connector to an x86-64 core failed on the device, so `ggic run` refuses it at
start with the reason, before any process is spawned, rather than letting a definition meant for another device run
here silently. The check is deliberately not done by `create-connector-definition`: like the Greengrass API, that
describes a group in the cloud and may be run from a workstation that is not the device.
"""

from __future__ import annotations

import os
import platform as _platform
import struct
from typing import Iterable, List, Mapping, Optional, Tuple

from connector.contract.environment import ALLOW_PLATFORM_MISMATCH_ENV

#: Set to 1 to run connectors whatever their platform (tests, or a device whose `uname -m` misleads us).
ALLOW_MISMATCH_ENV = ALLOW_PLATFORM_MISMATCH_ENV

#: connector catalog platform -> the names `ggic doctor --platform` and the install scripts use
DOCTOR_NAMES = {"x86_64": "x86_64", "armv7l": "armv7l", "aarch64": "aarch64-jtx2"}
#: the connector name of each catalog platform, for messages
CONNECTOR_NAMES = {"x86_64": "ImageClassificationx86-64", "armv7l": "ImageClassificationARMv7",
                   "aarch64": "ImageClassificationAarch64JTX2"}

_MACHINE_ALIASES = {
    "x86_64": "x86_64", "amd64": "x86_64",
    "armv7l": "armv7l", "armv7": "armv7l", "armv8l": "armv7l", "armhf": "armv7l",
    "aarch64": "aarch64", "arm64": "aarch64",
}


class PlatformMismatchError(RuntimeError):
    """A connector for another platform was asked to run on this machine."""


def machine_platform(machine: Optional[str] = None, pointer_bits: Optional[int] = None) -> Optional[str]:
    """The catalog platform ("x86_64", "armv7l", "aarch64") of a `uname -m` value; None when there is none.

    A 32-bit ARM user space on a 64-bit kernel (Raspberry Pi OS 32-bit on a Pi 4 reports `aarch64`) runs the ARMv7
    connector, so the pointer size of this Python decides between the two ARM platforms.
    """
    machine = (machine if machine is not None else _platform.machine()).lower()
    bits = pointer_bits if pointer_bits is not None else struct.calcsize("P") * 8
    found = _MACHINE_ALIASES.get(machine)
    if found == "aarch64" and bits == 32:
        return "armv7l"
    return found


def mismatch_message(connector_id: str, connector_name: str, connector_platform: str,
                     machine: str, here: Optional[str]) -> str:
    """Why a connector cannot run here and what to do, in one paragraph."""
    if here is None:
        suggestion = "no ML Image Classification connector exists for this architecture"
    else:
        suggestion = (f"use the {CONNECTOR_NAMES[here]} connector "
                      f"(arn:aws:greengrass:<region>::/connectors/{CONNECTOR_NAMES[here]}/versions/2) on this "
                      f"machine, or run this definition on an {connector_platform} device")
    return (f"connector {connector_id!r} is {connector_name}, built for {connector_platform}, but this machine is "
            f"{machine}: {suggestion}. To run it anyway (for testing), pass --allow-platform-mismatch or set "
            f"{ALLOW_MISMATCH_ENV}=1")


def check_connector_platforms(connectors: Iterable[Tuple[str, str, str]], allow: bool = False,
                              machine: Optional[str] = None,
                              environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Refuse connectors built for another platform; return the warnings when the mismatch is allowed.

    `connectors` holds (connector Id, connector name, catalog platform). `allow` (the CLI flag) or
    GGIC_ALLOW_PLATFORM_MISMATCH=1 turn the refusal into a warning. Raises PlatformMismatchError naming every
    mismatched connector.
    """
    environ = os.environ if environ is None else environ
    allow = allow or environ.get(ALLOW_MISMATCH_ENV, "") == "1"
    machine = machine or _platform.machine()
    here = machine_platform(machine)
    mismatched = [(connector_id, name, wanted) for connector_id, name, wanted in connectors
                  if wanted not in (here, "any")]
    if mismatched and not allow:
        raise PlatformMismatchError("\n".join(mismatch_message(connector_id, name, wanted, machine, here)
                                              for connector_id, name, wanted in mismatched))
    return [f"connector {connector_id!r} is {name}, built for {wanted}, and runs on this {machine} machine only "
            f"because the platform check is overridden" for connector_id, name, wanted in mismatched]
