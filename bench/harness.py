"""Start the real `ggic` runtime as a process, the way a user does, and talk to it over its real IPC (the tests and
the benchmarks both use it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
GGIC = [sys.executable, "-m", "connector.control.cli"]
START_TIMEOUT_S = 120.0


def connector_entry(model_dir: Path, service_name: str = "imageClassification", version: int = 2,
                    platform: str = "x86-64", connector_id: str = "MyImageClassificationConnector",
                    job_arn: str = "arn:aws:sagemaker:us-west-2:123456789012:training-job/MyImageClassifier",
                    **extra: str) -> dict:
    parameters = {
        "MLModelDestinationPath": str(model_dir),
        "MLModelResourceId": "my-ml-resource",
        "MLModelSageMakerJobArn": job_arn,
        "LocalInferenceServiceName": service_name,
        "LocalInferenceServiceTimeoutSeconds": "10",
        "LocalInferenceServiceMemoryLimitKB": "500000",
    }
    parameters.update(extra)
    return {"Id": connector_id,
            "ConnectorArn": f"arn:aws:greengrass:us-west-2::/connectors/ImageClassification{platform}/versions/{version}",
            "Parameters": parameters}


def ggic(*args: str, env: Optional[Dict[str, str]] = None, input: Optional[bytes] = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(GGIC + list(args), cwd=REPO, env=env, input=input, capture_output=True, timeout=timeout)


class GGICRuntime:
    """`ggic create-connector-definition` + `ggic run` in a private state directory.

    The runtime's environment is `base_env` (default: this process's) plus `extra_env`; a caller that has not
    cleaned its own environment (bench/load.py) passes a cleaned one. `subscriptions` (a subscription definition
    version's list) goes through `ggic create-subscription-definition`; `mqtt_broker` is `--mqtt-broker`, with a
    client id of this runtime's own (several runtimes may share a broker).
    """

    def __init__(self, state_dir: Path, connectors: List[dict], lambdas: List[str] = (),
                 extra_env: Optional[Dict[str, str]] = None,
                 base_env: Optional[Mapping[str, str]] = None, run_args: List[str] = (),
                 subscriptions: Optional[List[dict]] = None, mqtt_broker: Optional[Tuple[str, int]] = None) -> None:
        self.state_dir = state_dir
        self.subscriptions = subscriptions
        self.mqtt_broker = mqtt_broker
        self.run_args = list(run_args)
        self.connectors = connectors
        self.lambdas = list(lambdas)
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.base_env.update(extra_env or {})
        self.process: Optional[subprocess.Popen] = None
        self.output_path = state_dir / "ggic-run.out"

    def create_definition(self) -> dict:
        result = ggic("create-connector-definition", "--state-dir", str(self.state_dir), "--name", "tests",
                      "--initial-version", json.dumps({"Connectors": self.connectors}), env=self.base_env)
        assert result.returncode == 0, result.stderr.decode()
        return json.loads(result.stdout)

    def start(self, expect_ready: bool = True) -> "GGICRuntime":
        args = ["run", "--state-dir", str(self.state_dir), "--port", "0", *self.run_args]
        if self.connectors:
            args += ["--connector-definition", self.create_definition()["Id"]]
        for target in self.lambdas:
            args += ["--lambda", target]
        if self.subscriptions is not None:
            result = ggic("create-subscription-definition", "--state-dir", str(self.state_dir), "--initial-version",
                          json.dumps({"Subscriptions": self.subscriptions}), env=self.base_env)
            assert result.returncode == 0, result.stderr.decode()
            args += ["--subscription-definition", json.loads(result.stdout)["Id"]]
        if self.mqtt_broker is not None:
            args += ["--mqtt-broker", "%s:%d" % self.mqtt_broker,
                     "--mqtt-client-id", f"ggic-test-{uuid.uuid4().hex[:12]}"]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_path, "wb") as out:
            self.process = subprocess.Popen(GGIC + args, cwd=REPO, env=self.base_env, stdout=out,
                                            stderr=subprocess.STDOUT)
        if expect_ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if (self.state_dir / "env").is_file():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"ggic run exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"ggic run not ready after {START_TIMEOUT_S} s:\n{self.output()}")

    def wait_exit(self, timeout: float = START_TIMEOUT_S) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    @property
    def client_env(self) -> Dict[str, str]:
        """The runtime's `ggic env`, applied over this process's environment."""
        result = ggic("env", "--state-dir", str(self.state_dir))
        assert result.returncode == 0, result.stderr.decode()
        env = dict(self.base_env)
        for line in result.stdout.decode().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
        return env

    @property
    def port(self) -> int:
        return int(json.loads((self.state_dir / "runtime.json").read_text())["port"])

    def health(self) -> dict:
        """`GET /health`: the readiness report (200 when ready, 503 when not: the same JSON either way)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def connector_status(self) -> dict:
        """The first image classification connector's entry in the readiness report (with its supervisor's status)."""
        return next(entry for entry in self.health()["functions"] if ":function:GG-ML-INF-" in entry["function_arn"])

    def worker_pid(self) -> int:
        return int(self.connector_status()["supervisor"]["worker"]["pid"])

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> dict:
        """Poll the connector's status until `predicate(status)` holds; return that status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.connector_status()
            if predicate(status):
                return status
            time.sleep(0.05)
        raise AssertionError(f"{what} not reached within {timeout} s; last status: {status}")

    def log_of(self, function_name: str) -> str:
        logs = list((self.state_dir / "greengrass").rglob(f"{function_name}.log"))
        return logs[0].read_text(errors="replace") if logs else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "GGICRuntime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
