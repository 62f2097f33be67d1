"""`make lambda-zip`: the connector as a deployment package for a long-lived Lambda in a real Greengrass v1 group.

The zip holds what the connector needs on a real core and nothing else: `connector/image_classification` and
`connector/contract` (the catalog, schemas loader, log format it shares with our runtime), `schemas/` beside them
(where `connector.contract.schemas` looks), and the `greengrass_machine_learning_sdk` with which a version 2 connector
hands samples to the group's ML Feedback connector (`MLFeedbackConnectorConfigId`); the core provides
`greengrass_common` and `greengrass_ipc_python_sdk`. Not our runtime, control plane or device tools. Handler:
`connector.image_classification.handler.function_handler`; runtime python3.7+ (or python3.8 on newer cores); pinned
(long-lived); input encoding binary. MXNet, numpy and OpenCV are not bundled: the device provides them (the connector
documentation's install scripts, or `install/`), as with the original connector.
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import connector
from connector.contract.schemas import schema_dir

HANDLER = "connector.image_classification.handler.function_handler"
CONNECTOR_PACKAGES = ("contract", "image_classification")


def package_files() -> list[tuple[Path, str]]:
    """(source, name in the zip), read from wherever ggic is installed: a checkout or an installed wheel."""
    root = Path(connector.__file__).resolve().parent
    files = [(root / "__init__.py", "connector/__init__.py")]
    files += [(path, f"connector/{package}/{path.name}") for package in CONNECTOR_PACKAGES
              for path in sorted((root / package).glob("*.py"))]
    sdk = Path(list(importlib.util.find_spec("greengrass_machine_learning_sdk").submodule_search_locations)[0])
    files += [(path, f"greengrass_machine_learning_sdk/{path.name}") for path in sorted(sdk.glob("*.py"))]
    files += [(path, f"schemas/{path.name}") for path in sorted(schema_dir().glob("*.json"))]
    return files


def build_zip(destination: Path) -> int:
    """Write the zip; return how many files it holds."""
    files = package_files()
    destination.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return len(files)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    destination = Path(args[0] if args else "build/ggic-image-classification-lambda.zip")
    count = build_zip(destination)
    sys.stdout.write(f"{destination}: handler {HANDLER}, {count} files\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
