"""`ggic import-group`: a Greengrass v1 group exported with the AWS CLI, created again locally.

The input is what `aws greengrass get-group`, `get-group-version`, `get-<kind>-definition-version` and
`aws lambda get-function` print (docs/functions.md has the commands): a folder of such JSON files, or one document
holding them (a list, or an object whose values are the documents). Each document is recognised by its content (its
`Arn`, or a get-function's `Configuration`), not by its file name. The Lambda deployment packages are zips named
after their function (`<name>.zip` in `--zip-dir`, default the input folder), or mapped one by one.

Everything is planned and checked before anything is written: the functions are created with their own ARNs (the
exporting account and region, the published version numbers AWS gave them, their aliases), then the definitions and
the group. What ggic cannot run is left out with one warning each (`Import.warnings`): the core definition's thing,
devices, loggers, the core's system functions (GGIPDetector), resources other than SageMaker ML models, connectors
outside the catalog, and subscriptions to the local shadow service, devices, or anything left out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from connector.contract.catalog import match_arn
from connector.contract.problems import BadRequestError, request_problems
from connector.control.connector_definitions import validate_connector_definition
from connector.control.definition_store import (
    ConnectorDefinitionStore,
    FunctionDefinitionStore,
    ResourceDefinitionStore,
    SubscriptionDefinitionStore,
)
from connector.control.function_definitions import (
    FUNCTION_DEFINITION_SCHEMA,
    FUNCTION_NOT_FOUND,
    validate_function_definition,
    version_problems,
)
from connector.control.groups import (
    SAGEMAKER_RESOURCE,
    GroupStore,
    resolve_group_version,
    validate_resource_definition,
)
from connector.control.lambda_functions import ARN_PATTERN, RUNTIMES, LambdaError, LambdaFunctionStore
from connector.control.subscriptions import validate_subscription_definition
from connector.core.router import UnsupportedEndpointError, parse_endpoint, unqualified_arn

GROUP_ARN = re.compile(r"^arn:aws[a-z-]*:greengrass:([a-z0-9-]*):([0-9]*):/greengrass/groups/([^/]+)$")
GROUP_VERSION_ARN = re.compile(r"^arn:aws[a-z-]*:greengrass:[a-z0-9-]*:[0-9]*:/greengrass/groups/([^/]+)/versions/"
                               r"([^/]+)$")
DEFINITION_VERSION_ARN = re.compile(r"^arn:aws[a-z-]*:greengrass:[a-z0-9-]*:[0-9]*:/greengrass/definition/"
                                    r"([a-z]+)/([^/]+)/versions/([^/]+)$")
# GroupVersion key → the definition kind in its ARNs.
KINDS = {"CoreDefinitionVersionArn": "cores", "DeviceDefinitionVersionArn": "devices",
         "FunctionDefinitionVersionArn": "functions", "SubscriptionDefinitionVersionArn": "subscriptions",
         "LoggerDefinitionVersionArn": "loggers", "ResourceDefinitionVersionArn": "resources",
         "ConnectorDefinitionVersionArn": "connectors"}


class ImportGroupError(ValueError):
    """The export cannot be imported as it is: a document or package missing, one that is not what it should be."""


@dataclass
class Export:
    """The documents of one export, by what they are."""

    group: Optional[dict] = None                                       # get-group
    group_versions: List[dict] = field(default_factory=list)           # get-group-version
    definition_versions: Dict[str, dict] = field(default_factory=dict)  # version ARN → get-*-definition-version
    functions: List[dict] = field(default_factory=list)                # get-function
    warnings: List[str] = field(default_factory=list)


def _documents(value: Any, where: str) -> List[Tuple[str, Any]]:
    """(where, document) for a document, a list of them, or an object whose values are documents."""
    if isinstance(value, list):
        return [pair for index, item in enumerate(value) for pair in _documents(item, f"{where}[{index}]")]
    if isinstance(value, dict) and not ({"Arn", "Configuration", "Definition"} & set(value)):
        return [pair for key, item in value.items() if isinstance(item, (dict, list))
                for pair in _documents(item, f"{where}.{key}")]
    return [(where, value)]


def read_export(source: Path) -> Export:
    """The documents under `source` (a folder of *.json files, or one file), sorted by what they are."""
    files = sorted(source.glob("*.json")) if source.is_dir() else [source]
    if not files:
        raise ImportGroupError(f"{source} holds no .json file: export the group first (docs/functions.md)")
    export = Export()
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ImportGroupError(f"{path}: not readable JSON: {exc}") from None
        for where, document in _documents(data, path.name):
            _classify(export, where, document)
    return export


def _classify(export: Export, where: str, document: Any) -> None:
    if not isinstance(document, dict):
        export.warnings.append(f"{where}: not an export document (a JSON object); ignored")
        return
    if isinstance(document.get("Configuration"), dict) and "FunctionName" in document["Configuration"]:
        export.functions.append(document)
        return
    arn = document.get("Arn", "")
    if GROUP_ARN.match(arn) and "Definition" not in document:
        export.group = document
    elif GROUP_VERSION_ARN.match(arn) and isinstance(document.get("Definition"), dict):
        export.group_versions.append(document)
    elif DEFINITION_VERSION_ARN.match(arn) and isinstance(document.get("Definition"), dict):
        export.definition_versions[arn] = document
    else:
        export.warnings.append(f"{where}: not the output of aws greengrass get-group, get-group-version, "
                               f"get-*-definition-version or aws lambda get-function; ignored")


@dataclass
class PlannedFunction:
    """A Lambda function to create: its get-function configuration, its package, the qualifiers to keep."""

    name: str
    region: str
    account: str
    configuration: dict
    package: Path
    aliases: Dict[str, str] = field(default_factory=dict)  # alias → version


@dataclass
class Imported:
    """What the import created (printed as the command's answer) and what it left out (warnings)."""

    group: dict
    group_version: dict
    definitions: Dict[str, str]
    functions: List[str]
    warnings: List[str]

    def response(self) -> Dict[str, Any]:
        return {"GroupId": self.group["Id"], "GroupArn": self.group["Arn"], "Name": self.group["Name"],
                "GroupVersionId": self.group_version["Version"], "GroupVersionArn": self.group_version["Arn"],
                "DefinitionVersionArns": self.definitions, "FunctionVersionArns": self.functions}


class _Plan:
    def __init__(self, export: Export, source: Path, zip_dir: Optional[Path], zips: Mapping[str, Path]) -> None:
        self.export = export
        self.source = source
        self.zip_dir = zip_dir or (source if source.is_dir() else source.parent)
        self.zips = zips
        self.warnings = list(export.warnings)
        self.functions: Dict[str, PlannedFunction] = {}
        self.kept_function_arns: set = set()   # unqualified ARNs of the functions imported
        self.kept_connector_arns: set = set()

    def version(self, key: str, group_version: dict) -> Optional[dict]:
        """The exported definition version a group version names under `key`, or None (with ImportGroupError when
        it is one ggic needs)."""
        arn = group_version["Definition"].get(key)
        if arn is None:
            return None
        found = self.export.definition_versions.get(arn)
        if found is None:
            kind = KINDS[key][:-1]
            match = DEFINITION_VERSION_ARN.match(arn)
            command = (f"aws greengrass get-{kind}-definition-version --{kind}-definition-id {match.group(2)} "
                       f"--{kind}-definition-version-id {match.group(3)}") if match else "the export"
            raise ImportGroupError(f"the group version's {key} {arn} is not in the export: add the output of "
                                   f"`{command}`")
        return found["Definition"]

    # --- what ggic does not run ---

    def not_run(self, group_version: dict) -> None:
        definition = group_version["Definition"]
        core = self.export.definition_versions.get(definition.get("CoreDefinitionVersionArn", ""))
        if core is not None:
            for entry in core["Definition"].get("Cores", []):
                self.warnings.append(f"core {entry.get('Id')!r} (thing {entry.get('ThingArn')}): not used; the "
                                     f"core is this machine, running `ggic run --group`"
                                     + ("; its shadow sync (SyncShadow) is not provided" if entry.get("SyncShadow")
                                        else ""))
        elif "CoreDefinitionVersionArn" in definition:
            self.warnings.append(f"core definition {definition['CoreDefinitionVersionArn']}: not imported; the core "
                                 f"is this machine")
        devices = self.export.definition_versions.get(definition.get("DeviceDefinitionVersionArn", ""))
        if devices is not None:
            for entry in devices["Definition"].get("Devices", []):
                self.warnings.append(f"device {entry.get('Id')!r} (thing {entry.get('ThingArn')}): left out; ggic "
                                     f"connects no devices")
        elif "DeviceDefinitionVersionArn" in definition:
            self.warnings.append(f"device definition {definition['DeviceDefinitionVersionArn']}: left out; ggic "
                                 f"connects no devices")
        loggers = self.export.definition_versions.get(definition.get("LoggerDefinitionVersionArn", ""))
        if loggers is not None:
            for entry in loggers["Definition"].get("Loggers", []):
                where = ("CloudWatch Logs: not sent; ggic logs to files under its state directory"
                         if entry.get("Type") == "AWSCloudWatch" else
                         "the file system: ggic writes its own logs under its state directory instead")
                self.warnings.append(f"logger {entry.get('Id')!r} ({entry.get('Component')} at {entry.get('Level')} "
                                     f"to {where})")
        elif "LoggerDefinitionVersionArn" in definition:
            self.warnings.append(f"logger definition {definition['LoggerDefinitionVersionArn']}: left out; ggic "
                                 f"logs to files under its state directory")

    # --- functions ---

    def _configuration(self, arn: str, name: str, qualifier: str) -> dict:
        candidates = [d["Configuration"] for d in self.export.functions
                      if d["Configuration"]["FunctionName"] in (name, arn) or
                      d["Configuration"].get("FunctionArn", "").split(":function:")[-1].split(":")[0] == name]
        exact = [c for c in candidates if c.get("FunctionArn") == arn or c.get("Version") == qualifier]
        if exact:
            return exact[0]
        if len(candidates) == 1 and not qualifier.isdigit():
            return candidates[0]  # get-function of an alias answers with the version's configuration
        raise ImportGroupError(f"function {arn}: its configuration is not in the export: add the output of "
                               f"`aws lambda get-function --function-name {arn}`")

    def _package(self, name: str, version: str) -> Path:
        for candidate in ([self.zips[name]] if name in self.zips else
                          [self.zip_dir / f"{name}-{version}.zip", self.zip_dir / f"{name}.zip"]):
            if Path(candidate).is_file():
                return Path(candidate)
        raise ImportGroupError(f"function {name}: no deployment package: put it at {self.zip_dir / (name + '.zip')}"
                               f" (from the get-function output's Code.Location) or give --zip {name}=PATH")

    def functions_of(self, version: dict) -> dict:
        """The function definition version with what ggic cannot run left out (warned), and the functions to
        create planned."""
        kept = []
        for function in version.get("Functions", []):
            arn = function.get("FunctionArn", "")
            match = ARN_PATTERN.match(arn)
            if not match or not match.group(1) or not match.group(2):
                self.warnings.append(f"function {function.get('Id')!r} ({arn}): a Greengrass core system function; "
                                     f"ggic does not run it (left out)")
                continue
            region, account, name, qualifier = match.groups()
            if qualifier is None:
                raise ImportGroupError(f"function {function.get('Id')!r}: {arn} is not qualified by a version or "
                                       f"an alias, as a Greengrass function definition's FunctionArn must be")
            configuration = self._configuration(arn, name, qualifier)
            if configuration.get("Runtime") not in RUNTIMES:
                raise ImportGroupError(f"function {arn}: runtime {configuration.get('Runtime')!r} is not one a "
                                       f"Greengrass core runs Lambda functions on ({', '.join(RUNTIMES)})")
            published = str(configuration.get("Version", ""))
            if not published.isdigit():
                raise ImportGroupError(f"function {arn}: the exported configuration is of version {published!r}; "
                                       f"export the published version (aws lambda get-function --function-name "
                                       f"{arn})")
            planned = self.functions.get(name)
            if planned is None:
                planned = self.functions[name] = PlannedFunction(name, region, account, configuration,
                                                                 self._package(name, published))
            elif planned.configuration.get("Version") != published:
                raise ImportGroupError(f"function {name}: the group uses versions {planned.configuration['Version']} "
                                       f"and {published}; ggic imports one version of each function")
            if not qualifier.isdigit():
                planned.aliases[qualifier] = published
            self.kept_function_arns.add(unqualified_arn(arn))
            kept.append(function)
        result = dict(version, Functions=kept)
        return result

    # --- resources, connectors, subscriptions ---

    def resources_of(self, version: dict) -> dict:
        kept = []
        for resource in version.get("Resources", []):
            container = resource.get("ResourceDataContainer") or {}
            if SAGEMAKER_RESOURCE in container:
                kept.append(resource)
            else:
                self.warnings.append(f"resource {resource.get('Id')!r} ({', '.join(sorted(container)) or 'empty'}): "
                                     f"left out; ggic deploys {SAGEMAKER_RESOURCE} resources only")
        return dict(version, Resources=kept)

    def connectors_of(self, version: dict) -> dict:
        kept = []
        for connector in version.get("Connectors", []):
            if match_arn(connector.get("ConnectorArn", "")) is None:
                self.warnings.append(f"connector {connector.get('Id')!r} ({connector.get('ConnectorArn')}): left "
                                     f"out; ggic runs the ML Image Classification and ML Feedback connectors only")
                continue
            kept.append(connector)
            self.kept_connector_arns.add(connector["ConnectorArn"])
        return dict(version, Connectors=kept)

    def subscriptions_of(self, version: dict) -> dict:
        kept = []
        for subscription in version.get("Subscriptions", []):
            subject = (f"subscription {subscription.get('Id')!r} ({subscription.get('Source')} -> "
                       f"{subscription.get('Target')} on {subscription.get('Subject')!r})")
            reason = None
            for key in ("Source", "Target"):
                text = subscription.get(key, "")
                try:
                    endpoint = parse_endpoint(text)
                except UnsupportedEndpointError as exc:
                    reason = str(exc)
                    break
                except ValueError:
                    break  # invalid: the subscription definition's validation names it
                if endpoint.kind == "lambda" and endpoint.address not in self.kept_function_arns:
                    reason = f"its {key} is a function the import leaves out or that the group does not have"
                elif endpoint.kind == "connector" and text not in self.kept_connector_arns:
                    reason = f"its {key} is a connector the import leaves out or that the group does not have"
            if reason:
                self.warnings.append(f"{subject}: left out; {reason}")
            else:
                kept.append(subscription)
        return dict(version, Subscriptions=kept)


def import_group(source: Path, state_dir: Path, zip_dir: Optional[Path] = None,
                 zips: Optional[Mapping[str, Path]] = None, name: Optional[str] = None) -> Imported:
    """Create the exported group under `state_dir`. Raises ImportGroupError for an export that cannot be imported,
    BadRequestError (from the definitions' checks) for a definition ggic refuses, LambdaError for a function."""
    export = read_export(source)
    if len(export.group_versions) != 1:
        raise ImportGroupError(f"{source}: the export must hold exactly one group version (the output of `aws "
                               f"greengrass get-group-version`); it holds {len(export.group_versions)}")
    (group_version,) = export.group_versions
    plan = _Plan(export, source, zip_dir, zips or {})
    plan.not_run(group_version)

    # Plan and check everything that does not need the functions created.
    requests: Dict[str, Tuple[Any, dict]] = {}
    for key, kind, store_class, select, validate in (
            ("ResourceDefinitionVersionArn", "Resources", ResourceDefinitionStore, plan.resources_of,
             validate_resource_definition),
            ("ConnectorDefinitionVersionArn", "Connectors", ConnectorDefinitionStore, plan.connectors_of,
             validate_connector_definition),
            ("FunctionDefinitionVersionArn", "Functions", FunctionDefinitionStore, plan.functions_of, None),
            ("SubscriptionDefinitionVersionArn", "Subscriptions", SubscriptionDefinitionStore,
             plan.subscriptions_of, lambda request: (validate_subscription_definition(request), []))):
        version = plan.version(key, group_version)
        if version is None:
            continue
        selected = select(version)
        if not selected.get(kind):
            plan.warnings.append(f"{key}: nothing in it that ggic runs; the group gets no {kind.lower()}")
            continue
        request = {"InitialVersion": selected}
        if validate is not None:
            request, warnings = validate(request)
            plan.warnings.extend(warnings)
        else:  # the function definition's own problems, before any function is created for it
            problems = [d for d in request_problems(FUNCTION_DEFINITION_SCHEMA, request) +
                        version_problems(selected, LambdaFunctionStore(state_dir), "InitialVersion")[0]
                        if d["DetailedErrorCode"] != FUNCTION_NOT_FOUND]
            if problems:
                raise BadRequestError(problems, f"Invalid function definition: {len(problems)} problem(s) found")
        requests[key] = (store_class, request)

    lambdas = LambdaFunctionStore(state_dir)
    created_functions = []
    for planned in plan.functions.values():
        created_functions.append(_create_function(lambdas, planned))
    if "FunctionDefinitionVersionArn" in requests:
        store_class, request = requests["FunctionDefinitionVersionArn"]
        request, warnings = validate_function_definition(request, lambdas)
        plan.warnings.extend(warnings)

    region = (GROUP_ARN.match((export.group or {}).get("Arn", "")) or [None, "us-east-1"])[1] or "us-east-1"
    group_name = name or (export.group or {}).get("Name") or \
        f"imported-{GROUP_VERSION_ARN.match(group_version['Arn']).group(1)}"
    definitions = {}
    for key, (store_class, request) in requests.items():
        created = store_class(state_dir, region).create(f"{group_name}-{KINDS[key]}", request["InitialVersion"])
        definitions[key] = created["LatestVersionArn"]
    resolve_group_version(state_dir, definitions)  # what was created reads back as a group version
    groups = GroupStore(state_dir, region)
    group = groups.create(group_name, definitions)
    record = groups.get(group["Id"])
    latest = GroupStore.version(record)
    return Imported(group, latest, definitions, created_functions, plan.warnings)


def _create_function(lambdas: LambdaFunctionStore, planned: PlannedFunction) -> str:
    """The function at its exported version (and aliases); reused when an earlier import created it the same."""
    configuration = planned.configuration
    version = str(configuration["Version"])
    package = planned.package.read_bytes()
    qualified = f"arn:aws:lambda:{planned.region}:{planned.account}:function:{planned.name}:{version}"
    try:
        existing = lambdas.configuration(qualified)
    except LambdaError:
        existing = None
    if existing is not None and existing["CodeSha256"] != base64.b64encode(hashlib.sha256(package).digest()).decode():
        raise ImportGroupError(f"function {qualified} already exists here with another package than {planned.package}"
                               f"; import into another --state-dir, or give the function another name")
    if existing is None:
        try:
            lambdas.configuration(f"arn:aws:lambda:{planned.region}:{planned.account}:function:{planned.name}")
            lambdas.update_function_code(planned.name, package)
        except LambdaError:
            lambdas.create_function(
                planned.name, configuration["Runtime"], configuration["Handler"], package,
                (configuration.get("Environment") or {}).get("Variables"), configuration.get("Timeout"),
                configuration.get("MemorySize"), configuration.get("Description", ""), configuration.get("Role"),
                region=planned.region, account_id=planned.account)
        lambdas.publish_version(planned.name, configuration.get("Description"), version=version)
    for alias, target in planned.aliases.items():
        try:
            lambdas.update_alias(planned.name, alias, target)
        except LambdaError:
            lambdas.create_alias(planned.name, alias, target)
    return qualified
