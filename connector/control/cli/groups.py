"""`create-group`, `create-group-version`, `create-deployment`, `get-deployment-status`: a group and its
deployments to the running runtime, in the AWS CLI's shapes; `list-groups`, `get-group`, `list-group-versions`,
`get-group-version`, `list-deployments`: what is stored, in the Greengrass API's shapes."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional

from connector.control.cli.arguments import (
    DEFAULT_REGION,
    CLIError,
    aws_region,
    bad_request,
    cli_logging,
    pick,
    read_json_argument,
    warn_duplicate_name,
)
from connector.control.cli.output import add_output_option, emit, silence_stdout

GROUP = "group"


def _group_version_argument(args: argparse.Namespace) -> Dict[str, str]:
    """create-group-version's --*-definition-version-arn options as a group version."""
    keys = {"connector": "ConnectorDefinitionVersionArn", "resource": "ResourceDefinitionVersionArn",
            "function": "FunctionDefinitionVersionArn", "subscription": "SubscriptionDefinitionVersionArn",
            "core": "CoreDefinitionVersionArn", "device": "DeviceDefinitionVersionArn",
            "logger": "LoggerDefinitionVersionArn"}
    return {key: getattr(args, f"{kind}_definition_version_arn") for kind, key in keys.items()
            if getattr(args, f"{kind}_definition_version_arn") is not None}


def _check_group_version(args: argparse.Namespace, version: Any, operation: str, where: str) -> Optional[int]:
    """Resolve a group version (BadRequest when it names what is not stored); warn when it cannot be deployed."""
    from connector.contract.problems import BadRequestError
    from connector.control.groups import deployment_problems, resolve_group_version

    try:
        contents, warnings = resolve_group_version(args.state_dir, version, where)
    except BadRequestError as exc:
        return bad_request(operation, exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for detail in deployment_problems(contents):
        print(f"warning: this group version cannot be deployed as it is: [{detail['DetailedErrorCode']}] "
              f"{detail['DetailedErrorMessage']}", file=sys.stderr)
    return None


def cmd_create_group(args: argparse.Namespace) -> int:
    from connector.contract.problems import BadRequestError, request_problems
    from connector.control.groups import GROUP_SCHEMA, GroupStore

    request: Dict[str, Any] = {"Name": args.name}
    if args.initial_version is not None:
        request["InitialVersion"] = read_json_argument(args.initial_version, "--initial-version")
    if args.tags is not None:
        request["tags"] = read_json_argument(args.tags, "--tags")
    details = request_problems(GROUP_SCHEMA, request)
    if details:
        return bad_request("CreateGroup", BadRequestError(details, f"Invalid group: {len(details)} problem(s) found"))
    version = request.get("InitialVersion")
    if version is not None:
        status = _check_group_version(args, version, "CreateGroup", "InitialVersion")
        if status is not None:
            return status
    region = aws_region(args, *(version or {}).values())
    store = GroupStore(args.state_dir, region)
    warn_duplicate_name(store, args.name, GROUP)
    emit(args, "CreateGroup", store.create(args.name, version, request.get("tags")))
    return 0


def cmd_create_group_version(args: argparse.Namespace) -> int:
    from connector.control.groups import GroupStore

    store = GroupStore(args.state_dir, DEFAULT_REGION)
    group_id = pick(store, args.group_id, GROUP)["Group"]["Id"]
    version = _group_version_argument(args)
    status = _check_group_version(args, version, "CreateGroupVersion", "group version")
    if status is not None:
        return status
    emit(args, "CreateGroupVersion", store.create_version(group_id, version))
    return 0


def cmd_create_deployment(args: argparse.Namespace) -> int:
    """Check the group version, fetch its ML resources, hand it to the runtime serving the group
    (`connector.control.deployments`)."""
    from connector.contract.problems import BadRequestError
    from connector.control.deployments import (
        DeploymentFailedError,
        checked_contents,
        deployable_version,
        fetch_models,
        serving_runtime,
        wait_applied,
    )
    from connector.control.function_definitions import resolved_versions
    from connector.control.groups import GroupNotFoundError, GroupStore

    cli_logging(args.verbose)
    store = GroupStore(args.state_dir, DEFAULT_REGION)
    group_id = pick(store, args.group_id, GROUP)["Group"]["Id"]
    try:
        record, version = deployable_version(store, group_id, args.deployment_type, args.group_version_id,
                                             args.deployment_id)
        contents, warnings = checked_contents(args.state_dir, version)
    except GroupNotFoundError as exc:
        raise CLIError(str(exc)) from None
    except BadRequestError as exc:
        return bad_request("CreateDeployment", exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)

    group_id = record["Group"]["Id"]
    deployment = store.create_deployment(group_id, version["Version"], args.deployment_type,
                                         resolved_versions(args.state_dir, contents.functions))
    try:  # the deployment goes on whoever reads the answer: a closed pipe only silences the rest
        emit(args, "CreateDeployment", {"DeploymentArn": deployment["DeploymentArn"],
                                        "DeploymentId": deployment["DeploymentId"]})
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    try:
        fetch_models(store, deployment, contents, args.region, sys.stderr)
        if serving_runtime(args.state_dir, group_id) is None:
            print(f"ggic: no runtime serves group {group_id} from {args.state_dir}: `ggic run --group {group_id}` "
                  f"will run this deployment", file=sys.stderr)
            return 0
        if not args.no_wait:
            wait_applied(store, args.state_dir, deployment, args.wait_timeout)
            print(f"ggic: deployment {deployment['DeploymentId']} is serving", file=sys.stderr)
    except DeploymentFailedError as exc:
        raise CLIError(str(exc)) from None
    return 0


def _group_store(args: argparse.Namespace):
    from connector.control.groups import GroupStore

    return GroupStore(args.state_dir, DEFAULT_REGION)


def _group_id(args: argparse.Namespace) -> str:
    return pick(_group_store(args), args.group_id, GROUP)["Group"]["Id"]


def cmd_get_deployment_status(args: argparse.Namespace) -> int:
    from connector.control.groups import GroupNotFoundError

    store = _group_store(args)
    try:
        deployment = store.deployment(_group_id(args), args.deployment_id)
    except GroupNotFoundError as exc:
        raise CLIError(str(exc)) from None
    emit(args, "GetDeploymentStatus", {key: deployment[key] for key in (
        "DeploymentStatus", "DeploymentType", "ErrorDetails", "ErrorMessage", "UpdatedAt")})
    return 0


def cmd_list_groups(args: argparse.Namespace) -> int:
    """ListGroups: every stored group's GroupInformation, oldest first."""
    emit(args, "ListGroups", {"Groups": [record["Group"] for record in _group_store(args).all()]})
    return 0


def cmd_get_group(args: argparse.Namespace) -> int:
    record = pick(_group_store(args), args.group_id, GROUP)
    response = dict(record["Group"])
    if record.get("tags"):
        response["tags"] = record["tags"]
    emit(args, "GetGroup", response)
    return 0


def cmd_list_group_versions(args: argparse.Namespace) -> int:
    """ListGroupVersions: the group's versions, oldest first."""
    record = pick(_group_store(args), args.group_id, GROUP)
    emit(args, "ListGroupVersions", {"Versions": [
        {key: entry[key] for key in ("Arn", "CreationTimestamp", "Id", "Version")} for entry in record["Versions"]]})
    return 0


def cmd_get_group_version(args: argparse.Namespace) -> int:
    from connector.control.groups import GroupNotFoundError, GroupStore

    record = pick(_group_store(args), args.group_id, GROUP)
    try:
        entry = GroupStore.version(record, args.group_version_id)
    except GroupNotFoundError as exc:
        raise CLIError(str(exc)) from None
    emit(args, "GetGroupVersion", {key: entry[key] for key in ("Arn", "CreationTimestamp", "Definition", "Id",
                                                               "Version")})
    return 0


def cmd_list_deployments(args: argparse.Namespace) -> int:
    """ListDeployments: the group's deployments, oldest first (their status: get-deployment-status)."""
    store = _group_store(args)
    record = pick(store, args.group_id, GROUP)
    group = record["Group"]
    emit(args, "ListDeployments", {"Deployments": [
        {"CreatedAt": d["CreatedAt"], "DeploymentArn": d["DeploymentArn"], "DeploymentId": d["DeploymentId"],
         "DeploymentType": d["DeploymentType"], "GroupArn": group["Arn"]} for d in store.deployments(group["Id"])]})
    return 0


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("create-group", parents=[common], help="a group binding definition versions")
    group.add_argument("--name", required=True)
    group.add_argument("--initial-version", help="JSON or file://path: {\"ConnectorDefinitionVersionArn\": ...}")
    group.add_argument("--tags", help="JSON or file://path")
    group.add_argument("--region")
    add_output_option(group)
    group.set_defaults(func=cmd_create_group)

    group_version = commands.add_parser("create-group-version", parents=[common], help="a new version of a group")
    group_version.add_argument("--group-id", required=True, metavar="ID|NAME")
    for kind in ("connector", "resource", "function", "subscription", "core", "device", "logger"):
        group_version.add_argument(f"--{kind}-definition-version-arn")
    add_output_option(group_version)
    group_version.set_defaults(func=cmd_create_group_version)

    deploy = commands.add_parser("create-deployment", parents=[common],
                                 help="check a group version, fetch its models, swap it into the running runtime")
    deploy.add_argument("--group-id", required=True, metavar="ID|NAME")
    deploy.add_argument("--group-version-id", help="default: the group's latest version")
    deploy.add_argument("--deployment-type", required=True,
                        choices=["NewDeployment", "Redeployment", "ResetDeployment", "ForceResetDeployment"],
                        help="NewDeployment, or Redeployment with --deployment-id (the reset types are refused)")
    deploy.add_argument("--deployment-id", help="Redeployment: the deployment to redo")
    deploy.add_argument("--region", help="SageMaker and S3 region (default: each training job ARN's)")
    deploy.add_argument("--no-wait", action="store_true",
                        help="return once the models are in place, without waiting for the runtime to switch")
    deploy.add_argument("--wait-timeout", type=float, default=600.0,
                        help="seconds to wait for the runtime to switch (default 600)")
    deploy.add_argument("--verbose", action="store_true")
    add_output_option(deploy)
    deploy.set_defaults(func=cmd_create_deployment)

    deployment_status = commands.add_parser("get-deployment-status", parents=[common],
                                            help="Building, InProgress, Success or Failure, and why")
    deployment_status.add_argument("--group-id", required=True, metavar="ID|NAME")
    deployment_status.add_argument("--deployment-id", required=True)
    add_output_option(deployment_status)
    deployment_status.set_defaults(func=cmd_get_deployment_status)

    group_id_help = "the group's Id (a Name works too: the newest of that Name)"
    for name, func, help_text, version in (
            ("list-groups", cmd_list_groups, "the stored groups (AWS CLI shape)", None),
            ("get-group", cmd_get_group, "one group (AWS CLI shape)", False),
            ("list-group-versions", cmd_list_group_versions, "a group's versions", False),
            ("get-group-version", cmd_get_group_version, "a group version, with the definition versions it binds",
             True),
            ("list-deployments", cmd_list_deployments, "a group's deployments", False)):
        command = commands.add_parser(name, parents=[common], help=help_text)
        if version is not None:
            command.add_argument("--group-id", required=True, metavar="ID|NAME", help=group_id_help)
        if version:
            command.add_argument("--group-version-id", required=True)
        add_output_option(command)
        command.set_defaults(func=func)
