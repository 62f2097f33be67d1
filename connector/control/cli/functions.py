"""Lambda functions the AWS CLI's way (`create-function`, `publish-version`, `create-alias`, `update-alias`,
`update-function-code`, `get-function`, `get-function-configuration`, `list-functions`, `list-versions-by-function`,
`list-aliases`), stored in the state directory in `aws lambda`'s shapes; and function definitions
(`create-function-definition`, `create-function-definition-version`), whose FunctionArns must name them."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Dict

from connector.control.cli.arguments import (
    DEFAULT_REGION,
    EXIT_SERVICE_ERROR,
    CLIError,
    aws_region,
    bad_request,
    pick,
    read_blob_argument,
    read_json_argument,
)
from connector.control.cli.output import add_output_option, emit


def lambda_error(operation: str, exc: Any) -> int:
    """An AWS Lambda error the way the AWS CLI prints one (exit 254)."""
    print(f"An error occurred ({exc.code}) when calling the {operation} operation: {exc}", file=sys.stderr)
    return EXIT_SERVICE_ERROR


def _store(args: argparse.Namespace):
    from connector.control.lambda_functions import LambdaFunctionStore

    return LambdaFunctionStore(args.state_dir, aws_region(args) if hasattr(args, "region") else DEFAULT_REGION)


def parse_environment(value: str) -> Dict[str, str]:
    """--environment as the AWS CLI takes it: `Variables={KEY=value,KEY2=value2}` (shorthand), or JSON /
    file:// holding `{"Variables": {...}}`."""
    shorthand = re.fullmatch(r"\s*Variables\s*=\s*\{(.*)\}\s*", value, re.DOTALL)
    if shorthand:
        variables: Dict[str, str] = {}
        for item in filter(None, (part.strip() for part in shorthand.group(1).split(","))):
            key, equals, text = item.partition("=")
            if not equals:
                raise CLIError(f"--environment: {item!r} is not KEY=value (in Variables={{KEY=value,...}})", 255)
            variables[key.strip()] = text.strip()
        return variables
    environment = read_json_argument(value, "--environment")
    if not isinstance(environment, dict) or set(environment) - {"Variables"}:
        raise CLIError('--environment: give Variables={KEY=value,...} or JSON {"Variables": {"KEY": "value"}}',
                       255)
    return environment.get("Variables") or {}


def _run(operation: str, args: argparse.Namespace, call) -> int:
    from connector.control.lambda_functions import LambdaError

    try:
        response = call(_store(args))
    except LambdaError as exc:
        return lambda_error(operation, exc)
    if response is not None:
        emit(args, operation, response)
    return 0


def _zip(args: argparse.Namespace) -> bytes:
    return read_blob_argument(args.zip_file, "--zip-file")


def _warn_handler(store: Any, configuration: Dict[str, Any]) -> None:
    """Lambda stores a function whose handler is not in its package and fails each call: say so now."""
    from connector.control.lambda_functions import handler_problem

    problem = handler_problem(configuration["Runtime"], configuration["Handler"],
                              store.code_dir(configuration["CodeSha256"]))
    if problem:
        print(f"warning: {configuration['FunctionName']}: {problem}; every invocation would fail", file=sys.stderr)


def cmd_create_function(args: argparse.Namespace) -> int:
    variables = parse_environment(args.environment) if args.environment is not None else None
    tags = read_json_argument(args.tags, "--tags") if args.tags is not None else None

    def create(store):
        created = store.create_function(args.function_name, args.runtime, args.handler, _zip(args), variables,
                                        args.timeout, args.memory_size, args.description or "", args.role,
                                        args.publish, tags)
        _warn_handler(store, created)
        return created

    return _run("CreateFunction", args, create)


def cmd_update_function_code(args: argparse.Namespace) -> int:
    def update(store):
        updated = store.update_function_code(args.function_name, _zip(args), args.publish)
        _warn_handler(store, updated)
        return updated

    return _run("UpdateFunctionCode", args, update)


def cmd_publish_version(args: argparse.Namespace) -> int:
    return _run("PublishVersion", args,
                lambda store: store.publish_version(args.function_name, args.description, args.code_sha256))


def cmd_create_alias(args: argparse.Namespace) -> int:
    return _run("CreateAlias", args, lambda store: store.create_alias(args.function_name, args.name,
                                                                      args.function_version, args.description or ""))


def cmd_update_alias(args: argparse.Namespace) -> int:
    return _run("UpdateAlias", args, lambda store: store.update_alias(args.function_name, args.name,
                                                                      args.function_version, args.description))


def _qualified(args: argparse.Namespace) -> str:
    return f"{args.function_name}:{args.qualifier}" if args.qualifier else args.function_name


def cmd_get_function(args: argparse.Namespace) -> int:
    return _run("GetFunction", args, lambda store: store.get_function(_qualified(args)))


def cmd_get_function_configuration(args: argparse.Namespace) -> int:
    return _run("GetFunctionConfiguration", args, lambda store: store.configuration(_qualified(args)))


def cmd_list_functions(args: argparse.Namespace) -> int:
    """ListFunctions: the stored functions' $LATEST configurations; `--running`: what the runtime of the state
    directory hosts now, connectors included."""
    if args.running:
        from connector.control.cli.client import cmd_list_running_functions

        return cmd_list_running_functions(args)
    status = _run("ListFunctions", args, lambda store: {"Functions": store.list_functions()})
    from connector.control.cli.client import running_functions

    if not _store(args).names() and running_functions(args.state_dir):
        print("ggic: no Lambda functions are stored here (`ggic create-function`); `ggic list-functions --running` "
              "lists the functions the running runtime hosts", file=sys.stderr)
    return status


def cmd_list_versions_by_function(args: argparse.Namespace) -> int:
    return _run("ListVersionsByFunction", args,
                lambda store: {"Versions": store.list_versions(args.function_name)})


def cmd_list_aliases(args: argparse.Namespace) -> int:
    return _run("ListAliases", args, lambda store: {"Aliases": store.list_aliases(args.function_name)})


# --- function definitions ------------------------------------------------------------------------------------

def _function_arns(version: Dict[str, Any]):
    return [function["FunctionArn"] for function in version.get("Functions") or []]


def cmd_create_function_definition(args: argparse.Namespace) -> int:
    from connector.control.cli.definitions import _create_definition
    from connector.control.definition_store import FunctionDefinitionStore
    from connector.control.function_definitions import validate_function_definition
    from connector.control.lambda_functions import LambdaFunctionStore

    lambdas = LambdaFunctionStore(args.state_dir)
    return _create_definition(args, "CreateFunctionDefinition",
                              lambda request: validate_function_definition(request, lambdas),
                              FunctionDefinitionStore, _function_arns)


def cmd_create_function_definition_version(args: argparse.Namespace) -> int:
    from connector.contract.problems import BadRequestError
    from connector.control.definition_store import FunctionDefinitionStore
    from connector.control.function_definitions import validate_function_definition_version
    from connector.control.lambda_functions import LambdaFunctionStore

    store = FunctionDefinitionStore(args.state_dir, DEFAULT_REGION)
    definition_id = pick(store, args.function_definition_id, store.label)["Definition"]["Id"]
    version: Dict[str, Any] = {}
    if args.functions is not None:
        version["Functions"] = read_json_argument(args.functions, "--functions")
    if args.default_config is not None:
        version["DefaultConfig"] = read_json_argument(args.default_config, "--default-config")
    try:
        version, warnings = validate_function_definition_version(version, LambdaFunctionStore(args.state_dir))
    except BadRequestError as exc:
        return bad_request("CreateFunctionDefinitionVersion", exc)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    emit(args, "CreateFunctionDefinitionVersion", store.create_version(definition_id, version))
    return 0


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    def command(name: str, func, help_text: str, function_name: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help_text)
        if function_name:
            parser.add_argument("--function-name", required=True, metavar="NAME|ARN",
                                help="a name, name:qualifier, or a function ARN")
        add_output_option(parser)
        parser.set_defaults(func=func)
        return parser

    create = command("create-function", cmd_create_function, "store a Lambda function from its zip "
                                                             "(aws lambda shape)")
    create.add_argument("--runtime", required=True, help="python3.8, python3.7, python2.7, ...")
    create.add_argument("--handler", required=True, help="module.function in the package")
    create.add_argument("--zip-file", required=True, help="fileb://package.zip")
    create.add_argument("--role", help="stored as given (ggic runs functions as its own user)")
    create.add_argument("--description")
    create.add_argument("--environment", help="Variables={KEY=value,...} or JSON {\"Variables\": {...}}")
    create.add_argument("--timeout", type=int, help="seconds, 1-900 (default 3)")
    create.add_argument("--memory-size", type=int, help="MB, 128-10240 (default 128)")
    create.add_argument("--publish", action="store_true", help="publish version 1 at once")
    create.add_argument("--tags", help="JSON or file://path")
    create.add_argument("--region", help="the function ARN's region (default: AWS_REGION, else us-east-1)")

    code = command("update-function-code", cmd_update_function_code, "new code for $LATEST (versions keep theirs)")
    code.add_argument("--zip-file", required=True, help="fileb://package.zip")
    code.add_argument("--publish", action="store_true", help="and publish it as a new version")

    publish = command("publish-version", cmd_publish_version, "an immutable version from $LATEST")
    publish.add_argument("--description")
    publish.add_argument("--code-sha256", help="refuse unless $LATEST's package has this CodeSha256")

    for name, func, required in (("create-alias", cmd_create_alias, True), ("update-alias", cmd_update_alias, False)):
        alias = command(name, func, "an alias naming a version" if required else "point an alias at a version")
        alias.add_argument("--name", required=True)
        alias.add_argument("--function-version", required=required)
        alias.add_argument("--description")

    for name, func, help_text in (("get-function", cmd_get_function, "a function's configuration and package"),
                                  ("get-function-configuration", cmd_get_function_configuration,
                                   "a function version's configuration")):
        command(name, func, help_text).add_argument("--qualifier", help="a version or alias (default $LATEST)")

    listing = command("list-functions", cmd_list_functions, "the stored Lambda functions (aws lambda shape)",
                      function_name=False)
    listing.add_argument("--running", action="store_true",
                         help="instead: the functions the running runtime of the state directory hosts now")
    command("list-versions-by-function", cmd_list_versions_by_function, "$LATEST and the published versions")
    command("list-aliases", cmd_list_aliases, "a function's aliases")

    definition = commands.add_parser("create-function-definition", parents=[common],
                                     help="validate and store a group's user Lambdas and their configuration "
                                          "(AWS CLI shape)")
    definition.add_argument("--name")
    definition.add_argument("--initial-version", required=True,
                            help='JSON or file://path: {"Functions": [...], "DefaultConfig": {...}}')
    definition.add_argument("--tags", help="JSON or file://path")
    definition.add_argument("--region")
    add_output_option(definition)
    definition.set_defaults(func=cmd_create_function_definition)

    version = commands.add_parser("create-function-definition-version", parents=[common],
                                  help="a new version of a function definition (AWS CLI shape)")
    version.add_argument("--function-definition-id", required=True, metavar="ID|NAME")
    version.add_argument("--functions", help="JSON or file://path: the Functions list")
    version.add_argument("--default-config", help="JSON or file://path")
    add_output_option(version)
    version.set_defaults(func=cmd_create_function_definition_version)

