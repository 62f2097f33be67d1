"""`ggic`: the command line of the local Greengrass runtime and the image classification connector.

Subcommands follow the AWS CLI's shapes where one exists (`create-connector-definition --initial-version JSON`,
`--body fileb://x.jpg`), so commands from the connector documentation work with `aws greengrass` replaced by `ggic`.
Every subcommand takes `--state-dir` (default `~/.ggic`): several runtimes can live side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from connector.contract.environment import STATE_DIR_ENV
from connector.control.cli import client, definitions, doctor, groups, models, running
from connector.control.cli.arguments import CLIError

# One module per command family, in the order `ggic --help` lists them.
FAMILIES = (definitions, running, client, doctor, models, groups)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=lambda p: Path(p).expanduser(),
                        default=Path(os.environ.get(STATE_DIR_ENV, "~/.ggic")).expanduser(),
                        help="where definitions, the runtime's environment and logs live (default ~/.ggic)")
    parser = argparse.ArgumentParser(prog="ggic", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.add_commands(commands, common)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"ggic: {exc}", file=sys.stderr)
        return exc.status
