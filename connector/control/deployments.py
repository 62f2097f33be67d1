"""A group deployment, as the control plane makes it (`ggic create-deployment`): the group version chosen and
checked, its ML resources' models fetched into place, the deployment recorded for the runtime that serves the group
(which applies it without a gap: `connector/core/deployments.py`), and its outcome awaited."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from connector.contract.problems import INVALID_REQUEST, BadRequestError, detail
from connector.control.fetch_model import FetchModelError, fetch_model, progress_for
from connector.control.groups import (
    FAILURE,
    IN_PROGRESS,
    SUCCESS,
    GroupStore,
    deployment_problems,
    resolve_group_version,
)

log = logging.getLogger("ggic")

RESET_TYPES = ("ResetDeployment", "ForceResetDeployment")


class DeploymentFailedError(RuntimeError):
    """The deployment was recorded and then failed (a model that cannot be fetched, a runtime that refused it)."""


def deployable_version(store: GroupStore, group: str, deployment_type: str, group_version_id: Optional[str] = None,
                       redeployment_of: Optional[str] = None) -> Tuple[dict, dict]:
    """(group record, group version) a deployment of this type deploys; BadRequestError for what ggic does not do,
    GroupNotFoundError for an unknown group, version or deployment."""
    record = store.get(group)
    group_id = record["Group"]["Id"]
    if deployment_type in RESET_TYPES:
        raise BadRequestError([detail(INVALID_REQUEST, f"DeploymentType {deployment_type} is not supported by "
                                                       f"ggic: stop `ggic run --group {group_id}` to stop serving "
                                                       f"the group")], "Unsupported deployment type")
    if deployment_type == "Redeployment":
        if not redeployment_of:
            raise BadRequestError([detail(INVALID_REQUEST, "DeploymentType Redeployment needs --deployment-id: the "
                                                           "deployment to redo")], "Missing DeploymentId")
        group_version_id = store.deployment(group_id, redeployment_of)["GroupVersionId"]
    return record, store.version(record, group_version_id)


def checked_contents(state_dir: Path, version: dict) -> Tuple[Any, List[str]]:
    """The version's definitions, resolved and checked (BadRequestError lists every problem), and warnings."""
    contents, warnings = resolve_group_version(state_dir, version["Definition"])
    problems = deployment_problems(contents)
    if problems:
        raise BadRequestError(problems, f"Group version {version['Version']} cannot be deployed: "
                                        f"{len(problems)} problem(s) found")
    return contents, warnings


def fetch_models(store: GroupStore, deployment: dict, contents: Any, region: Optional[str],
                 progress_stream: TextIO) -> None:
    """Each ML resource's model into its destination path; the deployment is then InProgress, or Failure (and
    DeploymentFailedError) with the resource and the reason."""
    group_id, deployment_id = deployment["GroupId"], deployment["DeploymentId"]
    for resource_id, data in sorted(contents.ml_resources.items()):
        log.info("ML resource %s: the model of %s into %s", resource_id, data["SageMakerJobArn"],
                 data["DestinationPath"])
        progress = progress_for(progress_stream)
        try:
            result = fetch_model(data["SageMakerJobArn"], Path(data["DestinationPath"]), region=region,
                                 progress=progress)
        except FetchModelError as exc:
            message = f"ML resource {resource_id!r}: {exc}"
            store.update_deployment(group_id, deployment_id, FAILURE, message)
            raise DeploymentFailedError(f"deployment {deployment_id} failed: {message}") from None
        finally:
            progress.close()
        for line in result.summary().splitlines():
            log.info("ML resource %s: %s", resource_id, line)
    store.update_deployment(group_id, deployment_id, IN_PROGRESS)


def serving_runtime(state_dir: Path, group_id: str) -> Optional[int]:
    """The pid of the `ggic run --group` that serves this group from this state directory, if one runs."""
    try:
        state = json.loads((state_dir / "runtime.json").read_text())
        pid = int(state["pid"])
        if (state.get("group") or {}).get("Id") != group_id:
            return None
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


def wait_applied(store: GroupStore, state_dir: Path, deployment: dict, timeout_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
    """Until the serving runtime has applied the deployment: its record when it serves; DeploymentFailedError when
    it failed, the runtime stopped, or `timeout_s` passed."""
    group_id, deployment_id = deployment["GroupId"], deployment["DeploymentId"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = store.deployment(group_id, deployment_id)
        if current["DeploymentStatus"] == SUCCESS:
            return current
        if current["DeploymentStatus"] == FAILURE:
            raise DeploymentFailedError(f"deployment {deployment_id} failed: {current['ErrorMessage']}")
        if serving_runtime(state_dir, group_id) is None:
            raise DeploymentFailedError(f"the runtime serving group {group_id} stopped before deployment "
                                        f"{deployment_id} was applied; `ggic run --group {group_id}` will run it")
        sleep(0.1)
    raise DeploymentFailedError(f"deployment {deployment_id} was not applied within {timeout_s:g} s; see "
                                f"`ggic get-deployment-status --group-id {group_id} --deployment-id {deployment_id}`")
