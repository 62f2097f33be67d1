"""`ggic import-group FILE|DIR [--zip-dir DIR] [--zip NAME=PATH ...]`: a group exported with the AWS CLI, created
again in the state directory (connector/control/import_group.py); one warning on stderr for each thing left out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

from connector.control.cli.arguments import CLIError, bad_request
from connector.control.cli.functions import lambda_error
from connector.control.cli.output import add_output_option, emit


def _zips(pairs: List[str]) -> Dict[str, Path]:
    mapping = {}
    for pair in pairs:
        name, equals, path = pair.partition("=")
        if not equals or not name or not path:
            raise CLIError(f"--zip {pair!r}: give FUNCTION_NAME=path/to/package.zip", 255)
        mapping[name] = Path(path).expanduser()
    return mapping


def cmd_import_group(args: argparse.Namespace) -> int:
    from connector.contract.problems import BadRequestError
    from connector.control.import_group import ImportGroupError, import_group
    from connector.control.lambda_functions import LambdaError

    if not args.source.exists():
        raise CLIError(f"{args.source}: no such file or folder")
    try:
        imported = import_group(args.source, args.state_dir, args.zip_dir, _zips(args.zip or []), args.name)
    except ImportGroupError as exc:
        raise CLIError(str(exc)) from None
    except BadRequestError as exc:
        return bad_request("ImportGroup", exc)
    except LambdaError as exc:
        return lambda_error("ImportGroup", exc)
    for warning in imported.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    emit(args, "ImportGroup", imported.response())
    return 0


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser("import-group", parents=[common],
                                  help="create a group exported with the AWS CLI (get-group-version, "
                                       "get-*-definition-version, lambda get-function) and its Lambda zips")
    command.add_argument("source", type=Path, metavar="FILE|DIR",
                         help="a folder of the exported JSON files, or one document holding them")
    command.add_argument("--zip-dir", type=Path, help="where the <function name>.zip packages are (default: "
                                                      "the export's folder)")
    command.add_argument("--zip", action="append", metavar="NAME=PATH", help="the package of one function")
    command.add_argument("--name", help="the group's name (default: the exported get-group's Name)")
    add_output_option(command)
    command.set_defaults(func=cmd_import_group)
