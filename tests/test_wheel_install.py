"""`make wheel`'s wheel, installed (not editable) into a clean venv by install/x86_64.sh, runs a connector end to end.

The venv is built once per session (conftest.py: installed_venv); everything here starts from its bin/, outside the
checkout and without PYTHONPATH, so a module, schema or dependency missing from the wheel fails here.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
from sklearn.datasets import load_digits

from bench.material import REPO
from examples.models.digits import digit_png, split
from connector.devices.doctor import PINNED
from install.constraints.resolve import runtime_requirements
from tests.installs import serve_and_invoke, venv_python

CONSTRAINTS = REPO / "install" / "constraints"



def test_the_wheel_holds_every_package_the_schemas_and_the_lambda_runtime(ggic_wheel):
    names = set(zipfile.ZipFile(ggic_wheel).namelist())
    packages = {path.parent.relative_to(REPO).as_posix() for path in (REPO / "connector").rglob("__init__.py")}
    assert "connector/feedback" in packages and "connector/core" in packages
    for package in packages:
        modules = {p.relative_to(REPO).as_posix() for p in (REPO / package).glob("*.py")}
        assert modules <= names, f"{package}: missing {sorted(modules - names)}"
    for sdk in ("greengrass_machine_learning_sdk", "greengrass_common", "greengrass_ipc_python_sdk"):
        assert {f"{sdk}/{p.name}" for p in (REPO / "ml_sdk" / sdk).glob("*.py")} <= names
    schemas = {f"connector/contract/schema_files/{p.name}" for p in (REPO / "schemas").glob("*.json")}
    assert len(schemas) > 10 and schemas <= names
    assert "connector/core/lambda_runtime.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/", "schemas/", "share/"))]
    metadata = zipfile.ZipFile(ggic_wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    requires = [line for line in metadata.decode().splitlines() if line.startswith("Requires-Dist: ")]
    assert 'Requires-Dist: mxnet; platform_machine == "x86_64"' in requires
    assert 'Requires-Dist: paho-mqtt' in requires


def test_the_installed_package_imports_from_the_venv_and_finds_its_schemas(installed_venv):
    venv, install = installed_venv
    found = json.loads(venv_python(venv, (
        "import json, connector, connector.feedback.service, connector.image_classification.supervisor\n"
        "from connector.contract.schemas import schema_dir, load_json\n"
        "print(json.dumps([connector.__file__, str(schema_dir()), len(load_json('connectors.json')['connectors'])]))"
    )))
    site_packages = str(venv / "lib")
    assert found[0].startswith(site_packages) and found[1].startswith(site_packages)
    assert found[1].endswith("connector/contract/schema_files") and found[2] >= 4
    print(f"install/x86_64.sh into a clean venv: {install.seconds:.1f} s")


def test_the_installed_wheel_serves_the_digits_model_end_to_end(installed_venv, digits_model, tmp_path):
    venv, _ = installed_venv
    digits = load_digits()
    _, heldout = split()
    chosen = heldout[:3]
    images = []
    for index in chosen:
        image = tmp_path / f"digit-{index}.png"
        image.write_bytes(digit_png(digits.images[index]))
        images.append(image)
    answers = serve_and_invoke(venv, tmp_path / "state", digits_model, images)
    for index, answer in zip(chosen, answers):
        assert len(answer) == 10 and abs(sum(answer) - 1) < 1e-4
        assert int(np.argmax(answer)) == digits.target[index]


def test_the_lambda_zip_is_built_from_an_installed_ggic(installed_venv, tmp_path):
    venv, _ = installed_venv
    venv_python(venv, f"from connector.devices.packaging import build_zip; build_zip(__import__('pathlib').Path("
                      f"{str(tmp_path / 'lambda.zip')!r}))")
    names = zipfile.ZipFile(tmp_path / "lambda.zip").namelist()
    assert "schemas/connectors.json" in names and "connector/image_classification/handler.py" in names


def test_the_dependencies_follow_the_platform(ggic_wheel):
    """setup.py's markers, evaluated for each machine as pip would there (install/constraints/resolve.py)."""
    names = {machine: {r.split("<")[0].split("=")[0].lower().replace("_", "-")
                       for r in runtime_requirements(ggic_wheel, machine, "3.11")}
             for machine in ("x86_64", "aarch64", "armv7l")}
    pure = {"jsonschema", "boto3", "prometheus-client", "paho-mqtt"}
    assert names["x86_64"] == pure | {"mxnet", "numpy", "opencv-python-headless", "onnxruntime"}
    assert names["aarch64"] == pure | {"numpy", "opencv-python-headless", "onnxruntime"}
    assert names["armv7l"] == pure | {"numpy"}
    assert "numpy<1.24" in runtime_requirements(ggic_wheel, "x86_64", "3.11")
    assert "numpy" in runtime_requirements(ggic_wheel, "aarch64", "3.11")


def pins(path):
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_every_python_has_pins_for_every_runtime_dependency_and_the_device_pins():
    """The per-Python files pin what ggic installs on x86_64 (3.8-3.10) or aarch64 (3.12, 3.13), with the OpenCV
    (and, with MXNet, the numpy) that `ggic doctor` expects."""
    files = sorted(CONSTRAINTS.glob("py*.txt"))
    assert [f.name for f in files] == ["py310.txt", "py312.txt", "py313.txt", "py38.txt", "py39.txt"]
    for path in files:
        pinned = {name.lower().replace("_", "-"): version for name, version in pins(path).items()}
        required = {"numpy", "opencv-python-headless", "onnxruntime", "jsonschema", "boto3", "prometheus-client",
                    "paho-mqtt"}
        assert required <= set(pinned), f"{path.name}: {sorted(required - set(pinned))} unpinned"
        assert pinned["opencv-python-headless"] == PINNED["opencv-python-headless"], path.name
        if path.name in ("py38.txt", "py39.txt", "py310.txt"):  # x86_64 too: MXNet and its numpy
            assert pinned["mxnet"] == PINNED["mxnet"] and pinned["numpy"] == PINNED["numpy"], path.name
