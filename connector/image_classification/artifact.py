"""Finding the SageMaker image-classification artifact under MLModelDestinationPath.

A training job's `model.tar.gz` holds `image-classification-symbol.json`, one or more
`image-classification-NNNN.params` (NNNN = epoch; with `checkpoint_frequency` several remain, the highest is the
last saved) and `model-shapes.json`. Greengrass extracts it into the destination path, but how deep is not
documented, so we look in the directory and one level down, and we also accept the archive itself placed there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from connector.contract import archives
from connector.image_classification.errors import (
    ArchiveLimitExceededError,
    ConfigurationError,
    ModelArtifactError,
    UnsafeArchiveError,
)

log = logging.getLogger(__name__)

PREFIX = "image-classification"
ARCHIVE_NAME = "model.tar.gz"
_PARAMS = re.compile(r"^(?P<prefix>.+)-(?P<epoch>\d{4})\.params$")


@dataclass(frozen=True)
class ModelArtifact:
    directory: Path
    prefix: str
    epoch: int
    symbol_path: Path
    params_path: Path
    shapes_path: Optional[Path]

    def describe(self) -> str:
        return f"{self.symbol_path.name} + {self.params_path.name} in {self.directory}"


def _candidates(directory: Path) -> List[ModelArtifact]:
    """Every `<prefix>-symbol.json` in `directory` with its highest-numbered `<prefix>-NNNN.params`."""
    found = []
    for symbol in sorted(directory.glob("*-symbol.json")):
        prefix = symbol.name[: -len("-symbol.json")]
        epochs = []
        for params in directory.glob(f"{glob_escape(prefix)}-*.params"):
            match = _PARAMS.match(params.name)
            if match and match.group("prefix") == prefix:
                epochs.append((int(match.group("epoch")), params))
        if epochs:
            epoch, params = max(epochs)
            shapes = directory / "model-shapes.json"
            found.append(ModelArtifact(directory, prefix, epoch, symbol, params,
                                       shapes if shapes.is_file() else None))
    return found


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _search(root: Path) -> List[ModelArtifact]:
    found = _candidates(root)
    if not found:
        for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.extend(_candidates(child))
    return found


def _choose(found: List[ModelArtifact], where: Path) -> ModelArtifact:
    preferred = [a for a in found if a.prefix == PREFIX] or found
    if len(preferred) > 1:
        listing = "; ".join(a.describe() for a in preferred)
        raise ModelArtifactError(f"more than one model found under {where}: {listing}. Leave one model there.")
    return preferred[0]


def locate(destination: Path, cache_dir: Optional[Path] = None) -> ModelArtifact:
    """Find the model under `destination` (or inside a model.tar.gz there, extracted into `cache_dir`)."""
    if not destination.is_dir():
        raise ModelArtifactError(
            f"MLModelDestinationPath {destination} is not a directory: deploy the ML resource there first")
    found = _search(destination)
    if found:
        return _choose(found, destination)
    archives = [path for path in sorted(destination.glob("*.tar.gz")) + sorted(destination.glob("*/*.tar.gz"))
                if path.is_file()]
    if archives:
        archive = next((a for a in archives if a.name == ARCHIVE_NAME), archives[0])
        extracted = extract_cached(archive, cache_dir)
        found = _search(extracted)
        if found:
            return _choose(found, archive)
        raise ModelArtifactError(f"{archive} holds no {PREFIX}-symbol.json with a matching "
                                 f"{PREFIX}-NNNN.params")
    raise ModelArtifactError(
        f"no model under {destination}: expected {PREFIX}-symbol.json, {PREFIX}-NNNN.params and model-shapes.json "
        f"(directly or one directory down), or the training job's {ARCHIVE_NAME}")


def read_model_shapes(path: Optional[Path]) -> Optional[Tuple[int, int, int]]:
    """(C, H, W) of the `data` input from model-shapes.json, ignoring the stored batch size."""
    if path is None:
        return None
    try:
        entries = json.loads(path.read_text())
        entry = next(e for e in entries if isinstance(e, dict) and e.get("name", "data") == "data")
        shape = [int(v) for v in entry["shape"]]
    except (OSError, ValueError, TypeError, KeyError, StopIteration) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    if len(shape) != 4 or min(shape[1:]) < 1:
        log.warning("ignoring %s: expected a [N, C, H, W] shape, found %s", path, shape)
        return None
    return shape[1], shape[2], shape[3]


# --- archives ---------------------------------------------------------------------------------------------

def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def extract_cached(archive: Path, cache_dir: Optional[Path]) -> Path:
    """Extract `archive` once into `<cache_dir>/<digest>/`; later starts reuse it.

    The extraction goes into a staging directory that becomes the entry, marked `.complete`, only when the whole
    archive was extracted within the limits; any failure removes the staging directory.
    """
    cache_root = cache_dir or Path(tempfile.gettempdir()) / f"ggic-model-cache-{os.getuid()}"
    try:
        target = cache_root / _digest(archive)
    except OSError as exc:
        raise ModelArtifactError(f"cannot read {archive}: {exc}") from None
    if (target / ".complete").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_root))
    try:
        safe_extract(archive, staging)
        (staging / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("extracted %s into %s", archive, target)
    return target


def archive_limits() -> archives.ArchiveLimits:
    """The extraction limits: the defaults, or what GGIC_ARCHIVE_* in this process's environment say."""
    try:
        return archives.ArchiveLimits.from_environment(os.environ)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def safe_extract(archive: Path, destination: Path, limits: Optional[archives.ArchiveLimits] = None) -> None:
    """Extract the model archive within `limits` (`connector.contract.archives`): refused members and archives
    over a limit raise, and leave `destination` as it was."""
    try:
        archives.extract(archive, destination, limits or archive_limits(), kind="model")
    except archives.ArchiveLimitError as exc:
        raise ArchiveLimitExceededError(f"{archive} is refused: {exc}", exc.limit, exc.member) from None
    except archives.UnsafeMemberError as exc:
        raise UnsafeArchiveError(str(exc)) from None
    except archives.UnreadableArchiveError as exc:
        raise ModelArtifactError(f"{archive} is not a readable tar.gz archive: {exc}") from None
    except OSError as exc:  # reading the archive or writing the files: permissions, a full disk
        raise ModelArtifactError(f"cannot extract {archive} into {destination}: {exc}") from None
