"""Connector, resource and subscription definitions kept in the state directory, shaped like the Greengrass API's.

`ggic create-connector-definition` (and `create-resource-definition`) stores what `aws greengrass
create-connector-definition` would create, and prints the same response; `ggic run --connector-definition ID|NAME`
reads it back, and a group version names a definition by its version ARN (`get_version`).
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List

from connector.core.runtime import DEFAULT_ACCOUNT_ID


class DefinitionNotFoundError(LookupError):
    """No definition has that Id, Name or version ARN."""


@dataclass
class ConnectorDefinitionStore:
    state_dir: Path
    region: str
    account_id: str = DEFAULT_ACCOUNT_ID
    kind: ClassVar[str] = "connectors"  # the Greengrass ARN's definition kind, and the folder name
    label: ClassVar[str] = "connector definition"

    @property
    def directory(self) -> Path:
        return self.state_dir / "definitions" / self.kind

    def create(self, name: str, initial_version: Dict[str, Any], tags: Dict[str, str] | None = None) -> Dict[str, Any]:
        definition_id = str(uuid.uuid4())
        version_id = str(uuid.uuid4())
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        arn = f"arn:aws:greengrass:{self.region}:{self.account_id}:/greengrass/definition/{self.kind}/{definition_id}"
        response = {
            "Arn": arn,
            "CreationTimestamp": now,
            "Id": definition_id,
            "LastUpdatedTimestamp": now,
            "LatestVersion": version_id,
            "LatestVersionArn": f"{arn}/versions/{version_id}",
        }
        if name:
            response["Name"] = name
        record = {"Definition": response, "Version": initial_version, "tags": tags or {}}
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        path = self.directory / f"{definition_id}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        os.replace(temporary, path)
        return response

    def all(self) -> List[Dict[str, Any]]:
        if not self.directory.is_dir():
            return []
        records = [json.loads(p.read_text()) for p in self.directory.glob("*.json")]
        return sorted(records, key=lambda r: r["Definition"]["CreationTimestamp"])

    def get(self, id_or_name: str) -> Dict[str, Any]:
        """The stored record for an Id, or for a Name (the newest definition of that name)."""
        records = self.all()
        by_id = [r for r in records if r["Definition"]["Id"] == id_or_name]
        matches = by_id or [r for r in records if r["Definition"].get("Name") == id_or_name]
        if not matches:
            known = ", ".join(f"{r['Definition'].get('Name', '-')} ({r['Definition']['Id']})" for r in records)
            raise DefinitionNotFoundError(
                f"no {self.label} {id_or_name!r} in {self.directory} (known: {known or 'none'})")
        return matches[-1]

    def named(self, name: str) -> List[Dict[str, Any]]:
        """The definitions (their AWS-shaped information) called `name`, oldest first: names need not be unique,
        as in the Greengrass API."""
        return [r["Definition"] for r in self.all() if r["Definition"].get("Name") == name]

    @staticmethod
    def _versions(record: Dict[str, Any]) -> List[Dict[str, Any]]:
        """A record's versions, oldest first, each {Arn, CreationTimestamp, Version, Definition}: the initial one,
        then those `create_version` added."""
        definition = record["Definition"]
        first = record.get("InitialVersion") or {"Version": definition["LatestVersion"],
                                                 "Arn": definition["LatestVersionArn"]}
        initial = {"Arn": first["Arn"], "CreationTimestamp": definition["CreationTimestamp"],
                   "Version": first["Version"], "Definition": record["Version"]}
        return [initial] + record.get("LaterVersions", [])

    def create_version(self, id_or_name: str, version: Dict[str, Any]) -> Dict[str, Any]:
        """Create<Kind>DefinitionVersion: a new version of the definition, now its latest; the answer's shape."""
        record = self.get(id_or_name)
        definition = record["Definition"]
        version_id = str(uuid.uuid4())
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        entry = {"Arn": f"{definition['Arn']}/versions/{version_id}", "CreationTimestamp": now,
                 "Version": version_id, "Definition": version}
        record.setdefault("LaterVersions", []).append(entry)
        record.setdefault("InitialVersion", {"Version": definition["LatestVersion"],
                                             "Arn": definition["LatestVersionArn"]})
        definition.update(LatestVersion=version_id, LatestVersionArn=entry["Arn"], LastUpdatedTimestamp=now)
        path = self.directory / f"{definition['Id']}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        os.replace(temporary, path)
        return {"Arn": entry["Arn"], "CreationTimestamp": now, "Id": definition["Id"], "Version": version_id}

    def version(self, id_or_name: str, version_id: str) -> Dict[str, Any]:
        """Get<Kind>DefinitionVersion's answer: the version `version_id` of the definition."""
        record = self.get(id_or_name)
        definition = record["Definition"]
        versions = self._versions(record)
        for entry in versions:
            if entry["Version"] == version_id:
                return {"Arn": entry["Arn"], "CreationTimestamp": entry["CreationTimestamp"],
                        "Definition": entry["Definition"], "Id": definition["Id"], "Version": entry["Version"]}
        raise DefinitionNotFoundError(
            f"{self.label} {definition['Id']} has no version {version_id!r} (its version"
            f"{'s' if len(versions) > 1 else ''}: {', '.join(entry['Version'] for entry in versions)})")

    def versions(self, id_or_name: str) -> List[Dict[str, Any]]:
        """List<Kind>DefinitionVersions' entries, oldest first."""
        record = self.get(id_or_name)
        return [{"Arn": entry["Arn"], "CreationTimestamp": entry["CreationTimestamp"], "Id": record["Definition"]["Id"],
                 "Version": entry["Version"]} for entry in self._versions(record)]

    def get_version(self, version_arn: str) -> Dict[str, Any]:
        """The stored record of the definition one of whose versions has this ARN, as a group version names it;
        its "Version" is that version's contents."""
        records = self.all()
        for record in records:
            for entry in self._versions(record):
                if entry["Arn"] == version_arn:
                    return dict(record, Version=entry["Definition"])
        known = ", ".join(entry["Arn"] for r in records for entry in self._versions(r))
        raise DefinitionNotFoundError(
            f"{version_arn!r} is not the version ARN of a {self.label} in {self.directory} "
            f"(known: {known or 'none'})")


class ResourceDefinitionStore(ConnectorDefinitionStore):
    """Resource definitions (`ggic create-resource-definition`), stored like connector definitions."""

    kind: ClassVar[str] = "resources"
    label: ClassVar[str] = "resource definition"


class SubscriptionDefinitionStore(ConnectorDefinitionStore):
    """Subscription definitions (`ggic create-subscription-definition`), stored like connector definitions."""

    kind: ClassVar[str] = "subscriptions"
    label: ClassVar[str] = "subscription definition"


class FunctionDefinitionStore(ConnectorDefinitionStore):
    """Function definitions (`ggic create-function-definition`): a group's user Lambdas and their configuration."""

    kind: ClassVar[str] = "functions"
    label: ClassVar[str] = "function definition"
