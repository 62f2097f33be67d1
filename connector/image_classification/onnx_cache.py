"""The converted model cache: a SageMaker artifact is converted to ONNX once, and the cached file is verified on
every load.

Each artifact (its directory, prefix and input shape) has one entry under `<cache>/onnx/`: `<prefix>-<key>.onnx`
and a sidecar `<prefix>-<key>.json` holding the artifact's digest (sha256 over the converter version, the input
shape, the symbol and the params bytes) and the ONNX file's sha256. A load recomputes both; when the artifact
changed, the converter changed, or the ONNX file was corrupted or truncated, the model is converted again and the
reason logged. Conversions of one entry are serialised by a lock file, and files are replaced atomically, so
several workers starting together convert once and never read a half-written file.

The conversion (`onnx_export`, numpy only) runs in a child process: its peak memory (params and the serialised
model side by side) is then never held against the worker's LocalInferenceServiceMemoryLimitKB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Tuple

from connector.contract import file_lock
from connector.contract.environment import MODEL_CACHE_ENV
from connector.image_classification.artifact import ModelArtifact
from connector.image_classification.errors import ModelArtifactError, error_class
from connector.image_classification.onnx_export import CONVERTER_VERSION, TARGETS, convert

log = logging.getLogger(__name__)

CONVERT_TIMEOUT_S = 600
_BLOCK = 1 << 20


def cache_root(cache_dir: Optional[Path]) -> Path:
    """`<cache_dir>/onnx`; without one, under the model cache the runtime names (GGIC_MODEL_CACHE), else a private
    folder in the temporary directory."""
    if cache_dir is None:
        named = os.environ.get(MODEL_CACHE_ENV)
        cache_dir = Path(named) if named else Path(tempfile.gettempdir()) / f"ggic-model-cache-{os.getuid()}"
    return cache_dir / "onnx"


def _hash_file(sha: "hashlib._Hash", path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            sha.update(block)


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    _hash_file(sha, path)
    return sha.hexdigest()


def artifact_digest(artifact: ModelArtifact, shape: Tuple[int, int, int], target: str = "onnxruntime") -> str:
    """What the converted model depends on: the converter version, the target, the input shape, the symbol and
    params bytes (each length-prefixed, so moving bytes between the files changes the digest)."""
    sha = hashlib.sha256(f"ggic-onnx converter {CONVERTER_VERSION} {target} shape {tuple(shape)}\n".encode())
    for path in (artifact.symbol_path, artifact.params_path):
        sha.update(f"{path.stat().st_size}\n".encode())
        _hash_file(sha, path)
    return sha.hexdigest()


def entry_paths(artifact: ModelArtifact, shape: Tuple[int, int, int], cache_dir: Optional[Path],
                target: str = "onnxruntime") -> Tuple[Path, Path]:
    """(ONNX file, sidecar) of the artifact's cache entry for `target`, named after where the artifact is (not its
    bytes), so a changed artifact replaces its entry instead of leaving the old one behind."""
    where = f"{artifact.directory.resolve()}\0{artifact.prefix}\0{tuple(shape)}".encode()
    key = hashlib.sha256(where).hexdigest()[:16]
    name = f"{artifact.prefix}-{key}" + ("" if target == "onnxruntime" else f"-{target}")
    root = cache_root(cache_dir)
    return root / f"{name}.onnx", root / f"{name}.json"


def stale_reason(onnx_path: Path, sidecar: Path, digest: str) -> Optional[str]:
    """Why the cached model cannot be used (None when it can)."""
    if not onnx_path.is_file() and not sidecar.is_file():
        return "not converted yet"
    try:
        recorded = json.loads(sidecar.read_text())
        expected_digest, expected_sha = recorded["artifact_digest"], recorded["onnx_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its sidecar {sidecar.name} is missing or unreadable ({exc.__class__.__name__})"
    if expected_digest != digest:
        return "the artifact (or the input shape, or the converter) changed since it was converted"
    if not onnx_path.is_file():
        return f"{onnx_path.name} is missing"
    if file_sha256(onnx_path) != expected_sha:
        return f"{onnx_path.name} does not match its recorded sha256 (corrupted or truncated)"
    return None


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def cached_onnx(artifact: ModelArtifact, shape: Tuple[int, int, int], cache_dir: Optional[Path],
                target: str = "onnxruntime") -> Path:
    """The artifact converted to ONNX for input 1xCxHxW, from the cache when a verified conversion is there.

    `target` is the engine that reads it: "onnxruntime", or "opencv" for cv2.dnn (onnx_export.TARGETS)."""
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not one of {TARGETS}")
    shape = tuple(int(d) for d in shape)  # type: ignore[assignment]
    onnx_path, sidecar = entry_paths(artifact, shape, cache_dir, target)
    onnx_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file_lock.exclusive(onnx_path.with_suffix(".lock")):
        digest = artifact_digest(artifact, shape, target)
        reason = stale_reason(onnx_path, sidecar, digest)
        if reason is None:
            log.debug("using the cached ONNX conversion %s of %s", onnx_path, artifact.describe())
            return onnx_path
        if reason == "not converted yet":
            log.info("converting %s to ONNX for %s, input %s", artifact.describe(), target,
                     "x".join(map(str, (1, *shape))))
        else:
            log.warning("converting %s to ONNX again: the cached %s cannot be used: %s", artifact.describe(),
                        onnx_path.name, reason)
        conversion = convert_in_child(artifact, shape, onnx_path.with_name(onnx_path.name + ".new"), target)
        staged = Path(conversion["onnx_path"])
        record = {"artifact_digest": digest, "onnx_sha256": file_sha256(staged),
                  "converter_version": CONVERTER_VERSION, "target": target, "input_shape": [1, *shape],
                  "symbol": str(artifact.symbol_path), "params": str(artifact.params_path),
                  "onnx_bytes": conversion["onnx_bytes"], "seconds": conversion["seconds"],
                  "fixed_gamma": conversion["fixed_gamma"]}
        sidecar.unlink(missing_ok=True)  # never a new file beside an old record
        staged.replace(onnx_path)
        _write_atomically(sidecar, json.dumps(record, indent=1))
    log.info("converted %s to ONNX in %.1f s (%.1f MB, %d nodes): %s%s", artifact.describe(), conversion["seconds"],
             conversion["onnx_bytes"] / 1e6, conversion["nodes"], onnx_path,
             f" (fix_gamma BatchNorms run with gamma 1 though the params hold other values: "
             f"{', '.join(conversion['fixed_gamma'])})" if conversion["fixed_gamma"] else "")
    return onnx_path


def convert_in_child(artifact: ModelArtifact, shape: Tuple[int, int, int], onnx_path: Path,
                     target: str = "onnxruntime") -> dict:
    """Run `convert` in a child Python; its error comes back as the same ModelArtifactError subclass."""
    command = [sys.executable, "-m", "connector.image_classification.onnx_cache", str(artifact.symbol_path),
               str(artifact.params_path), ",".join(map(str, shape)), str(onnx_path), target]
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        onnx_path.unlink(missing_ok=True)
        raise ModelArtifactError(f"converting {artifact.describe()} to ONNX took over {CONVERT_TIMEOUT_S} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if done.returncode == 0 and "onnx_path" in answer:
        return answer
    onnx_path.unlink(missing_ok=True)
    if "error" in answer:
        raise error_class(answer["error"], ModelArtifactError, ModelArtifactError)(answer["message"])
    reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    raise ModelArtifactError(f"cannot convert {artifact.describe()} to ONNX: {reason}")


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m connector.image_classification.onnx_cache SYMBOL PARAMS C,H,W OUT.onnx [TARGET]`: convert; print
    the Conversion, or the error's class and message, as one JSON line."""
    args = list(argv if argv is not None else sys.argv[1:])
    symbol, params, shape_text, out = args[:4]
    target = args[4] if len(args) > 4 else "onnxruntime"
    shape = tuple(int(part) for part in shape_text.split(","))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    source = f"{Path(symbol).name} + {Path(params).name} in {Path(symbol).parent}"
    try:
        conversion = convert(Path(symbol), Path(params), shape, Path(out), source, target)  # type: ignore[arg-type]
    except (ModelArtifactError, OSError) as exc:
        name = exc.__class__.__name__ if isinstance(exc, ModelArtifactError) else "ModelArtifactError"
        print(json.dumps({"error": name, "message": str(exc) if isinstance(exc, ModelArtifactError)
                          else f"cannot convert {source}: {exc}"}))
        return 1
    print(json.dumps(asdict(conversion)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
