"""`ggic`: the command line of the local Greengrass runtime and the image classification connector.

Subcommands follow the AWS CLI's shapes where one exists (`create-connector-definition --initial-version JSON`,
`--body fileb://x.jpg`), so commands from the connector documentation work with `aws greengrass` replaced by `ggic`.
Every subcommand takes `--state-dir` (default `~/.ggic`): several runtimes can live side by side.
Output that a closed pipe cuts short (`ggic list-groups | head -1`) ends quietly, with the exit status of a
program killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Optional, Sequence

from connector import __version__
from connector.contract.environment import STATE_DIR_ENV
from connector.control.cli import client, definitions, doctor, functions, groups, importing, models, running
from connector.control.cli.arguments import CLIError
from connector.control.cli.output import silence_stdout

# One module per command family, in the order `ggic --help` lists them.
FAMILIES = (definitions, functions, running, client, doctor, models, groups, importing)
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a program killed by SIGPIPE


def version_text() -> str:
    """`ggic/<version> Python/<version> <system>/<release>`: the AWS CLI's `--version` layout."""
    return f"ggic/{__version__} Python/{platform.python_version()} {platform.system()}/{platform.release()}"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=lambda p: Path(p).expanduser(),
                        default=Path(os.environ.get(STATE_DIR_ENV, "~/.ggic")).expanduser(),
                        help="where definitions, the runtime's environment and logs live (default ~/.ggic)")
    parser = argparse.ArgumentParser(prog="ggic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in FAMILIES:
        family.add_commands(commands, common)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's exit
        return status
    except CLIError as exc:
        print(f"ggic: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        # The reader went away (`| head -1`): what is left to print goes nowhere, without a traceback.
        silence_stdout()
        return EXIT_BROKEN_PIPE
