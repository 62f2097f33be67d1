"""Lambda functions the AWS CLI's way: `ggic create-function`, `publish-version`, `create-alias` / `update-alias`,
`update-function-code`, `get-function`, `list-functions`, `list-versions-by-function`, `list-aliases`, in the shapes
of `aws lambda`; published versions immutable, hostile packages refused. Real `ggic` processes, real zips."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path
from typing import Dict

import pytest

from bench.harness import ggic

# FunctionConfiguration's members ggic answers (botocore's lambda model names them).
CONFIGURATION_KEYS = {"FunctionName", "FunctionArn", "Runtime", "Role", "Handler", "CodeSize", "Description",
                      "Timeout", "MemorySize", "LastModified", "CodeSha256", "Version", "RevisionId", "State",
                      "LastUpdateStatus", "PackageType"}


def package(files: Dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def write_package(folder: Path, name: str, files: Dict[str, str]) -> Path:
    path = folder / name
    path.write_bytes(package(files))
    return path


class Lambda:
    """`ggic` Lambda commands in one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def __call__(self, *args: str, expect: int = 0):
        result = ggic(*args, "--state-dir", str(self.state_dir))
        self.stderr = result.stderr.decode()
        assert result.returncode == expect, self.stderr
        return json.loads(result.stdout) if expect == 0 and result.stdout.strip() else None

    def error(self, *args: str) -> str:
        """A command AWS Lambda would refuse: the error's code and message as the AWS CLI prints them."""
        self(*args, expect=254)
        assert self.stderr.startswith("An error occurred ("), self.stderr
        return self.stderr


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_functions_are_created_published_aliased_updated_and_listed_in_the_aws_lambda_shapes(tmp_path):
    cli = Lambda(tmp_path / "state")
    first = write_package(tmp_path, "v1.zip", {"app.py": "def handler(event, context):\n    return 1\n"})
    created = cli("create-function", "--function-name", "app", "--runtime", "python3.8", "--handler", "app.handler",
                  "--zip-file", f"fileb://{first}", "--environment", "Variables={THINGNAME=pi,STAGE=test}",
                  "--timeout", "7", "--memory-size", "256", "--region", "us-west-2")
    assert set(created) == CONFIGURATION_KEYS | {"Environment"}
    assert created["FunctionArn"] == "arn:aws:lambda:us-west-2:000000000000:function:app"
    assert created["Version"] == "$LATEST" and created["Timeout"] == 7 and created["MemorySize"] == 256
    assert created["CodeSha256"] == sha256_b64(first.read_bytes()) and created["CodeSize"] == first.stat().st_size
    assert created["Environment"] == {"Variables": {"THINGNAME": "pi", "STAGE": "test"}}

    one = cli("publish-version", "--function-name", "app", "--description", "first")
    assert (one["Version"], one["FunctionArn"]) == ("1", created["FunctionArn"] + ":1")
    assert cli("publish-version", "--function-name", "app")["Version"] == "1"  # nothing changed: the same version

    second = write_package(tmp_path, "v2.zip", {"app.py": "def handler(event, context):\n    return 2\n"})
    updated = cli("update-function-code", "--function-name", "app", "--zip-file", f"fileb://{second}")
    assert updated["Version"] == "$LATEST" and updated["CodeSha256"] == sha256_b64(second.read_bytes())
    two = cli("publish-version", "--function-name", created["FunctionArn"])
    assert two["Version"] == "2"

    alias = cli("create-alias", "--function-name", "app", "--name", "prod", "--function-version", "1")
    assert alias["AliasArn"] == created["FunctionArn"] + ":prod" and alias["FunctionVersion"] == "1"
    got = cli("get-function", "--function-name", "app:prod")
    assert got["Configuration"]["Version"] == "1" and got["Configuration"]["CodeSha256"] == one["CodeSha256"]
    location = Path(got["Code"]["Location"][len("file://"):])
    assert location.read_bytes() == first.read_bytes()  # the package as given, kept
    cli("update-alias", "--function-name", "app", "--name", "prod", "--function-version", "2")
    assert cli("get-function", "--function-name", "app", "--qualifier", "prod")["Configuration"]["Version"] == "2"

    # Version 1 is immutable: its configuration and its unpacked code are what was published.
    assert cli("get-function-configuration", "--function-name", "app:1")["CodeSha256"] == one["CodeSha256"]
    code_dir = tmp_path / "state" / "lambda" / "code" / base64.b64decode(one["CodeSha256"]).hex()
    assert (code_dir / "app.py").read_text().endswith("return 1\n")
    refused = cli.error("update-function-code", "--function-name", "app:1", "--zip-file", f"fileb://{second}")
    assert "(InvalidParameterValueException)" in refused and "version 1 is immutable" in refused

    versions = cli("list-versions-by-function", "--function-name", "app")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    assert [a["Name"] for a in cli("list-aliases", "--function-name", "app")["Aliases"]] == ["prod"]
    (listed,) = cli("list-functions")["Functions"]
    assert listed["FunctionName"] == "app" and listed["Version"] == "$LATEST"
    text = ggic("list-functions", "--state-dir", str(tmp_path / "state"), "--output", "text").stdout.decode()
    assert text.startswith("FUNCTIONS\t") and "\tapp\tapp.handler\t" in text


def test_errors_are_aws_lambdas_and_name_what_was_wrong(tmp_path):
    cli = Lambda(tmp_path / "state")
    zipped = write_package(tmp_path, "app.zip", {"app.py": "def handler(event, context):\n    pass\n"})
    create = ("create-function", "--function-name", "app", "--runtime", "python3.7", "--handler", "app.handler",
              "--zip-file", f"fileb://{zipped}")
    cli(*create)
    assert "(ResourceConflictException) when calling the CreateFunction operation: Function already exist: app" \
        in cli.error(*create)
    missing = cli.error("get-function", "--function-name", "nothere")
    assert "(ResourceNotFoundException)" in missing and "nothere" in missing and "known: app" in missing
    assert "has no alias 'live'" in cli.error("get-function", "--function-name", "app:live")
    no_version = cli.error("create-alias", "--function-name", "app", "--name", "live", "--function-version", "4")
    assert "(ResourceNotFoundException)" in no_version and "app:4" in no_version
    runtime = cli.error("create-function", "--function-name", "other", "--runtime", "cobol", "--handler", "a.b",
                        "--zip-file", f"fileb://{zipped}")
    assert "(InvalidParameterValueException)" in runtime and "'cobol'" in runtime
    variable = cli.error("create-function", "--function-name", "other", "--runtime", "python3.8", "--handler", "a.b",
                         "--zip-file", f"fileb://{zipped}", "--environment", '{"Variables": {"1BAD": "x"}}')
    assert "'1BAD'" in variable
    cli("publish-version", "--function-name", "app")
    cli("create-alias", "--function-name", "app", "--name", "live", "--function-version", "1")
    assert "(ResourceConflictException)" in cli.error("create-alias", "--function-name", "app", "--name", "live",
                                                      "--function-version", "1")
    too_large = tmp_path / "large.zip"
    with open(too_large, "wb") as sparse:
        sparse.truncate(50 * 1024 * 1024 + 1)  # one byte over what AWS Lambda takes directly
    assert "(RequestTooLargeException)" in cli.error("update-function-code", "--function-name", "app",
                                                     "--zip-file", f"fileb://{too_large}")
    # A Python handler its package does not hold is stored (as Lambda does), with a warning now.
    cli("create-function", "--function-name", "typo", "--runtime", "python3.8", "--handler", "ap.handler",
        "--zip-file", f"fileb://{zipped}")
    assert "handler 'ap.handler': the package has no module 'ap'" in cli.stderr


def hostile(kind: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    pass\n")
        if kind == "absolute":
            archive.writestr("/tmp/ggic-escaped.py", "x = 1\n")
        elif kind == "parent":
            archive.writestr("../escaped.py", "x = 1\n")
        elif kind == "link":
            info = zipfile.ZipInfo("link.py")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
        elif kind == "bomb":  # 64 MB of zeros in a few dozen KB: past the compression ratio a package may have
            archive.writestr(zipfile.ZipInfo("zeros.bin"), bytes(64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["absolute", "parent", "link", "bomb", "not-a-zip"])
def test_hostile_packages_are_refused_and_leave_nothing(tmp_path, kind):
    cli = Lambda(tmp_path / "state")
    zipped = tmp_path / "pkg.zip"
    zipped.write_bytes(b"#!/bin/sh\necho not a zip\n" if kind == "not-a-zip" else hostile(kind))
    refused = cli.error("create-function", "--function-name", "app", "--runtime", "python3.8", "--handler",
                        "app.handler", "--zip-file", f"fileb://{zipped}")
    assert "(InvalidParameterValueException) when calling the CreateFunction operation: Could not unzip" in refused
    if kind != "not-a-zip":
        assert {"absolute": "/tmp/ggic-escaped.py", "parent": "../escaped.py", "link": "link.py",
                "bomb": "zeros.bin"}[kind] in refused
    lambda_dir = tmp_path / "state" / "lambda"
    assert list((lambda_dir / "code").iterdir()) == [] and list((lambda_dir / "packages").iterdir()) == []
    assert list((lambda_dir / "functions").iterdir()) == []
    assert not (tmp_path / "escaped.py").exists() and not Path("/tmp/ggic-escaped.py").exists()
