"""Lambda functions kept in the state directory, the way AWS Lambda keeps them: a deployment package (zip), a
runtime and a handler, `$LATEST` (mutable), published versions (immutable) and aliases naming versions.

A group's function definition names a function by a qualified ARN (`...:function:NAME:3` or `...:function:NAME:prod`);
`resolve` turns that into the published version and its unpacked package, which is what the runtime runs.

Layout, under `<state-dir>/lambda/`:
- `functions/<name>.json`: the function (its `$LATEST` configuration, versions, aliases), rewritten atomically;
- `packages/<sha256 hex>.zip` and `code/<sha256 hex>/`: each package, and its contents unpacked with the archive
  rules models use (`connector.contract.archives`). A package is stored by its digest, so what a published version
  names never changes; `$LATEST` moves to another digest when its code is updated.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from connector.contract import archives, file_lock
from connector.contract.environment import (
    ARCHIVE_MAX_MEMBER_BYTES_ENV,
    ARCHIVE_MAX_MEMBERS_ENV,
    ARCHIVE_MAX_RATIO_ENV,
    ARCHIVE_MAX_TOTAL_BYTES_ENV,
)
from connector.core.runtime import DEFAULT_ACCOUNT_ID

LATEST = "$LATEST"
# AWS Lambda's limits for a package uploaded directly (not through S3), and its unzipped size.
MAX_ZIP_BYTES = 50 * archives.MIB
PACKAGE_LIMITS = archives.ArchiveLimits(max_members=20000, max_member_bytes=250 * archives.MIB,
                                        max_total_bytes=250 * archives.MIB, max_ratio=200.0)
_LIMIT_VARIABLES = {"max_members": ARCHIVE_MAX_MEMBERS_ENV, "max_member_bytes": ARCHIVE_MAX_MEMBER_BYTES_ENV,
                    "max_total_bytes": ARCHIVE_MAX_TOTAL_BYTES_ENV, "max_ratio": ARCHIVE_MAX_RATIO_ENV}
# The runtimes a Greengrass v1 core runs Lambda functions on (Executable functions use `provided`-like runtimes).
RUNTIMES = ("python2.7", "python3.7", "python3.8", "nodejs6.10", "nodejs8.10", "nodejs12.x", "java8", "arm7l",
            "executable")
DEFAULT_TIMEOUT_S, DEFAULT_MEMORY_MB = 3, 128
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ALIAS_PATTERN = re.compile(r"^(?!\d+$)[a-zA-Z0-9_-]{1,128}$")
VARIABLE_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]+$")
ARN_PATTERN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:([a-z0-9-]+):([0-9a-zA-Z]+):function:([a-zA-Z0-9_-]+)"
                         r"(?::(\$LATEST|[a-zA-Z0-9_-]+))?$")
MAX_ENVIRONMENT_BYTES = 4096


class LambdaError(Exception):
    """An error AWS Lambda would answer; `code` is its exception name (what `aws lambda` prints)."""

    code = "ServiceException"


class ResourceNotFoundError(LambdaError, LookupError):
    code = "ResourceNotFoundException"


class ResourceConflictError(LambdaError):
    code = "ResourceConflictException"


class InvalidParameterValueError(LambdaError, ValueError):
    code = "InvalidParameterValueException"


class RequestTooLargeError(LambdaError):
    code = "RequestTooLargeException"


@dataclass(frozen=True)
class FunctionAddress:
    """A function ARN or name, split: `qualifier` is None when it names no version or alias."""

    name: str
    region: Optional[str] = None
    account: Optional[str] = None
    qualifier: Optional[str] = None


def parse_function_name(text: str) -> FunctionAddress:
    """A FunctionName as AWS Lambda takes it: a name, `name:qualifier`, or a (qualified) function ARN."""
    match = ARN_PATTERN.match(text)
    if match:
        region, account, name, qualifier = match.groups()
        return FunctionAddress(name, region, account, qualifier)
    name, _, qualifier = text.partition(":")
    if not NAME_PATTERN.match(name) or (qualifier and not re.match(r"^(\$LATEST|[a-zA-Z0-9_-]+)$", qualifier)):
        raise InvalidParameterValueError(
            f"{text!r} is not a function name, name:qualifier or function ARN "
            f"(arn:aws:lambda:<region>:<account>:function:<name>[:<version or alias>])")
    return FunctionAddress(name, qualifier=qualifier or None)


@dataclass(frozen=True)
class ResolvedVersion:
    """What a qualified function ARN names: the function's published version and its unpacked package."""

    arn: str               # as given
    version: str           # the published version ("3"), an alias resolved
    configuration: Dict[str, Any]
    code_dir: Path


def package_limits(environ: Mapping[str, str] = os.environ) -> archives.ArchiveLimits:
    """A package's bounds: Lambda's, each overridden by its GGIC_ARCHIVE_* variable when set (the variables the
    refusal names, the same as for models)."""
    configured = archives.ArchiveLimits.from_environment(environ)
    return dataclasses.replace(PACKAGE_LIMITS, **{name: getattr(configured, name)
                                                  for name, variable in _LIMIT_VARIABLES.items()
                                                  if environ.get(variable)})


def _now() -> str:
    """Lambda's LastModified layout: 2026-12-02T05:20:00.000+0000."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def check_environment(variables: Any) -> Dict[str, str]:
    """Environment.Variables as Lambda accepts them: names [a-zA-Z][a-zA-Z0-9_]+, string values, 4 KB in all."""
    if not isinstance(variables, dict):
        raise InvalidParameterValueError(f"Environment.Variables must be an object of strings, not {variables!r}")
    for key, value in variables.items():
        if not VARIABLE_PATTERN.match(key):
            raise InvalidParameterValueError(f"Environment variable name {key!r} is invalid: a letter, then one or "
                                             f"more letters, digits or _")
        if not isinstance(value, str):
            raise InvalidParameterValueError(f"Environment variable {key!r}: its value must be a string, not "
                                             f"{json.dumps(value)}")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
    if size > MAX_ENVIRONMENT_BYTES:
        raise InvalidParameterValueError(f"Environment variables take {size} bytes: more than Lambda's "
                                         f"{MAX_ENVIRONMENT_BYTES}")
    return dict(variables)


def handler_problem(runtime: str, handler: str, code_dir: Path) -> Optional[str]:
    """Why a Python handler would not be found in its package (None when it would, or for other runtimes): Lambda
    accepts such a function and fails every invocation, so ggic says so when the package is stored."""
    if not runtime.startswith("python"):
        return None
    module, _, function = handler.rpartition(".")
    if not module or not function:
        return f"handler {handler!r} is not module.function"
    relative = Path(*module.split("."))
    if (code_dir / relative.with_suffix(".py")).is_file() or (code_dir / relative / "__init__.py").is_file():
        return None
    return f"handler {handler!r}: the package has no module {module!r} ({relative.with_suffix('.py')})"


@dataclass
class LambdaFunctionStore:
    """The Lambda functions of one state directory. `region`/`account_id` name functions created here."""

    state_dir: Path
    region: str = "us-east-1"
    account_id: str = DEFAULT_ACCOUNT_ID

    @property
    def directory(self) -> Path:
        return self.state_dir / "lambda"

    def _record_path(self, name: str) -> Path:
        return self.directory / "functions" / f"{name}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (CLI commands may run side by side)."""
        for folder in ("functions", "packages", "code"):
            (self.directory / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        with file_lock.exclusive(self.directory / ".lock"):
            yield

    # --- packages ---

    def code_dir(self, code_sha256: str) -> Path:
        return self.directory / "code" / base64.b64decode(code_sha256).hex()

    def package_path(self, code_sha256: str) -> Path:
        return self.directory / "packages" / (base64.b64decode(code_sha256).hex() + ".zip")

    def _store_package(self, package: bytes) -> Tuple[str, int]:
        """Keep a zip and its unpacked contents (once per digest); (CodeSha256, CodeSize). Refuses what is not a
        zip, what is over the limits and what would escape its folder, leaving nothing behind."""
        if len(package) > MAX_ZIP_BYTES:
            raise RequestTooLargeError(f"the deployment package is {len(package)} bytes: a package given directly "
                                       f"may have {MAX_ZIP_BYTES} at most")
        if not package.startswith(b"PK"):
            raise InvalidParameterValueError("Could not unzip uploaded file: the --zip-file is not a zip archive")
        digest = hashlib.sha256(package).digest()
        code_sha256 = base64.b64encode(digest).decode()
        code_dir = self.code_dir(code_sha256)
        if not code_dir.is_dir():
            staging = Path(tempfile.mkdtemp(dir=self.directory / "code", prefix=".unpacking-"))
            archive = staging.with_suffix(".zip")
            try:
                archive.write_bytes(package)
                archives.extract(archive, staging, package_limits(), kind="package")
                os.replace(archive, self.package_path(code_sha256))
                os.replace(staging, code_dir)
            except archives.ArchiveError as exc:
                raise InvalidParameterValueError(f"Could not unzip uploaded file: {exc}") from None
            except ValueError as exc:  # a GGIC_ARCHIVE_* variable that is not a number
                raise LambdaError(f"cannot unpack packages: {exc}") from None
            finally:
                archive.unlink(missing_ok=True)
                shutil.rmtree(staging, ignore_errors=True)
        return code_sha256, len(package)

    # --- reading ---

    def names(self) -> List[str]:
        folder = self.directory / "functions"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    def _record(self, address: FunctionAddress, text: str) -> Dict[str, Any]:
        try:
            record = json.loads(self._record_path(address.name).read_text())
        except (OSError, ValueError):
            raise ResourceNotFoundError(f"Function not found: {text} (no function {address.name!r} in "
                                        f"{self.directory}; known: {', '.join(self.names()) or 'none'})") from None
        latest = record["Latest"]
        if address.region is not None and (address.region, address.account) != (record["Region"], record["Account"]):
            raise ResourceNotFoundError(f"Function not found: {text} (the stored {address.name!r} is "
                                        f"{latest['FunctionArn']}: another region or account)")
        return record

    def _version_of(self, record: Dict[str, Any], qualifier: Optional[str], text: str) -> str:
        """The version a qualifier names ($LATEST, a published version, or an alias's version)."""
        if qualifier in (None, LATEST):
            return LATEST
        if qualifier in record["Versions"]:
            return qualifier
        if qualifier in record["Aliases"]:
            return record["Aliases"][qualifier]["FunctionVersion"]
        what = "version" if qualifier.isdigit() else "alias"
        raise ResourceNotFoundError(
            f"Function not found: {text} ({record['Latest']['FunctionName']} has no {what} {qualifier!r}; versions: "
            f"{', '.join(record['Versions']) or 'none published'}; aliases: {', '.join(record['Aliases']) or 'none'})")

    def configuration(self, function_name: str) -> Dict[str, Any]:
        """GetFunctionConfiguration: the configuration of the version the name or ARN names ($LATEST unqualified)."""
        address = parse_function_name(function_name)
        record = self._record(address, function_name)
        version = self._version_of(record, address.qualifier, function_name)
        return copy.deepcopy(record["Latest"] if version == LATEST else record["Versions"][version])

    def get_function(self, function_name: str) -> Dict[str, Any]:
        """GetFunction: the configuration, and where the package is (a local file rather than an S3 URL)."""
        configuration = self.configuration(function_name)
        record = self._record(parse_function_name(function_name), function_name)
        response = {"Configuration": configuration,
                    "Code": {"RepositoryType": "Local",
                             "Location": self.package_path(configuration["CodeSha256"]).as_uri()}}
        if record.get("Tags"):
            response["Tags"] = record["Tags"]
        return response

    def list_functions(self) -> List[Dict[str, Any]]:
        """ListFunctions: every function's $LATEST configuration, by name."""
        return [json.loads(self._record_path(name).read_text())["Latest"] for name in self.names()]

    def list_versions(self, function_name: str) -> List[Dict[str, Any]]:
        """ListVersionsByFunction: $LATEST, then the published versions in order."""
        address = parse_function_name(function_name)
        record = self._record(address, function_name)
        return [record["Latest"]] + [record["Versions"][v] for v in sorted(record["Versions"], key=int)]

    def list_aliases(self, function_name: str) -> List[Dict[str, Any]]:
        address = parse_function_name(function_name)
        record = self._record(address, function_name)
        return [record["Aliases"][name] for name in sorted(record["Aliases"])]

    def resolve(self, arn: str) -> ResolvedVersion:
        """The published version a function definition's qualified ARN names, an alias resolved now. A Greengrass
        group runs published versions only: `$LATEST`, an unqualified ARN and an alias on `$LATEST` are refused."""
        match = ARN_PATTERN.match(arn)
        if not match:
            raise InvalidParameterValueError(f"{arn!r} is not a Lambda function ARN "
                                             f"(arn:aws:lambda:<region>:<account>:function:<name>:<version or alias>)")
        region, account, name, qualifier = match.groups()
        if qualifier in (None, LATEST):
            raise InvalidParameterValueError(f"{arn}: a Greengrass group runs a published version; qualify the ARN "
                                             f"with a version number or an alias, not {qualifier or 'nothing'}")
        record = self._record(FunctionAddress(name, region, account, qualifier), arn)
        version = self._version_of(record, qualifier, arn)
        if version == LATEST:
            raise InvalidParameterValueError(f"{arn}: alias {qualifier!r} points at $LATEST; a Greengrass group runs "
                                             f"a published version (`ggic update-alias --function-version N`)")
        configuration = copy.deepcopy(record["Versions"][version])
        return ResolvedVersion(arn, version, configuration, self.code_dir(configuration["CodeSha256"]))

    # --- writing ---

    def _arn(self, record: Dict[str, Any], qualifier: Optional[str] = None) -> str:
        arn = f"arn:aws:lambda:{record['Region']}:{record['Account']}:function:{record['Latest']['FunctionName']}"
        return f"{arn}:{qualifier}" if qualifier else arn

    def create_function(self, name: str, runtime: str, handler: str, package: bytes,
                        variables: Optional[Dict[str, str]] = None, timeout_s: Optional[int] = None,
                        memory_mb: Optional[int] = None, description: str = "", role: Optional[str] = None,
                        publish: bool = False, tags: Optional[Dict[str, str]] = None,
                        region: Optional[str] = None, account_id: Optional[str] = None) -> Dict[str, Any]:
        """CreateFunction; `region`/`account_id` keep an imported function's own ARN."""
        if not NAME_PATTERN.match(name):
            raise InvalidParameterValueError(f"FunctionName {name!r} is invalid: 1 to 64 letters, digits, - or _")
        if runtime not in RUNTIMES:
            raise InvalidParameterValueError(f"Runtime {runtime!r} is not one a Greengrass core runs Lambda functions "
                                             f"on: {', '.join(RUNTIMES)}")
        if not handler or len(handler) > 128 or re.search(r"\s", handler):
            raise InvalidParameterValueError(f"Handler {handler!r} is invalid: 1 to 128 characters, no spaces")
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        memory_mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
        if not 1 <= timeout_s <= 900:
            raise InvalidParameterValueError(f"Timeout {timeout_s} is out of range: 1 to 900 seconds")
        if not 128 <= memory_mb <= 10240:
            raise InvalidParameterValueError(f"MemorySize {memory_mb} is out of range: 128 to 10240 MB")
        variables = check_environment(variables or {})
        with self._locked():
            if self._record_path(name).exists():
                raise ResourceConflictError(f"Function already exist: {name}")
            code_sha256, code_size = self._store_package(package)
            record: Dict[str, Any] = {"Region": region or self.region, "Account": account_id or self.account_id,
                                      "Versions": {}, "Aliases": {}, "Tags": tags or {}, "Latest": {}}
            record["Latest"] = {
                "FunctionName": name, "FunctionArn": "", "Runtime": runtime,
                "Role": role or f"arn:aws:iam::{record['Account']}:role/ggic-local",
                "Handler": handler, "CodeSize": code_size, "Description": description, "Timeout": timeout_s,
                "MemorySize": memory_mb, "LastModified": _now(), "CodeSha256": code_sha256, "Version": LATEST,
                "RevisionId": str(uuid.uuid4()), "State": "Active",
                "LastUpdateStatus": "Successful", "PackageType": "Zip"}
            record["Latest"]["FunctionArn"] = self._arn(record)
            if variables:
                record["Latest"]["Environment"] = {"Variables": variables}
            if publish:
                self._publish(record)
            _write_json(self._record_path(name), record)
        return copy.deepcopy(record["Versions"][str(len(record["Versions"]))] if publish else record["Latest"])

    def _publish(self, record: Dict[str, Any], description: Optional[str] = None,
                 version: Optional[str] = None) -> Dict[str, Any]:
        """A new immutable version from $LATEST; none when $LATEST is what the newest version already is."""
        latest = record["Latest"]
        if record["Versions"] and version is None:
            newest = record["Versions"][max(record["Versions"], key=int)]
            same = {k: v for k, v in newest.items() if k not in ("FunctionArn", "Version", "Description",
                                                                  "RevisionId", "LastModified")}
            if same == {k: v for k, v in latest.items() if k in same}:
                return newest
        number = version or str(max(map(int, record["Versions"]), default=0) + 1)
        entry = dict(copy.deepcopy(latest), Version=number, FunctionArn=self._arn(record, number),
                     RevisionId=str(uuid.uuid4()))
        if description is not None:
            entry["Description"] = description
        record["Versions"][number] = entry
        return entry

    def _update(self, function_name: str) -> Tuple[FunctionAddress, Path]:
        address = parse_function_name(function_name)
        if address.qualifier not in (None, LATEST):
            raise InvalidParameterValueError(f"{function_name}: only $LATEST can be changed; version "
                                             f"{address.qualifier} is immutable")
        return address, self._record_path(address.name)

    def publish_version(self, function_name: str, description: Optional[str] = None,
                        code_sha256: Optional[str] = None, version: Optional[str] = None) -> Dict[str, Any]:
        """PublishVersion. `version` (import only) gives the new version the number it has in AWS."""
        address, path = self._update(function_name)
        with self._locked():
            record = self._record(address, function_name)
            if code_sha256 is not None and code_sha256 != record["Latest"]["CodeSha256"]:
                raise InvalidParameterValueError(f"CodeSha256 {code_sha256} does not match $LATEST's "
                                                 f"{record['Latest']['CodeSha256']}")
            if version is not None and (not version.isdigit() or version in record["Versions"]
                                        or int(version) <= max(map(int, record["Versions"]), default=0)):
                raise ResourceConflictError(f"{function_name}: cannot publish version {version} after versions "
                                            f"{', '.join(record['Versions']) or 'none'}")
            entry = self._publish(record, description, version)
            _write_json(path, record)
        return copy.deepcopy(entry)

    def update_function_code(self, function_name: str, package: bytes, publish: bool = False) -> Dict[str, Any]:
        """UpdateFunctionCode: $LATEST gets the new package; published versions keep theirs."""
        address, path = self._update(function_name)
        with self._locked():
            record = self._record(address, function_name)
            code_sha256, code_size = self._store_package(package)
            record["Latest"].update(CodeSha256=code_sha256, CodeSize=code_size, LastModified=_now(),
                                    RevisionId=str(uuid.uuid4()))
            entry = self._publish(record) if publish else record["Latest"]
            _write_json(path, record)
        return copy.deepcopy(entry)

    def _alias(self, function_name: str, alias: str, version: Optional[str], description: Optional[str],
               create: bool) -> Dict[str, Any]:
        address, path = self._update(function_name)
        if not ALIAS_PATTERN.match(alias):
            raise InvalidParameterValueError(f"Alias name {alias!r} is invalid: 1 to 128 letters, digits, - or _, "
                                             f"not only digits")
        with self._locked():
            record = self._record(address, function_name)
            existing = record["Aliases"].get(alias)
            if create and existing is not None:
                raise ResourceConflictError(f"Alias already exists: {self._arn(record, alias)}")
            if not create and existing is None:
                raise ResourceNotFoundError(f"Alias not found: {self._arn(record, alias)} (aliases: "
                                            f"{', '.join(record['Aliases']) or 'none'})")
            if version is not None and version != LATEST and version not in record["Versions"]:
                raise ResourceNotFoundError(f"Function not found: {self._arn(record, version)} (published versions: "
                                            f"{', '.join(record['Versions']) or 'none'})")
            entry = existing or {"AliasArn": self._arn(record, alias), "Name": alias, "Description": ""}
            if version is not None:
                entry["FunctionVersion"] = version
            if description is not None:
                entry["Description"] = description
            entry["RevisionId"] = str(uuid.uuid4())
            record["Aliases"][alias] = entry
            _write_json(path, record)
        return copy.deepcopy(entry)

    def create_alias(self, function_name: str, alias: str, version: str, description: str = "") -> Dict[str, Any]:
        return self._alias(function_name, alias, version, description, create=True)

    def update_alias(self, function_name: str, alias: str, version: Optional[str] = None,
                     description: Optional[str] = None) -> Dict[str, Any]:
        return self._alias(function_name, alias, version, description, create=False)
