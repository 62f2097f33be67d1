"""The architecture, checked: the import rules of `.importlinter` (import-linter, a public tool), no import cycles
(grimp, the graph behind it), bench/ not importing tests/, and the connector both ways: natively hosted by our
runtime and from the Lambda zip as a real core runs it (a function process), with the same answers. (What the zip
holds, and that it imports nothing of our runtime: tests/test_cli.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from bench.harness import REPO, GGICRuntime, connector_entry
from bench.material import DIGITS_MODEL
from connector.contract import archives
from connector.devices.packaging import build_zip

PACKAGES = ("connector", "bench")


def test_the_import_contracts_hold():
    """The core imports no connector; the contract imports nothing of ggic; the connectors neither the core nor
    each other (`.importlinter`)."""
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def _cycles(graph: grimp.ImportGraph, modules: set) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.find_modules_directly_imported_by(module) & modules:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    sys.path.insert(0, str(REPO))
    graph = grimp.build_graph(package)
    modules = {m for m in graph.modules if m.startswith(package)}
    # Packages import their modules' names only through their modules: a package __init__ is not a hub.
    assert _cycles(graph, modules) == []


def test_bench_does_not_import_the_tests():
    """The tests may import bench (to test it); bench imports nothing of the tests (the shared harness is
    bench's)."""
    graph = grimp.build_graph("bench", include_external_packages=True)
    imported = {target for module in graph.modules for target in graph.find_modules_directly_imported_by(module)}
    assert sorted(m for m in imported if m.split(".")[0] in ("tests", "ggic_runtime", "material")) == []


@pytest.fixture(scope="module")
def lambda_package(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lambda-package")
    archive = directory / "ggic-image-classification-lambda.zip"
    build_zip(archive)
    unpacked = directory / "unpacked"
    unpacked.mkdir()
    archives.extract(archive, unpacked, kind="package")  # bounded, as any package we unpack
    return unpacked


def _answer(runtime: GGICRuntime, image: Path) -> list:
    result = subprocess.run([sys.executable, "-m", "connector.control.cli", "invoke", "--state-dir",
                             str(runtime.state_dir), "--service-name", "digits", "--body", f"fileb://{image}",
                             "--content-type", "image/png"], cwd=REPO, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_the_lambda_zip_runs_as_a_core_runs_it_and_answers_like_the_native_hosting(lambda_package, tmp_path):
    """`--connector-hosting lambda --connector-package DIR`: the connector in a function process from the zip,
    taking invocations over the Lambda protocol; the same probabilities as natively."""
    unpacked = lambda_package
    import cv2
    import numpy as np

    image = tmp_path / "digit.png"
    cv2.imwrite(str(image), (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4))
    entry = connector_entry(DIGITS_MODEL, service_name="digits")
    answers = {}
    for hosting, extra in (("native", []), ("lambda", ["--connector-package", str(unpacked)])):
        with GGICRuntime(tmp_path / hosting, [entry], run_args=["--connector-hosting", hosting, *extra]) as runtime:
            answers[hosting] = _answer(runtime, image)
            status = runtime.connector_status()
            if hosting == "lambda":
                assert status["pid"] != runtime.process.pid and status["supervisor"] is None
                log = runtime.log_of("GG-ML-INF-image-classification-digits")
                assert f"image classification connector from {unpacked / 'connector' / 'image_classification'}" \
                       in log
            else:
                assert status["pid"] == runtime.process.pid and status["supervisor"]["workers"]
    assert answers["lambda"] == answers["native"] and len(answers["native"]) == 10
