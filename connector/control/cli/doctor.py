"""`ggic doctor`: can this device run the connector (system libraries, engines, accelerator)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from connector.contract.environment import ENGINE_ENV


def cmd_doctor(args: argparse.Namespace) -> int:
    """Is this device ready for the connector: system libraries, Python packages, GPU. Exit 1 on any FAIL."""
    from connector.devices.doctor import format_report, run_doctor

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    report = run_doctor(args.platform, args.library_path, engine=args.engine)
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    doctor = commands.add_parser("doctor", parents=[common],
                                 help="check this device: the engine and what it needs (system libraries, MXNet, ONNX "
                                      "Runtime, OpenCV), GPU")
    doctor.add_argument("--platform", choices=["x86_64", "armv7l", "aarch64-jtx2"],
                        help="the connector platform to check for (default: this machine's)")
    doctor.add_argument("--engine", choices=["mxnet", "onnxruntime", "opencv"],
                        default=os.environ.get(ENGINE_ENV) or None,
                        help="the engine to check for (default: GGIC_ENGINE, else the platform's default, as "
                             "`ggic run` chooses it)")
    doctor.add_argument("--json", action="store_true", help="the checks as JSON")
    doctor.add_argument("--library-path", action="append", type=Path, metavar="DIR",
                        help="look for system libraries only in DIR (repeatable; e.g. a device's sysroot)")
    doctor.set_defaults(func=cmd_doctor)
