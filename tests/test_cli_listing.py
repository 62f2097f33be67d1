"""`ggic` the way an AWS CLI user expects it, without a runtime: `--version`, `list-*` / `get-*` in the Greengrass
API's shapes, `--output json|text|table`, duplicate names, and a closed pipe. Real `ggic` processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from test_cli import DEFINITION

import connector
from bench.harness import GGIC, ggic
from bench.material import REPO
from connector.control.cli.output import format_table, format_text

JOB = "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyImageClassifier"
PUBLISHER = "arn:aws:lambda:us-west-2:000000000000:function:publisher"
# One valid InitialVersion per definition kind ggic stores.
VERSIONS = {
    "connector": json.loads(DEFINITION),
    "resource": {"Resources": [{"Id": "my-ml-resource", "Name": "classifier", "ResourceDataContainer": {
        "SageMakerMachineLearningModelResourceData": {"DestinationPath": "/ml/model", "SageMakerJobArn": JOB}}}]},
    "subscription": {"Subscriptions": [{"Id": "up", "Source": PUBLISHER, "Subject": "out/#", "Target": "cloud"}]},
}
# The Greengrass API's shapes (botocore's service model): DefinitionInformation, VersionInformation, GroupInformation.
DEFINITION_KEYS = {"Arn", "CreationTimestamp", "Id", "LastUpdatedTimestamp", "LatestVersion", "LatestVersionArn",
                   "Name"}
VERSION_KEYS = {"Arn", "CreationTimestamp", "Id", "Version"}
DEPLOYMENT_KEYS = {"CreatedAt", "DeploymentArn", "DeploymentId", "DeploymentType", "GroupArn"}


class CLI:
    """`ggic` commands in one state directory; `json_of` parses a command's JSON answer."""

    def __init__(self, state_dir) -> None:
        self.state_dir = state_dir

    def __call__(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
        result = ggic(*args, "--state-dir", str(self.state_dir))
        assert result.returncode == expect, result.stderr.decode()
        return result

    def json_of(self, *args: str) -> dict:
        return json.loads(self(*args).stdout)


def test_version_is_the_package_version_in_the_aws_cli_layout():
    result = ggic("--version")
    assert result.returncode == 0, result.stderr.decode()
    match = re.fullmatch(r"ggic/(\S+) Python/(\S+) (\S+)/(\S+)\n", result.stdout.decode())
    assert match, result.stdout
    assert match.group(1) == connector.__version__
    assert match.group(2) == ".".join(map(str, sys.version_info[:3]))
    packaged = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    assert packaged.stdout.strip().splitlines()[-1] == connector.__version__  # setup.py reads the same one


@pytest.mark.parametrize("kind", sorted(VERSIONS))
def test_definitions_are_listed_and_got_in_the_api_shapes(tmp_path, kind):
    cli = CLI(tmp_path)
    created = cli.json_of(f"create-{kind}-definition", "--name", f"my-{kind}s", "--initial-version",
                          json.dumps(VERSIONS[kind]), "--tags", '{"line": "1"}')
    definitions = cli.json_of(f"list-{kind}-definitions")["Definitions"]
    assert [d["Id"] for d in definitions] == [created["Id"]]
    assert set(definitions[0]) == DEFINITION_KEYS | {"Tags"} and definitions[0]["Tags"] == {"line": "1"}
    for id_or_name in (created["Id"], f"my-{kind}s"):
        got = cli.json_of(f"get-{kind}-definition", f"--{kind}-definition-id", id_or_name)
        assert got == dict(created, tags={"line": "1"})
    versions = cli.json_of(f"list-{kind}-definition-versions", f"--{kind}-definition-id", created["Id"])
    assert versions == {"Versions": [{"Arn": created["LatestVersionArn"], "CreationTimestamp":
                                      created["CreationTimestamp"], "Id": created["Id"],
                                      "Version": created["LatestVersion"]}]}
    version = cli.json_of(f"get-{kind}-definition-version", f"--{kind}-definition-id", created["Id"],
                          f"--{kind}-definition-version-id", created["LatestVersion"])
    assert set(version) == VERSION_KEYS | {"Definition"} and version["Arn"] == created["LatestVersionArn"]
    stored = json.loads((tmp_path / "definitions" / f"{kind}s" / f"{created['Id']}.json").read_text())["Version"]
    assert version["Definition"] == stored
    assert list(version["Definition"]) == list(VERSIONS[kind])  # Connectors, Resources or Subscriptions
    missing = cli(f"get-{kind}-definition-version", f"--{kind}-definition-id", created["Id"],
                  f"--{kind}-definition-version-id", "no-such-version", expect=1)
    assert f"has no version 'no-such-version' (its version: {created['LatestVersion']})" in missing.stderr.decode()
    unknown = cli(f"get-{kind}-definition", f"--{kind}-definition-id", "nobody", expect=1)
    assert f"no {kind} definition 'nobody'" in unknown.stderr.decode() and created["Id"] in unknown.stderr.decode()


def test_groups_versions_and_deployments_are_listed_in_the_api_shapes(tmp_path):
    cli = CLI(tmp_path)
    assert cli.json_of("list-groups") == {"Groups": []}
    subscriptions = cli.json_of("create-subscription-definition", "--initial-version",
                                json.dumps(VERSIONS["subscription"]))
    first = {"SubscriptionDefinitionVersionArn": subscriptions["LatestVersionArn"]}
    group = cli.json_of("create-group", "--name", "line-1", "--initial-version", json.dumps(first))
    second = cli.json_of("create-group-version", "--group-id", "line-1", "--subscription-definition-version-arn",
                         subscriptions["LatestVersionArn"])
    groups = cli.json_of("list-groups")["Groups"]
    assert [g["Id"] for g in groups] == [group["Id"]]
    assert set(groups[0]) == DEFINITION_KEYS and groups[0]["LatestVersion"] == second["Version"]
    assert cli.json_of("get-group", "--group-id", "line-1") == groups[0]
    versions = cli.json_of("list-group-versions", "--group-id", group["Id"])["Versions"]
    assert [v["Version"] for v in versions] == [group["LatestVersion"], second["Version"]]
    assert all(set(v) == VERSION_KEYS and v["Id"] == group["Id"] for v in versions)
    version = cli.json_of("get-group-version", "--group-id", group["Id"], "--group-version-id", versions[0]["Version"])
    assert version == dict(versions[0], Definition=first)
    cli("get-group-version", "--group-id", group["Id"], "--group-version-id", "nope", expect=1)

    assert cli.json_of("list-deployments", "--group-id", "line-1") == {"Deployments": []}
    deployment = cli.json_of("create-deployment", "--group-id", "line-1", "--deployment-type", "NewDeployment")
    deployments = cli.json_of("list-deployments", "--group-id", "line-1")["Deployments"]
    assert [d["DeploymentId"] for d in deployments] == [deployment["DeploymentId"]]
    assert set(deployments[0]) == DEPLOYMENT_KEYS and deployments[0]["GroupArn"] == group["Arn"]
    assert deployments[0]["DeploymentType"] == "NewDeployment"
    status = cli("get-deployment-status", "--group-id", "line-1", "--deployment-id", deployment["DeploymentId"],
                 "--output", "text").stdout.decode()
    assert status.startswith("InProgress\tNewDeployment\t\t")  # sorted keys; no ErrorDetails lines


def test_text_output_follows_the_aws_cli_rules():
    response = {"Name": "g", "Id": "1", "Versions": [{"Version": "a", "Arn": "x"}, {"Version": "b", "Extra": True}],
                "Definition": {"Key": "v", "Tags": ["t1", "t2"]}}
    assert format_text(response).splitlines() == [
        "1\tg",                      # the object's scalars, by sorted key
        "DEFINITION\tv",             # a nested object: its key in upper case, then its scalars
        "TAGS\tt1", "TAGS\tt2",      # a list of scalars under a key: one line each
        "VERSIONS\tx\t\ta",          # a list of objects: the union of their scalar keys (Arn, Extra, Version)
        "VERSIONS\t\tTrue\tb",
    ]


def test_table_output_follows_the_aws_cli_rules():
    response = {"Groups": [{"Id": "1", "Name": "first"}, {"Id": "22", "Name": "second"}], "NextToken": "t"}
    # Worked by hand from the rules: the widest section sets the width (20), columns scaled to fill it, headers
    # centred, values two spaces in, a single scalar key as a key/value row, a nested list indented by one `|`.
    assert format_table("ListGroups", response, 80) == "\n".join([
        "--------------------",
        "|    ListGroups    |",
        "+------------+-----+",
        "|  NextToken |  t  |",
        "+------------+-----+",
        "||     Groups     ||",
        "|+-----+----------+|",
        "|| Id  |  Name    ||",
        "|+-----+----------+|",
        "||  1  |  first   ||",
        "||  22 |  second  ||",
        "|+-----+----------+|",
]) + "\n"


def test_table_output_fits_the_terminal_by_turning_single_rows_into_key_value_rows():
    row = {"Arn": "arn:aws:greengrass:us-east-1:000000000000:/greengrass/groups/" + "0" * 36, "Id": "0" * 36}
    wide = format_table("GetGroup", row, 200).splitlines()  # title, rule, headers, rule, the row, rule
    assert len(wide) == 7 and wide[3].split() == ["|", "Arn", "|", "Id", "|"]
    assert wide[5].split() == ["|", row["Arn"], "|", row["Id"], "|"]
    narrow = format_table("GetGroup", row, 80).splitlines()  # title, rule, a row per key, rule
    assert len(narrow) == 6
    assert narrow[3].startswith(f"|  Arn|  {row['Arn']} ") and narrow[4].startswith(f"|  Id |  {row['Id']} ")
    assert len(narrow[0]) < len(wide[0])
    assert len({len(line) for line in narrow}) == 1  # every line as wide as the table


def test_every_listing_takes_output_text_and_table(tmp_path):
    cli = CLI(tmp_path)
    created = cli.json_of("create-connector-definition", "--name", "c", "--initial-version", DEFINITION,
                          "--output", "json")
    text = cli("create-connector-definition", "--name", "d", "--initial-version", DEFINITION, "--output", "text")
    fields = text.stdout.decode().rstrip("\n").split("\t")
    assert len(fields) == 7 and fields[-1] == "d"  # Arn ... Name, sorted by key, on one line
    lines = cli("list-connector-definitions", "--output", "text").stdout.decode().splitlines()
    assert [line.split("\t")[:1] + line.split("\t")[3:4] for line in lines] == [
        ["DEFINITIONS", created["Id"]], ["DEFINITIONS", fields[2]]]
    table = cli("list-connector-definitions", "--output", "table").stdout.decode().splitlines()
    assert table[0] == "-" * len(table[0]) and "ListConnectorDefinitions" in table[1]
    assert len({len(line) for line in table}) == 1
    assert sum(created["Id"] in line for line in table) == 1 and sum(fields[2] in line for line in table) == 1
    result = cli("list-groups", "--output", "yaml", expect=2)
    assert "invalid choice: 'yaml'" in result.stderr.decode()


def test_duplicate_names_are_warned_about_and_the_choice_is_said(tmp_path):
    cli = CLI(tmp_path)
    first = cli.json_of("create-connector-definition", "--name", "same", "--initial-version", DEFINITION)
    second_run = cli("create-connector-definition", "--name", "same", "--initial-version", DEFINITION)
    second = json.loads(second_run.stdout)
    assert second["Id"] != first["Id"]  # the API allows it: both are stored
    assert f"warning: a connector definition named 'same' already exists (Id {first['Id']})" in \
        second_run.stderr.decode()
    by_name = cli("get-connector-definition", "--connector-definition-id", "same")
    assert json.loads(by_name.stdout)["Id"] == second["Id"]
    said = by_name.stderr.decode()
    assert f"2 connector definitions are named 'same': using the newest, {second['Id']}" in said
    assert first["Id"] in said
    by_id = cli("get-connector-definition", "--connector-definition-id", first["Id"])
    assert json.loads(by_id.stdout)["Id"] == first["Id"] and by_id.stderr == b""

    group = cli.json_of("create-group", "--name", "line")
    again = cli("create-group", "--name", "line")
    assert f"warning: a group named 'line' already exists (Id {group['Id']})" in again.stderr.decode()
    picked = cli("list-group-versions", "--group-id", "line")
    assert f"2 groups are named 'line': using the newest, {json.loads(again.stdout)['Id']}" in \
        picked.stderr.decode()
    once = cli("create-group", "--name", "unique")
    assert b"warning" not in once.stderr
    # `ggic run` says which one it picked before anything else (these then fail for reasons of their own:
    # the documentation's ARMv7 connector on this machine, a group with no deployment).
    for args, kind in ((["--connector-definition", "same"], "connector definitions"), (["--group", "line"], "groups")):
        run = cli("run", *args, "--port", "0", expect=1)
        assert f"warning: 2 {kind} are named" in run.stderr.decode().splitlines()[0]


def test_a_closed_pipe_ends_the_output_quietly(tmp_path):
    CLI(tmp_path)("create-connector-definition", "--name", "c", "--initial-version", DEFINITION)
    for output in ("json", "text", "table"):
        # The reader is gone before ggic writes (what `| head -1` does to a longer output).
        process = subprocess.Popen(GGIC + ["list-connector-definitions", "--state-dir", str(tmp_path), "--output",
                                           output], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(60) == 141, stderr  # as a program killed by SIGPIPE
        assert stderr == ""


def test_a_deployment_goes_on_when_its_answer_meets_a_closed_pipe(tmp_path):
    cli = CLI(tmp_path)
    subscriptions = cli.json_of("create-subscription-definition", "--initial-version",
                                json.dumps(VERSIONS["subscription"]))
    cli("create-group", "--name", "g", "--initial-version",
        json.dumps({"SubscriptionDefinitionVersionArn": subscriptions["LatestVersionArn"]}))
    process = subprocess.Popen(GGIC + ["create-deployment", "--state-dir", str(tmp_path), "--group-id", "g",
                                       "--deployment-type", "NewDeployment"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(60) == 0 and "Traceback" not in stderr
    (deployment,) = cli.json_of("list-deployments", "--group-id", "g")["Deployments"]
    status = cli.json_of("get-deployment-status", "--group-id", "g", "--deployment-id", deployment["DeploymentId"])
    assert status["DeploymentStatus"] == "InProgress"  # recorded and its (no) models in place, not left Building
