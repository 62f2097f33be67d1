"""`create-connector-definition`, `create-resource-definition`, `create-subscription-definition`: validated
(every problem at once) and stored, in the AWS CLI's shapes."""

from __future__ import annotations

import argparse
import json
import sys

from connector.control.cli.arguments import aws_region, bad_request, definition_request


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
    print(json.dumps(store.create(request.get("Name", ""), request["InitialVersion"], request.get("tags")), indent=4))
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
        command.set_defaults(func=func)
