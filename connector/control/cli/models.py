"""`ggic fetch-model`: a SageMaker training job's model, downloaded, verified and placed atomically."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from connector.control.cli.arguments import CLIError, cli_logging


def cmd_fetch_model(args: argparse.Namespace) -> int:
    """What a Greengrass ML resource with a SageMaker source did: the job's model, verified, at --destination."""
    from connector.control.fetch_model import FetchModelError, fetch_model, progress_for

    cli_logging(args.verbose)
    progress = progress_for(sys.stderr)
    try:
        result = fetch_model(args.training_job_arn, args.destination, region=args.region, progress=progress)
    except FetchModelError as exc:
        raise CLIError(f"fetch-model: {exc}") from None
    finally:
        progress.close()
    print(result.summary())
    return 0


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    fetch = commands.add_parser("fetch-model", parents=[common],
                                help="download, verify and atomically place a SageMaker training job's model")
    fetch.add_argument("--training-job-arn", required=True,
                       help="arn:aws:sagemaker:<region>:<account>:training-job/<name>")
    fetch.add_argument("--destination", required=True, type=Path, help="the model directory (replaced as a whole)")
    fetch.add_argument("--region", help="SageMaker and S3 region (default: the ARN's)")
    fetch.add_argument("--verbose", action="store_true")
    fetch.set_defaults(func=cmd_fetch_model)
