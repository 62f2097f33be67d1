"""Greengrass groups, locally: ML resources, groups, group versions and deployments, shaped like the Greengrass API.

This is how Greengrass users configured the connector: an ML resource whose source is a SageMaker training job
(`create-resource-definition`), a connector definition whose `MLModelResourceId` names that resource, a group
version binding both, and a deployment. A deployment here does what the Greengrass service and core did together:

1. check the group version (every image-classification connector's `MLModelResourceId` names an ML resource of the
   group whose `DestinationPath` is the connector's `MLModelDestinationPath`, and whose training job is the
   connector's `MLModelSageMakerJobArn`), answering a BadRequest listing every problem;
2. materialise each SageMaker ML resource with `fetch_model` (skipped when the artifact's ETag is unchanged);
3. hand the group version to the runtime serving the group (`ggic run --group`), which starts the new connector
   functions next to the old ones and switches traffic when they have loaded their models, together with the
   group version's subscriptions (`connector.core.deployments`).

Everything lives under `<state-dir>/groups/<group-id>/`: `group.json` (the group and its versions) and
`deployments/<deployment-id>.json` (each deployment and its status, which the runtime updates).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

from connector.control.definition_store import (
    ConnectorDefinitionStore,
    DefinitionNotFoundError,
    FunctionDefinitionStore,
    ResourceDefinitionStore,
    SubscriptionDefinitionStore,
)
from connector.contract import file_lock
from connector.control import function_definitions
from connector.core.group_functions import GroupFunction
from connector.core.runtime import DEFAULT_ACCOUNT_ID, ConnectorDeployment
from connector.contract.problems import INVALID_PARAMETER_VALUE, INVALID_REQUEST, BadRequestError, request_problems
from connector.contract.catalog import (
    InvalidTrainingJobArnError,
    connector_spec,
    normalise_training_job_arn,
    training_job_name,
)

RESOURCE_DEFINITION_SCHEMA = "create-resource-definition.schema.json"
GROUP_SCHEMA = "create-group.schema.json"
GROUP_VERSION_SCHEMA = "group-version.schema.json"

SAGEMAKER_RESOURCE = "SageMakerMachineLearningModelResourceData"
UNSUPPORTED_RESOURCES = ("LocalDeviceResourceData", "LocalVolumeResourceData", "S3MachineLearningModelResourceData",
                         "SecretsManagerSecretResourceData")
# Group version keys ggic stores but does not deploy: the core is this machine, it has no devices, it logs locally.
NOT_DEPLOYED_KEYS = ("CoreDefinitionVersionArn", "DeviceDefinitionVersionArn", "LoggerDefinitionVersionArn")

# DetailedErrorCodes beyond the connector-definition ones (see parameters.py).
DUPLICATE_RESOURCE_ID = "DuplicateResourceId"
DUPLICATE_DESTINATION_PATH = "DuplicateDestinationPath"
UNSUPPORTED_RESOURCE_TYPE = "UnsupportedResourceType"
DEFINITION_VERSION_NOT_FOUND = "DefinitionVersionNotFound"
RESOURCE_NOT_FOUND = "ResourceNotFound"
DESTINATION_PATH_MISMATCH = "DestinationPathMismatch"
TRAINING_JOB_MISMATCH = "TrainingJobMismatch"

# Deployment statuses, as GetDeploymentStatus reports them.
BUILDING = "Building"        # models are being fetched
IN_PROGRESS = "InProgress"   # models are in place; waiting for (or being applied by) the runtime
SUCCESS = "Success"
FAILURE = "Failure"


class GroupNotFoundError(LookupError):
    """No group (or group version, or deployment) has that Id or Name."""


def detail(code: str, message: str) -> dict:
    return {"DetailedErrorCode": code, "DetailedErrorMessage": message}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def _same_path(first: str, second: str) -> bool:
    return os.path.normpath(first) == os.path.normpath(second)


def _same_job(first: str, second: str) -> bool:
    """SageMaker sometimes lower-cases the name in ARNs it returns; compare the normalised ARNs case-insensitively."""
    return normalise_training_job_arn(first)[0].lower() == normalise_training_job_arn(second)[0].lower()


# --- CreateResourceDefinition ---------------------------------------------------------------------------------

def validate_resource_definition(request: Any) -> Tuple[dict, List[str]]:
    """Validate a CreateResourceDefinition request; return (normalised copy, warnings) or raise BadRequestError
    listing every problem. The documentation's colon spelling of a training-job ARN is rewritten, with a warning."""
    if not isinstance(request, dict):
        raise BadRequestError([detail(INVALID_REQUEST, "The request body must be a JSON object")],
                              "Invalid resource definition")
    normalised = copy.deepcopy(request)
    details = request_problems(RESOURCE_DEFINITION_SCHEMA, normalised)
    warnings: List[str] = []
    version = normalised.get("InitialVersion")
    resources = version.get("Resources") if isinstance(version, dict) else None
    ids: Dict[str, int] = {}
    paths: Dict[str, str] = {}
    for index, resource in enumerate(resources if isinstance(resources, list) else []):
        if not isinstance(resource, dict):
            continue
        resource_id = resource.get("Id")
        subject = f"Resource {resource_id!r}" if isinstance(resource_id, str) else f"Resource #{index}"
        if isinstance(resource_id, str):
            if resource_id in ids:
                details.append(detail(DUPLICATE_RESOURCE_ID, f"Resource Id {resource_id!r} is used by resources "
                                       f"#{ids[resource_id]} and #{index}; Ids must be unique in a definition"))
            ids.setdefault(resource_id, index)
        container = resource.get("ResourceDataContainer")
        if not isinstance(container, dict):
            continue
        kinds = sorted(container)
        unsupported = [kind for kind in kinds if kind in UNSUPPORTED_RESOURCES]
        if unsupported:
            details.append(detail(UNSUPPORTED_RESOURCE_TYPE, f"{subject}: {', '.join(unsupported)} is a Greengrass "
                                   f"resource type ggic does not deploy; it deploys {SAGEMAKER_RESOURCE} (an ML "
                                   f"model from a SageMaker training job)"))
        if len(kinds) != 1:
            details.append(detail(INVALID_REQUEST, f"{subject}: ResourceDataContainer must hold exactly one kind "
                                   f"of resource data, not {len(kinds)} ({', '.join(kinds) or 'none'})"))
        data = container.get(SAGEMAKER_RESOURCE)
        if not isinstance(data, dict):
            continue
        job_arn = data.get("SageMakerJobArn")
        if isinstance(job_arn, str):
            fixed, changed = normalise_training_job_arn(job_arn)
            try:
                training_job_name(fixed)
            except InvalidTrainingJobArnError:
                details.append(detail(INVALID_PARAMETER_VALUE, f"{subject}: SageMakerJobArn {job_arn!r} is not "
                                       f"a SageMaker training-job ARN (arn:aws:sagemaker:<region>:<account>:"
                                       f"training-job/<name>)"))
            else:
                if changed:
                    data["SageMakerJobArn"] = fixed
                    warnings.append(f"{subject}: normalised SageMakerJobArn {job_arn!r} to the real SageMaker ARN "
                                    f"form {fixed!r}")
        path = data.get("DestinationPath")
        if isinstance(path, str) and path.startswith("/"):
            key = os.path.normpath(path)
            if key in paths:
                details.append(detail(DUPLICATE_DESTINATION_PATH, f"{subject}: DestinationPath {path!r} is also "
                                       f"the destination of resource {paths[key]!r}; each model needs its own"))
            paths.setdefault(key, resource_id if isinstance(resource_id, str) else f"#{index}")
    if details:
        count = len(details)
        raise BadRequestError(details, f"Invalid resource definition: {count} problem{'s' if count != 1 else ''} found")
    return normalised, warnings


# --- group versions -----------------------------------------------------------------------------------------

@dataclass
class GroupVersionContents:
    """What a group version binds, resolved from the local definition stores."""

    connectors: List[dict] = field(default_factory=list)
    resources: List[dict] = field(default_factory=list)
    subscriptions: List[dict] = field(default_factory=list)
    functions: Dict[str, Any] = field(default_factory=dict)  # the FunctionDefinitionVersion: Functions, DefaultConfig
    state_dir: Optional[Path] = None  # where the Lambda functions the definition names are stored

    @property
    def resource_paths(self) -> Dict[str, Path]:
        """Resource Id → where the resource lies here (an ML resource: its DestinationPath, where fetch_model puts
        the model), for the functions' ResourceAccessPolicies."""
        return {resource_id: Path(data["DestinationPath"]) for resource_id, data in self.ml_resources.items()}

    @property
    def ml_resources(self) -> Dict[str, dict]:
        """Resource Id → its SageMakerMachineLearningModelResourceData."""
        return {r["Id"]: r["ResourceDataContainer"][SAGEMAKER_RESOURCE] for r in self.resources
                if SAGEMAKER_RESOURCE in r.get("ResourceDataContainer", {})}


def resolve_group_version(state_dir: Path, version: Any, where: str = "group version") \
        -> Tuple[GroupVersionContents, List[str]]:
    """Check a group version's shape and that its connector and resource definition versions exist here; return
    what they hold and warnings (for the kinds stored but not deployed). Raises BadRequestError."""
    details = request_problems(GROUP_VERSION_SCHEMA, version)
    if details:
        raise BadRequestError(details, f"Invalid {where}: {len(details)} problem(s) found")
    contents = GroupVersionContents(state_dir=state_dir)
    warnings = [f"{where}: {key} is stored but not deployed by ggic (the core is this machine: no devices, local "
                f"logs)" for key in NOT_DEPLOYED_KEYS if key in version]
    stores = {"ConnectorDefinitionVersionArn": ConnectorDefinitionStore(state_dir, ""),
              "ResourceDefinitionVersionArn": ResourceDefinitionStore(state_dir, ""),
              "FunctionDefinitionVersionArn": FunctionDefinitionStore(state_dir, ""),
              "SubscriptionDefinitionVersionArn": SubscriptionDefinitionStore(state_dir, "")}
    for key, store in stores.items():
        arn = version.get(key)
        if arn is None:
            continue
        try:
            record = store.get_version(arn)
        except DefinitionNotFoundError as exc:
            details.append(detail(DEFINITION_VERSION_NOT_FOUND, f"{where}: {key} {exc}"))
            continue
        if key == "ConnectorDefinitionVersionArn":
            contents.connectors = record["Version"].get("Connectors", [])
        elif key == "ResourceDefinitionVersionArn":
            contents.resources = record["Version"].get("Resources", [])
        elif key == "FunctionDefinitionVersionArn":
            contents.functions = record["Version"]
        else:
            contents.subscriptions = record["Version"].get("Subscriptions", [])
    if details:
        raise BadRequestError(details, f"Invalid {where}: {len(details)} problem(s) found")
    return contents, warnings


def deployment_problems(contents: GroupVersionContents) -> List[dict]:
    """Why the group version cannot be deployed: each connector's model must be an ML resource of the group, at the
    connector's MLModelDestinationPath, from the connector's training job (the ML Feedback connector has no model);
    each function's ARN must name a stored version or alias, and its ResourceAccessPolicies resources of the group."""
    details = []
    if contents.functions and contents.state_dir is not None:
        details += function_definitions.deployment_problems(contents.state_dir, contents.functions,
                                                            contents.resource_paths)
    resources = contents.ml_resources
    for connector in contents.connectors:
        parameters = connector.get("Parameters") or {}
        if connector_spec(connector["ConnectorArn"]).is_feedback:
            continue
        subject = f"Connector {connector.get('Id')!r}"
        resource_id = parameters.get("MLModelResourceId")
        data = resources.get(resource_id)
        if data is None:
            known = ", ".join(sorted(resources)) or (
                "none" if contents.resources else "none: the group version binds no resource definition")
            details.append(detail(RESOURCE_NOT_FOUND, f"{subject}: MLModelResourceId {resource_id!r} names no ML "
                                   f"resource of the group version (its ML resources: {known})"))
            continue
        path = parameters.get("MLModelDestinationPath", "")
        if not _same_path(path, data["DestinationPath"]):
            details.append(detail(DESTINATION_PATH_MISMATCH, f"{subject}: MLModelDestinationPath {path!r} is not "
                                   f"the DestinationPath {data['DestinationPath']!r} of ML resource {resource_id!r}; "
                                   f"the connector must read the model where the resource puts it"))
        job = parameters.get("MLModelSageMakerJobArn", "")
        if not _same_job(job, data["SageMakerJobArn"]):
            details.append(detail(TRAINING_JOB_MISMATCH, f"{subject}: MLModelSageMakerJobArn {job!r} is not the "
                                   f"SageMakerJobArn {data['SageMakerJobArn']!r} of ML resource {resource_id!r}"))
    return details


def connector_deployments(connectors: List[dict], region: str, qualifier: Optional[str] = None) \
        -> List[ConnectorDeployment]:
    """The runtime's view of a connector definition; `qualifier` (a deployment id) tells generations apart."""
    deployments = []
    for connector in connectors:
        parameters = connector.get("Parameters", {})
        arn = connector_spec(connector["ConnectorArn"]).function_arn(parameters, region)
        deployments.append(ConnectorDeployment(
            connector_id=connector["Id"], connector_arn=connector["ConnectorArn"],
            function_arn=f"{arn}:{qualifier}" if qualifier else arn, parameters=parameters))
    return deployments


# --- the store ------------------------------------------------------------------------------------------------

@dataclass
class GroupStore:
    """Groups, their versions and deployments under `<state-dir>/groups/`; `region` only names new groups' ARNs."""

    state_dir: Path
    region: str
    account_id: str = DEFAULT_ACCOUNT_ID

    @property
    def directory(self) -> Path:
        return self.state_dir / "groups"

    def _group_dir(self, group_id: str) -> Path:
        return self.directory / group_id

    def _locked(self, group_id: str) -> ContextManager[None]:
        """Serialise read-modify-write of one group's files (CLI commands and the runtime run side by side)."""
        return file_lock.exclusive(self._group_dir(group_id) / ".lock")

    def _arn(self, group_id: str) -> str:
        return f"arn:aws:greengrass:{self.region}:{self.account_id}:/greengrass/groups/{group_id}"

    # groups and versions

    def create(self, name: str, initial_version: Optional[dict], tags: Optional[dict] = None) -> dict:
        group_id = str(uuid.uuid4())
        now = _now()
        group = {"Arn": self._arn(group_id), "CreationTimestamp": now, "Id": group_id, "LastUpdatedTimestamp": now,
                 "Name": name}
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self._group_dir(group_id).mkdir()
        (self._group_dir(group_id) / "deployments").mkdir()
        with self._locked(group_id):
            _write_json(self._group_dir(group_id) / "group.json", {"Group": group, "Versions": [], "tags": tags or {}})
        if initial_version is not None:
            self.create_version(group_id, initial_version)
        return self.get(group_id)["Group"]

    def create_version(self, group_id: str, version: dict) -> dict:
        with self._locked(group_id):
            record = self.get(group_id)
            version_id = str(uuid.uuid4())
            now = _now()
            arn = f"{record['Group']['Arn']}/versions/{version_id}"
            entry = {"Arn": arn, "CreationTimestamp": now, "Id": group_id, "Version": version_id,
                     "Definition": version}
            record["Versions"].append(entry)
            record["Group"].update(LatestVersion=version_id, LatestVersionArn=arn, LastUpdatedTimestamp=now)
            _write_json(self._group_dir(group_id) / "group.json", record)
        return {key: entry[key] for key in ("Arn", "CreationTimestamp", "Id", "Version")}

    def all(self) -> List[dict]:
        if not self.directory.is_dir():
            return []
        records = []
        for path in self.directory.glob("*/group.json"):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(records, key=lambda r: r["Group"]["CreationTimestamp"])

    def get(self, id_or_name: str) -> dict:
        """A group by Id, or the newest group of that Name."""
        records = self.all()
        matches = [r for r in records if r["Group"]["Id"] == id_or_name] or \
                  [r for r in records if r["Group"].get("Name") == id_or_name]
        if not matches:
            known = ", ".join(f"{r['Group'].get('Name', '-')} ({r['Group']['Id']})" for r in records)
            raise GroupNotFoundError(f"no group {id_or_name!r} in {self.directory} (known: {known or 'none'})")
        return matches[-1]

    def named(self, name: str) -> List[dict]:
        """The groups (their GroupInformation) called `name`, oldest first: names need not be unique."""
        return [r["Group"] for r in self.all() if r["Group"].get("Name") == name]

    @staticmethod
    def version(record: dict, version_id: Optional[str] = None) -> dict:
        """A version of the group (the latest when `version_id` is None)."""
        versions = record["Versions"]
        if not versions:
            raise GroupNotFoundError(f"group {record['Group']['Id']} has no version yet: create one with "
                                     f"`ggic create-group-version`")
        if version_id is None:
            return versions[-1]
        for entry in versions:
            if entry["Version"] == version_id:
                return entry
        raise GroupNotFoundError(f"group {record['Group']['Id']} has no version {version_id!r} (versions: "
                                 f"{', '.join(v['Version'] for v in versions)})")

    # deployments

    def _deployment_path(self, group_id: str, deployment_id: str) -> Path:
        return self._group_dir(group_id) / "deployments" / f"{deployment_id}.json"

    def create_deployment(self, group_id: str, version_id: str, deployment_type: str,
                          function_versions: Optional[Dict[str, str]] = None) -> dict:
        """A new deployment record; `function_versions` (FunctionArn → published version) pins what its functions'
        aliases named when it was created."""
        deployment_id = str(uuid.uuid4())
        with self._locked(group_id):
            now = _now()
            deployment = {
                "DeploymentId": deployment_id,
                "DeploymentArn": f"{self.get(group_id)['Group']['Arn']}/deployments/{deployment_id}",
                "DeploymentType": deployment_type,
                "GroupId": group_id,
                "GroupVersionId": version_id,
                "Sequence": len(self.deployments(group_id)) + 1,
                "CreatedAt": now,
                "DeploymentStatus": BUILDING,
                "ErrorMessage": "",
                "ErrorDetails": [],
                "UpdatedAt": now,
                "FunctionVersions": function_versions or {},
            }
            _write_json(self._deployment_path(group_id, deployment_id), deployment)
        return deployment

    def update_deployment(self, group_id: str, deployment_id: str, status: str, message: str = "",
                          details: Optional[List[dict]] = None) -> dict:
        with self._locked(group_id):
            deployment = self.deployment(group_id, deployment_id)
            deployment.update(DeploymentStatus=status, ErrorMessage=message, ErrorDetails=details or [],
                              UpdatedAt=_now())
            _write_json(self._deployment_path(group_id, deployment_id), deployment)
        return deployment

    def deployments(self, group_id: str) -> List[dict]:
        """The group's deployments, oldest first."""
        found = []
        for path in (self._group_dir(group_id) / "deployments").glob("*.json"):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda d: (d["Sequence"], d["CreatedAt"]))

    def deployment(self, group_id: str, deployment_id: str) -> dict:
        try:
            return json.loads(self._deployment_path(group_id, deployment_id).read_text())
        except (OSError, ValueError):
            raise GroupNotFoundError(f"group {group_id} has no deployment {deployment_id!r}") from None


# --- what the runtime reads ------------------------------------------------------------------------------------

class LocalDeployments:
    """The deployments of one group, as `ggic run --group` consumes them (see runtime.deployments)."""

    def __init__(self, store: GroupStore, group_id: str, region: str,
                 check: Optional[Callable[[List[dict]], None]] = None) -> None:
        self.store = store
        self.group_id = group_id
        self.region = region
        self.check = check  # raises when the connectors cannot run here (the CLI's platform check)

    def _contents(self, deployment: dict) -> GroupVersionContents:
        record = self.store.get(self.group_id)
        version = self.store.version(record, deployment["GroupVersionId"])["Definition"]
        return resolve_group_version(self.store.state_dir, version)[0]

    def connectors(self, deployment: dict) -> List[ConnectorDeployment]:
        contents = self._contents(deployment)
        if self.check is not None:
            self.check(contents.connectors)
        return connector_deployments(contents.connectors, self.region, qualifier=deployment["DeploymentId"])

    def subscriptions(self, deployment: dict) -> List[dict]:
        """The deployment's subscription definition version's Subscriptions (none when it binds none)."""
        return self._contents(deployment).subscriptions

    def functions(self, deployment: dict) -> List[GroupFunction]:
        """The deployment's user Lambdas (its function definition version), each at the published version its
        qualifier named when the deployment was created (so a restarted runtime runs the same code). Raises
        FunctionResolutionError naming what cannot be deployed (a function or version gone; a resource the group
        version lacks)."""
        contents = self._contents(deployment)
        return function_definitions.group_functions(self.store.state_dir, contents.functions,
                                                    contents.resource_paths, deployment.get("FunctionVersions"))

    def current(self) -> Optional[dict]:
        """The deployment to run at start: the newest one that has not failed and has its models in place."""
        ready = [d for d in self.store.deployments(self.group_id) if d["DeploymentStatus"] in (IN_PROGRESS, SUCCESS)]
        return ready[-1] if ready else None

    def pending(self, after: dict) -> Optional[dict]:
        """The newest deployment created after `after` whose models are in place; older pending ones are
        superseded (marked Failure, as they will never run)."""
        newer = [d for d in self.store.deployments(self.group_id)
                 if d["Sequence"] > after["Sequence"] and d["DeploymentStatus"] == IN_PROGRESS]
        for superseded in newer[:-1]:
            self.report(superseded, FAILURE, f"superseded by deployment {newer[-1]['DeploymentId']}")
        return newer[-1] if newer else None

    def report(self, deployment: dict, status: str, message: str = "") -> None:
        self.store.update_deployment(self.group_id, deployment["DeploymentId"], status, message)
