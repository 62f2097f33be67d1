"""`create-connector-definition`, `create-resource-definition`, `create-subscription-definition`: validated
(every problem at once) and stored, in the AWS CLI's shapes; and for each kind its `list-*-definitions`,
`get-*-definition`, `list-*-definition-versions` and `get-*-definition-version`, answered from the state directory
in the shapes of the Greengrass API (a ggic definition has one version: its initial one)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict

from connector.control.cli.arguments import (
    DEFAULT_REGION,
    CLIError,
    aws_region,
    bad_request,
    definition_request,
    pick,
    warn_duplicate_name,
)
from connector.control.cli.output import add_output_option, emit

# The kinds of definition ggic stores: (CLI noun, API noun, store class name in definition_store).
KINDS = (("connector", "Connector", "ConnectorDefinitionStore"),
         ("resource", "Resource", "ResourceDefinitionStore"),
         ("subscription", "Subscription", "SubscriptionDefinitionStore"),
         ("function", "Function", "FunctionDefinitionStore"))


def _create_definition(args: argparse.Namespace, operation: str, validate, store_class, arns) -> int:
    """A Create*Definition command: validate the request (every problem at once, as the API's BadRequest), print
    the warnings, store it in the region of `--region`, the AWS variables or `arns(InitialVersion)`, print the
    AWS-shaped response."""
    from connector.contract.problems import BadRequestError

    try:
        request, warnings = validate(definition_request(args))
    except BadRequestError as exc:
        return bad_request(operation, exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    store = store_class(args.state_dir, aws_region(args, *arns(request["InitialVersion"])))
    warn_duplicate_name(store, request.get("Name"), store.label)
    emit(args, operation, store.create(request.get("Name", ""), request["InitialVersion"], request.get("tags")))
    return 0


def cmd_create_connector_definition(args: argparse.Namespace) -> int:
    from connector.control.connector_definitions import validate_connector_definition
    from connector.control.definition_store import ConnectorDefinitionStore

    return _create_definition(args, "CreateConnectorDefinition", validate_connector_definition,
                              ConnectorDefinitionStore,
                              lambda version: [c["ConnectorArn"] for c in version.get("Connectors", [])])


def cmd_create_resource_definition(args: argparse.Namespace) -> int:
    from connector.control.definition_store import ResourceDefinitionStore
    from connector.control.groups import SAGEMAKER_RESOURCE, validate_resource_definition

    return _create_definition(
        args, "CreateResourceDefinition", validate_resource_definition, ResourceDefinitionStore,
        lambda version: [r["ResourceDataContainer"][SAGEMAKER_RESOURCE]["SageMakerJobArn"]
                         for r in version["Resources"]])


def cmd_create_subscription_definition(args: argparse.Namespace) -> int:
    from connector.control.definition_store import SubscriptionDefinitionStore
    from connector.control.subscriptions import subscription_arns, validate_subscription_definition

    return _create_definition(args, "CreateSubscriptionDefinition",
                              lambda request: (validate_subscription_definition(request), []),
                              SubscriptionDefinitionStore,
                              lambda version: subscription_arns(version["Subscriptions"]))


def _store(args: argparse.Namespace, class_name: str):
    from connector.control import definition_store

    return getattr(definition_store, class_name)(args.state_dir, DEFAULT_REGION)


def _information(record: Dict[str, Any], tags_key: str) -> Dict[str, Any]:
    """A stored definition as the API describes it, its tags (when it has any) under `tags_key`."""
    information = dict(record["Definition"])
    if record.get("tags"):
        information[tags_key] = record["tags"]
    return information


def list_definitions(args: argparse.Namespace, api: str, class_name: str) -> int:
    """List<Kind>Definitions: every stored definition of the kind, oldest first."""
    records = _store(args, class_name).all()
    emit(args, f"List{api}Definitions", {"Definitions": [_information(r, "Tags") for r in records]})
    return 0


def get_definition(args: argparse.Namespace, api: str, class_name: str) -> int:
    store = _store(args, class_name)
    emit(args, f"Get{api}Definition", _information(pick(store, args.definition_id, store.label), "tags"))
    return 0


def list_definition_versions(args: argparse.Namespace, api: str, class_name: str) -> int:
    store = _store(args, class_name)
    definition_id = pick(store, args.definition_id, store.label)["Definition"]["Id"]
    emit(args, f"List{api}DefinitionVersions", {"Versions": store.versions(definition_id)})
    return 0


def get_definition_version(args: argparse.Namespace, api: str, class_name: str) -> int:
    from connector.control.definition_store import DefinitionNotFoundError

    store = _store(args, class_name)
    definition_id = pick(store, args.definition_id, store.label)["Definition"]["Id"]
    try:
        version = store.version(definition_id, args.definition_version_id)
    except DefinitionNotFoundError as exc:
        raise CLIError(str(exc)) from None
    emit(args, f"Get{api}DefinitionVersion", version)
    return 0


def _add_listing_commands(commands, common: argparse.ArgumentParser, noun: str, api: str, class_name: str) -> None:
    """list-<noun>-definitions, get-<noun>-definition, list-<noun>-definition-versions,
    get-<noun>-definition-version."""
    def command(name: str, func, help_text: str, version: bool = False, definition: bool = True) -> None:
        parser = commands.add_parser(name, parents=[common], help=help_text)
        if definition:
            parser.add_argument(f"--{noun}-definition-id", dest="definition_id", required=True, metavar="ID|NAME",
                                help="the definition's Id (a Name works too: the newest of that Name)")
        if version:
            parser.add_argument(f"--{noun}-definition-version-id", dest="definition_version_id", required=True)
        add_output_option(parser)
        parser.set_defaults(func=lambda args: func(args, api, class_name))

    command(f"list-{noun}-definitions", list_definitions, f"the stored {noun} definitions (AWS CLI shape)",
            definition=False)
    command(f"get-{noun}-definition", get_definition, f"one {noun} definition (AWS CLI shape)")
    command(f"list-{noun}-definition-versions", list_definition_versions, f"a {noun} definition's versions")
    command(f"get-{noun}-definition-version", get_definition_version,
            f"a {noun} definition version, with what it holds", version=True)


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    for name, func, what in (
            ("create-connector-definition", cmd_create_connector_definition, "a connector definition"),
            ("create-resource-definition", cmd_create_resource_definition, "ML resources with a SageMaker source"),
            ("create-subscription-definition", cmd_create_subscription_definition,
             "subscriptions: who publishes what to whom")):
        command = commands.add_parser(name, parents=[common], help=f"validate and store {what} (AWS CLI shape)")
        command.add_argument("--name")
        command.add_argument("--initial-version", required=True, help="JSON or file://path")
        command.add_argument("--tags", help="JSON or file://path")
        command.add_argument("--region")
        add_output_option(command)
        command.set_defaults(func=func)
    for noun, api, class_name in KINDS:
        _add_listing_commands(commands, common, noun, api, class_name)
