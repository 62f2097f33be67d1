"""A group's user Lambdas run as a core runs them (issue 12): from their deployment package, on their runtime's Python,
with the core's variables plus their own, pinned or on-demand, held to their MemorySize and Timeout, swapped by a
new deployment without a failed call.

Real processes throughout: the Lambdas are zips built here and unpacked, the runtime (`Runtime`, `GroupRuntime`) is
started in this process, and this test process calls the Lambdas over the real IPC with greengrasssdk 1.6.1, as
`ggic env` makes a process a Lambda of the runtime. Time windows come from durations measured in the run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

from conftest import free_port, process_running
from connector.core.deployments import DRAIN_GRACE_S, start_group_runtime
from connector.core.group_functions import GroupFunction, ResourceAccess
from connector.core.interpreters import resolve
from connector.core.runtime import Runtime, RuntimeConfig, RuntimeStartError, resource_variable

REGION = "us-west-2"
ACCOUNT = "000000000000"
RUNTIME = "python3.8"  # a Greengrass v1 Lambda runtime; not the Python running the tests
MEMORY_KB = 96 * 1024
GREENGRASS_SDK_PACKAGES = ("greengrasssdk", "greengrass_common", "greengrass_ipc_python_sdk")
OUTSIDE_VARIABLE = "GGIC_TEST_ONLY_IN_THE_RUNTIMES_ENVIRONMENT"

LAMBDA_SOURCE = '''
import os
import subprocess
import sys
import sys
import time

VERSION = {version!r}
CALLS = []  # module state: kept by a pinned function between invocations


def function_handler(event, context):
    CALLS.append(event.get("n"))
    action = event.get("action")
    while event.get("wait_for") and not os.path.exists(event["wait_for"]):  # the test says when to go on
        time.sleep(0.01)
    if action == "sleep":
        time.sleep(event["seconds"])
    elif action == "allocate":  # hold the memory until the runtime acts
        block = b"x" * (event["kb"] * 1024)
        time.sleep(event.get("hold", 60))
        del block
    elif action == "allocate_in_child":
        child = subprocess.Popen([sys.executable, "-c",
                                  "import time; block = b'x' * ({{}} * 1024); time.sleep(60)".format(event["kb"])])
        time.sleep(event.get("hold", 60))
        child.kill()
    return {{"version": VERSION, "pid": os.getpid(), "calls": list(CALLS), "environment": dict(os.environ),
            "function_version": context.function_version, "python": sys.version_info[:2]}}
'''

BROKEN_SOURCE = 'raise RuntimeError("no model at {version}")\n'


def arn(name: str, qualifier: Optional[str] = None) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}" + (f":{qualifier}" if qualifier else "")


def package(root: Path, name: str, version: str, source: str = LAMBDA_SOURCE) -> Path:
    """A Lambda deployment package (zip) built here, unpacked as the control plane unpacks a published version."""
    archive = root / f"{name}-{version}.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("lambda_function.py", source.format(version=version))
    code_dir = root / f"{name}-{version}"
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(code_dir)
    return code_dir


def function(root: Path, name: str, version: str = "1", qualifier: Optional[str] = None,
             source: str = LAMBDA_SOURCE, **configuration) -> GroupFunction:
    return GroupFunction(arn=arn(name, qualifier or version), version=version,
                         code_dir=package(root, name, version, source), runtime=RUNTIME,
                         handler="lambda_function.function_handler", **configuration)


def act_as_client(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process a Lambda of the runtime, as `eval "$(ggic env)"` does."""
    for key, value in runtime.client_environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", runtime.credentials.issue_client(runtime.client_arn()))


def forget_greengrass_sdk() -> None:
    """Drop greengrasssdk's modules, so that the next import reads this process's Lambda environment again."""
    for module in [m for m in sys.modules if m.split(".")[0] in GREENGRASS_SDK_PACKAGES]:
        del sys.modules[module]


def invoke(name: str, event: dict, qualifier: Optional[str] = None) -> Tuple[str, dict]:
    """Call a Lambda over IPC with greengrasssdk: (FunctionError, the answer's JSON)."""
    import greengrasssdk

    answer = greengrasssdk.client("lambda").invoke(FunctionName=arn(name, qualifier),
                                                    InvocationType="RequestResponse", Payload=json.dumps(event))
    payload = answer["Payload"]
    return answer.get("FunctionError", ""), json.loads(payload if isinstance(payload, bytes) else payload.read())


@contextlib.contextmanager
def calling_continuously(name: str, qualifier: str) -> Iterator[List[Tuple[str, dict]]]:
    """A client calling `name:qualifier` one call after another (event {"n": 1, 2, ...}) until the block ends:
    yields the list its answers go into, (FunctionError, answer) each."""
    answers: List[Tuple[str, dict]] = []
    stop = threading.Event()

    def call() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            answers.append(invoke(name, {"n": n}, qualifier=qualifier))

    caller = threading.Thread(target=call)
    caller.start()
    try:
        yield answers
    finally:
        stop.set()
        caller.join()


def succeeded(name: str, event: dict, qualifier: Optional[str] = None) -> dict:
    error, answer = invoke(name, event, qualifier)
    assert error == "", answer
    return answer


@pytest.fixture(scope="module")
def interpreter():
    try:
        return resolve(RUNTIME)
    except LookupError as exc:
        pytest.skip(f"no {RUNTIME} here: {exc}")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, interpreter):
    root = tmp_path_factory.mktemp("lambdas")
    # The Timeout under test: ample for the test to queue a call behind a stuck one, from a measured interpreter start
    began = time.monotonic()
    subprocess.run([interpreter.path, "-c", "import json, logging"], check=True)
    slow_timeout_s = float(max(2, round(20 * (time.monotonic() - began))))
    resource = root / "model"
    resource.mkdir()
    functions = [
        function(root, "settings", variables={"THINGNAME": "Thing-1", "LEVEL": "debug"},
                 resource_access=[ResourceAccess("model-resource", resource)]),
        function(root, "counter", "7", qualifier="live"),
        function(root, "sometimes", pinned=False),
        function(root, "hungry", memory_kb=MEMORY_KB),
        function(root, "slow", timeout_s=slow_timeout_s),
        function(root, "broken", pinned=False, source=BROKEN_SOURCE),
    ]
    config = RuntimeConfig(state_dir=tmp_path_factory.mktemp("state"), region=REGION, port=free_port(),
                           on_demand_idle_s=2.0, on_demand_max_processes=2)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(OUTSIDE_VARIABLE, "1")
        rt = Runtime(config, [], [], functions=functions)
        began = time.monotonic()
        rt.start()
        rt.start_s = time.monotonic() - began  # the pinned processes' start, all at once: a bound on one start
        rt.resource = resource
        rt.slow_timeout_s = slow_timeout_s
        act_as_client(rt, monkeypatch)
        forget_greengrass_sdk()  # it reads its endpoint and token at import: another test may have imported it
        try:
            yield rt
        finally:
            rt.stop()
            forget_greengrass_sdk()


def test_a_lambda_gets_the_cores_variables_and_its_own_only(runtime):
    answer = succeeded("settings", {})
    environment = answer["environment"]
    assert environment["THINGNAME"] == "Thing-1" and environment["LEVEL"] == "debug"  # Environment.Variables
    assert environment["MY_FUNCTION_ARN"] == arn("settings", "1")
    assert answer["function_version"] == "1"
    assert environment["AWS_REGION"] == REGION and environment["GGC_MAX_INTERFACE_VERSION"]
    assert environment["AWS_CONTAINER_AUTHORIZATION_TOKEN"] and environment["GG_DAEMON_PORT"]
    assert environment[resource_variable("model-resource")] == str(runtime.resource)
    assert OUTSIDE_VARIABLE not in environment and "VIRTUAL_ENV" not in environment  # not the runtime's own
    assert tuple(answer["python"]) == (3, 8)  # its runtime's interpreter


def test_a_pinned_lambda_keeps_its_module_state_and_its_order(runtime):
    first = succeeded("counter", {"n": 0}, qualifier="live")
    with ThreadPoolExecutor(4) as pool:  # queued together: one process takes them one after the other
        answers = list(pool.map(lambda n: succeeded("counter", {"n": n}), range(1, 5)))
    pids = {first["pid"]} | {answer["pid"] for answer in answers}
    assert len(pids) == 1
    final = max((answer["calls"] for answer in answers), key=len)
    assert final[0] == 0 and sorted(final) == [0, 1, 2, 3, 4]
    assert runtime.functions[arn("counter")].pid == first["pid"]


def test_an_on_demand_lambda_runs_overlapping_calls_in_two_processes_and_stops_idle_ones(runtime):
    pool = runtime.functions[arn("sometimes")]
    assert pool.pids == []  # nothing runs before an invocation
    began = time.monotonic()
    cold = succeeded("sometimes", {"n": 1})
    cold_s = time.monotonic() - began  # a process's start plus one call
    hold = max(1.0, 3 * cold_s)
    began = time.monotonic()
    with ThreadPoolExecutor(3) as executor:
        calls = [executor.submit(succeeded, "sometimes", {"action": "sleep", "seconds": hold}) for _ in range(3)]
        answers = [call.result() for call in calls]
    took = time.monotonic() - began
    pids = {answer["pid"] for answer in answers}
    assert len(pids) == 2, answers  # overlapping invocations: two processes at once, the bound (2 here)
    assert took >= 2 * hold  # the third waited for one of them
    # Idle processes are stopped after on_demand_idle_s.
    deadline = time.monotonic() + runtime.config.on_demand_idle_s * 2 + 2 * cold_s + 1.0
    while pool.pids and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pool.pids == []
    assert not any(process_running(pid) for pid in pids | {cold["pid"]})
    # And the next call starts one again.
    assert succeeded("sometimes", {"n": 2})["pid"] not in pids


def wait_until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time measured for it"
        time.sleep(0.01)


@pytest.mark.parametrize("action", ["allocate", "allocate_in_child"])
def test_over_its_memory_size_only_that_call_fails_and_the_function_is_replaced(runtime, action, tmp_path):
    before = succeeded("hungry", {})
    queue = runtime.functions[arn("hungry")].queue
    go = tmp_path / "go"
    with ThreadPoolExecutor(3) as executor:
        breach = executor.submit(invoke, "hungry", {"action": action, "kb": 2 * MEMORY_KB, "wait_for": str(go)})
        wait_until(lambda: queue.in_flight == 1, runtime.start_s + 5)
        queued = [executor.submit(succeeded, "hungry", {"n": n}) for n in (1, 2)]
        wait_until(lambda: len(queue) == 2, runtime.start_s + 5)  # queued behind it
        go.touch()  # now it allocates
        error, answer = breach.result()
        after = [call.result() for call in queued]
    assert error == "Unhandled"
    assert f"over its MemorySize of {MEMORY_KB} KB" in answer["errorMessage"], answer
    used = int(answer["errorMessage"].split(" used ")[1].split(" KB")[0])
    assert used > MEMORY_KB
    assert {a["pid"] for a in after} != {before["pid"]} and len({a["pid"] for a in after}) == 1  # replaced
    assert not process_running(before["pid"])


def test_past_its_timeout_only_that_call_fails_and_the_function_is_replaced(runtime):
    before = succeeded("slow", {})
    queue = runtime.functions[arn("slow")].queue
    with ThreadPoolExecutor(2) as executor:
        stuck = executor.submit(invoke, "slow", {"action": "sleep", "seconds": 3600})
        wait_until(lambda: queue.in_flight == 1, runtime.start_s + 5)
        queued = executor.submit(succeeded, "slow", {"n": 1})  # waits in the queue: that is not its run time
        wait_until(lambda: len(queue) == 1 or stuck.done(), runtime.start_s + 5)
        assert not stuck.done()  # it was queued behind the stuck one
        error, answer = stuck.result()
        after = queued.result()
    assert error == "Unhandled" and f"timed out after {runtime.slow_timeout_s:g} s" in answer["errorMessage"], answer
    assert after["pid"] != before["pid"] and after["calls"] == [1]  # a fresh process took the queued one
    assert not process_running(before["pid"])


def test_an_on_demand_lambda_that_cannot_start_fails_the_call_it_was_started_for(runtime):
    for _ in range(2):  # each call gets the reason; nothing is left waiting
        error, answer = invoke("broken", {})
        assert error == "Unhandled"
        assert "failed to initialize" in answer["errorMessage"] and "no model at 1" in answer["errorMessage"], answer
    assert runtime.functions[arn("broken")].pids == []


def test_a_pinned_lambda_that_cannot_start_fails_the_start_naming_it(tmp_path, interpreter):
    config = RuntimeConfig(state_dir=tmp_path / "state", region=REGION, port=free_port())
    runtime = Runtime(config, [], [], functions=[function(tmp_path, "broken", source=BROKEN_SOURCE)])
    with pytest.raises(RuntimeStartError, match=r"pinned Lambda function .*:function:broken:1 failed to start: "
                                                 r".*no model at 1"):
        runtime.start()


def test_ggic_run_sets_the_on_demand_options(tmp_path):
    from connector.control.cli import build_parser
    from connector.control.cli.running import runtime_config

    args = build_parser().parse_args(["run", "--state-dir", str(tmp_path), "--on-demand-idle", "0.5",
                                      "--on-demand-max-processes", "3"])
    config = runtime_config(args, REGION)
    assert (config.on_demand_idle_s, config.on_demand_max_processes) == (0.5, 3)
    defaults = runtime_config(build_parser().parse_args(["run", "--state-dir", str(tmp_path)]), REGION)
    assert (defaults.on_demand_idle_s, defaults.on_demand_max_processes) == (60.0, 25)


def test_what_cannot_run_here_is_refused_naming_it(tmp_path, interpreter):
    config = RuntimeConfig(state_dir=tmp_path / "state", region=REGION, port=free_port())
    missing = tmp_path / "no-such-model"
    cases = [
        (function(tmp_path, "reader", resource_access=[ResourceAccess("model-resource", missing)]),
         f"resource model-resource is at {missing}, which does not exist"),
        (function(tmp_path, "native", executable="/opt/app/run"), "Executable '/opt/app/run' cannot run here"),
        (GroupFunction(arn=arn("old", "1"), version="1", code_dir=tmp_path, runtime="python3.6",
                       handler="x.function_handler"), "runtime python3.6 is not supported"),
    ]
    for group_function, message in cases:
        with pytest.raises(RuntimeStartError, match=message.replace("(", r"\(").replace(".", r"\.")):
            Runtime(config, [], [], functions=[group_function])


# --- a new deployment swaps a Lambda's code while a client calls ------------------------------------------------

class FileDeployments:
    """A DeploymentSource over a folder of deployment files (`<n>.json`, each naming its functions), the way the
    control plane's LocalDeployments keeps them: a test input for GroupRuntime, not a copy of the control plane."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.reports: List[Tuple[str, str, str]] = []

    def add(self, number: int, functions: List[GroupFunction]) -> None:
        record = {"GroupId": "group", "GroupVersionId": f"v{number}", "DeploymentId": f"deployment-{number}",
                  "DeploymentStatus": "InProgress", "Number": number,
                  "Functions": [{**vars(f), "code_dir": str(f.code_dir)} for f in functions]}
        temporary = self.folder / f"{number}.json.tmp"
        temporary.write_text(json.dumps(record))
        temporary.rename(self.folder / f"{number}.json")

    def _all(self) -> List[dict]:
        return sorted((json.loads(path.read_text()) for path in self.folder.glob("*.json")),
                      key=lambda record: record["Number"])

    def current(self) -> Optional[dict]:
        records = self._all()
        return records[0] if records else None

    def pending(self, after: dict) -> Optional[dict]:
        later = [record for record in self._all() if record["Number"] > after["Number"]]
        return later[0] if later else None

    def connectors(self, deployment: dict) -> list:
        return []

    def subscriptions(self, deployment: dict) -> list:
        return []

    def functions(self, deployment: dict) -> List[GroupFunction]:
        return [GroupFunction(**{**entry, "code_dir": Path(entry["code_dir"])}) for entry in deployment["Functions"]]

    def report(self, deployment: dict, status: str, message: str = "") -> None:
        self.reports.append((deployment["DeploymentId"], status, message))


def test_an_alias_moved_to_a_new_version_is_swapped_without_a_failed_call(tmp_path, interpreter, monkeypatch):
    source = FileDeployments(tmp_path)
    source.add(1, [function(tmp_path, "classify", "1", qualifier="prod")])
    config = RuntimeConfig(state_dir=tmp_path / "state", region=REGION, port=free_port())
    runtime = start_group_runtime(config, source, [])
    try:
        act_as_client(runtime, monkeypatch)
        forget_greengrass_sdk()
        with calling_continuously("classify", "prod") as answers:
            while len(answers) < 5:
                time.sleep(0.05)
            began = time.monotonic()
            source.add(2, [function(tmp_path, "classify", "2", qualifier="prod")])  # the alias moved to version 2
            while runtime.deployment["DeploymentId"] != "deployment-2" and time.monotonic() - began < 120:
                time.sleep(0.05)
            swap_s = time.monotonic() - began
            count = len(answers)
            while len(answers) < count + 5 and time.monotonic() - began < swap_s * 3 + 10:
                time.sleep(0.05)
        assert ("deployment-2", "Success", "") in source.reports
        failures = [answer for error, answer in answers if error]
        assert failures == []
        versions = [answer["version"] for _, answer in answers]
        assert versions[0] == "1" and versions[-1] == "2"
        switch = versions.index("2")
        assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
        assert answers[-1][1]["environment"]["MY_FUNCTION_ARN"] == arn("classify", "2")
        old = answers[0][1]["pid"]
        deadline = time.monotonic() + swap_s * 3 + DRAIN_GRACE_S + 5
        while process_running(old) and time.monotonic() < deadline:  # the old generation drained and stopped
            time.sleep(0.05)
        assert not process_running(old)
    finally:
        runtime.stop()
        forget_greengrass_sdk()
