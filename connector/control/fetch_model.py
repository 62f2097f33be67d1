"""`ggic fetch-model`: what a Greengrass ML resource with a SageMaker source did at deployment, on any machine.

Greengrass read the training job's `ModelArtifacts.S3ModelArtifacts` (a `model.tar.gz`) and unpacked it at the
resource's destination path. Outside Greengrass nobody does that for our users, so this module does, with the
guarantees an unattended device needs:

- the job is checked first (Completed, built-in image-classification algorithm), so a wrong ARN fails before a byte
  is downloaded;
- nothing is downloaded when the destination already holds the same artifact (S3 ETag compared after a HEAD);
- the archive is verified (size, gzip CRC, MD5 against a plain ETag, safe members within the extraction limits of
  `connector.contract.archives`, a symbol JSON with a `data` input plus an MXNet params file) in a sibling staging
  directory, and only then swapped into place with one rename: a failed or interrupted fetch leaves the previous
  model untouched;
- the job's hyperparameters, ARN and the artifact's ETag are kept in `<destination>/.ggic-model.json`, and
  `model-shapes.json` is written from `image_shape` when the archive lacks it, so the connector gets the trained
  input shape even when SageMaker cannot be reached at start.

Credentials, region and endpoints come from the standard AWS configuration (`AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL_SAGEMAKER` or `AWS_ENDPOINT_URL` point it at another endpoint).
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Optional, TextIO, Tuple, Union

from connector.contract import archives, file_lock
from connector.image_classification import artifact
from connector.image_classification.errors import ModelArtifactError, TrainingJobError
from connector.contract.catalog import InvalidTrainingJobArnError, normalise_training_job_arn, training_job_name
from connector.image_classification.training_job import TrainingJob

log = logging.getLogger(__name__)

METADATA_FILE = ".ggic-model.json"
SHAPES_FILE = "model-shapes.json"
STAGING_PREFIX = ".ggic-fetch-"
CHUNK_BYTES = 1 << 20
MIB = 1 << 20
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
MXNET_NDARRAY_LIST_MAGIC = 0x112  # the first 8 bytes (little-endian) of an MXNet .params file

#: (bytes received so far, total bytes): called as the download progresses.
ProgressCallback = Callable[[int, int], None]


class FetchModelError(Exception):
    """The model could not be fetched or is not a usable image-classification model; the destination is unchanged."""


@dataclass(frozen=True)
class FetchResult:
    destination: Path
    downloaded: bool
    job_name: str
    job_arn: str
    s3_uri: str
    etag: str
    size: int
    model: str                                   # "<symbol> + <params>"
    input_shape: Optional[Tuple[int, int, int]]  # what the connector will use offline (model-shapes.json)

    def summary(self) -> str:
        shape = ",".join(map(str, self.input_shape)) if self.input_shape else "unknown"
        what = (f"downloaded {self.s3_uri} ({_mib(self.size)})" if self.downloaded
                else f"{self.s3_uri} is unchanged (ETag {self.etag}): nothing downloaded")
        return (f"training job {self.job_name}: {what}\nmodel in {self.destination}: {self.model}, "
                f"input shape {shape}")


# --- progress ---------------------------------------------------------------------------------------------

def _mib(size: float) -> str:
    return f"{size / (1 << 20):.1f} MiB"


class ProgressBar:
    """A bar redrawn in place on a terminal: `[#########-----------]  45%  1.2/2.7 MiB  3.1 MiB/s`."""

    WIDTH = 30
    REDRAW_S = 0.1

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._start = time.monotonic()
        self._drawn = 0.0
        self._open = False  # a bar is on the line, not yet ended

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < self.REDRAW_S:
            return
        self._drawn = now
        fraction = done / total if total else 1.0
        filled = int(self.WIDTH * fraction)
        rate = done / max(now - self._start, 1e-6)
        self.stream.write(f"\r[{'#' * filled}{'-' * (self.WIDTH - filled)}] {fraction:4.0%}  "
                          f"{done / (1 << 20):.1f}/{_mib(total)}  {_mib(rate)}/s ")
        self._open = done < total
        if not self._open:
            self.stream.write("\n")
        self.stream.flush()

    def close(self) -> None:
        """End a bar a failed download left open, so the error starts on its own line."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


class LogProgress:
    """Occasional progress lines through logging, for logs and pipes: at most one per quarter or per 10 s."""

    INTERVAL_S = 10.0

    def __init__(self) -> None:
        self._quarter = 0
        self._logged = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        quarter = int(4 * done / total) if total else 4
        now = time.monotonic()
        if quarter > self._quarter or now - self._logged >= self.INTERVAL_S:
            self._quarter, self._logged = quarter, now
            log.info("downloaded %s of %s (%d%%)", _mib(done), _mib(total), 100 * done // max(total, 1))

    def close(self) -> None:
        pass


def progress_for(stream: TextIO) -> Union[ProgressBar, LogProgress]:
    """A bar when `stream` is a terminal, occasional log lines otherwise."""
    isatty = getattr(stream, "isatty", None)
    return ProgressBar(stream) if callable(isatty) and isatty() else LogProgress()


# --- AWS ----------------------------------------------------------------------------------------------------

def _clients(region: str) -> Tuple[Any, Any]:
    try:
        import boto3
        import botocore.config
        import botocore.session
    except ImportError:
        raise FetchModelError("boto3 is not installed: pip install -c install/constraints.txt boto3") from None
    core_session = botocore.session.get_session()
    # Do not stall on the instance metadata service where there is none (it answers in milliseconds where it is).
    core_session.set_config_variable("metadata_service_timeout", 1)
    core_session.set_config_variable("metadata_service_num_attempts", 1)
    session = boto3.session.Session(botocore_session=core_session, region_name=region)
    if session.get_credentials() is None:
        raise FetchModelError(
            "no AWS credentials found: fetch-model needs credentials allowed to call sagemaker:DescribeTrainingJob "
            "and s3:GetObject on the job's artifact (configure them as for the AWS CLI)")
    config = botocore.config.Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                                    retries={"mode": "standard", "max_attempts": 3})
    return session.client("sagemaker", config=config), session.client("s3", config=config)


def _aws_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code') or response.get('ResponseMetadata', {}).get('HTTPStatusCode')}: " \
               f"{error.get('Message') or exc}"
    return str(exc)


def _aws_call(what: str, call: Callable[[], Any]) -> Any:
    import botocore.exceptions

    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        raise FetchModelError(f"{what} failed ({_aws_error(exc)})") from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise FetchModelError(f"{what} failed: {exc}") from None


def parse_s3_uri(uri: str) -> Tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`, the form of ModelArtifacts.S3ModelArtifacts."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", uri or "")
    if match is None:
        raise FetchModelError(f"S3ModelArtifacts {uri!r} is not an s3://bucket/key URI")
    return match.group(1), match.group(2)


def _md5() -> Any:
    try:
        return hashlib.md5(usedforsecurity=False)  # an integrity check, allowed on FIPS systems
    except TypeError:  # Python < 3.9
        return hashlib.md5()


def _download(s3: Any, bucket: str, key: str, etag: str, size: int, target: Path,
              progress: Optional[ProgressCallback]) -> str:
    """GET the object we HEADed (If-Match: a changed object fails instead of mixing versions); its MD5."""
    import botocore.exceptions

    uri = f"s3://{bucket}/{key}"
    response = _aws_call(f"downloading {uri}", lambda: s3.get_object(Bucket=bucket, Key=key, IfMatch=etag))
    digest = _md5()
    done = 0
    try:
        with open(target, "wb") as out:
            for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, size)
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise FetchModelError(f"downloading {uri} failed after {done} of {size} bytes: {exc}") from None
    if done != size:
        raise FetchModelError(f"downloading {uri} ended after {done} of {size} bytes")
    if progress is not None and size == 0:
        progress(0, 0)
    return digest.hexdigest()


# --- verification ---------------------------------------------------------------------------------------------

def _check_gzip_magic(archive: Path, uri: str) -> None:
    with open(archive, "rb") as handle:
        magic = handle.read(2)
    if magic != b"\x1f\x8b":
        raise FetchModelError(f"{uri} is not a gzip file (it starts with {magic!r}); a SageMaker training job's "
                              f"model artifact is a model.tar.gz")


def _verify_gzip(archive: Path, uri: str, max_bytes: int) -> None:
    """The whole stream decompresses and its CRC matches (tarfile stops at the end marker, before the CRC).

    Run after the bounded extraction, so `max_bytes` (what the tar stream can hold beside the files it wrote)
    bounds the decompression too: data hidden after the tar's end marker cannot make this step a bomb.
    """
    done = 0
    try:
        with gzip.open(archive, "rb") as stream:
            while True:
                block = stream.read(CHUNK_BYTES)
                if not block:
                    break
                done += len(block)
                if done > max_bytes:
                    raise FetchModelError(
                        f"{uri} decompresses to more than {_mib(max_bytes)}, beyond the tar archive its members "
                        f"make: data is hidden after the archive's end")
    except (OSError, EOFError, zlib.error) as exc:
        raise FetchModelError(f"{uri} is a corrupt gzip file: {exc}") from None


def _check_model(directory: Path, uri: str) -> artifact.ModelArtifact:
    """The extracted archive looks like an image-classification model: a symbol JSON with a `data` input and the
    MXNet params file of the same prefix."""
    found = artifact._search(directory)
    if not found:
        names = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())[:10]
        raise FetchModelError(
            f"{uri} holds no {artifact.PREFIX}-symbol.json with a matching {artifact.PREFIX}-NNNN.params "
            f"(it holds: {', '.join(names) or 'nothing'}): not a SageMaker image-classification model")
    try:
        model = artifact._choose(found, directory)
    except ModelArtifactError as exc:
        raise FetchModelError(f"{uri}: {exc}") from None
    if model.prefix != artifact.PREFIX:
        log.warning("%s: the model's files are named %s-*, not %s-* as the image-classification algorithm names "
                    "them", uri, model.prefix, artifact.PREFIX)
    try:
        graph = json.loads(model.symbol_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FetchModelError(f"{uri}: {model.symbol_path.name} is not valid JSON: {exc}") from None
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list) or "heads" not in graph:
        raise FetchModelError(f"{uri}: {model.symbol_path.name} is not an MXNet symbol (no nodes and heads)")
    if not any(isinstance(n, dict) and n.get("op") == "null" and n.get("name") == "data" for n in nodes):
        raise FetchModelError(f"{uri}: {model.symbol_path.name} has no 'data' input: not an image-classification "
                              f"network")
    with open(model.params_path, "rb") as handle:
        head = handle.read(8)
    if len(head) < 8 or int.from_bytes(head, "little") != MXNET_NDARRAY_LIST_MAGIC:
        raise FetchModelError(f"{uri}: {model.params_path.name} is not an MXNet parameters file")
    return model


def _input_shape(model: artifact.ModelArtifact, job: TrainingJob) -> Tuple[Optional[Tuple[int, int, int]], str]:
    """Make sure model-shapes.json says what the connector should use offline; (shape, where it came from)."""
    trained = job.image_shape()
    stored = artifact.read_model_shapes(model.shapes_path)
    if trained is None:
        return stored, SHAPES_FILE if stored else "none"
    if model.shapes_path is None:
        (model.directory / SHAPES_FILE).write_text(
            json.dumps([{"shape": [1, *trained], "name": "data"}]), encoding="utf-8")
        log.info("the archive has no %s: wrote one from the job's image_shape %s", SHAPES_FILE,
                 ",".join(map(str, trained)))
        return trained, "hyperparameter image_shape (written to model-shapes.json)"
    if stored != trained:
        log.warning("%s says %s but the job's image_shape is %s; the connector uses image_shape when it can reach "
                    "SageMaker, %s otherwise", SHAPES_FILE, stored, ",".join(map(str, trained)), SHAPES_FILE)
    return stored or trained, SHAPES_FILE


# --- the destination -----------------------------------------------------------------------------------------

def read_metadata(destination: Path) -> Optional[Dict[str, Any]]:
    """What the last fetch into `destination` recorded, or None."""
    try:
        data = json.loads((destination / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files(directory: Path) -> Dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != METADATA_FILE}


def _still_intact(destination: Path, metadata: Dict[str, Any]) -> bool:
    files = metadata.get("Files")
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        try:
            if (destination / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def _check_destination(destination: Path) -> None:
    """Refuse to replace anything but a model: the swap replaces the whole directory."""
    if destination == destination.parent:
        raise FetchModelError(f"--destination {destination} is a filesystem root; give a directory for the model")
    if not destination.exists():
        return
    if not destination.is_dir():
        raise FetchModelError(f"--destination {destination} exists and is not a directory")
    if (destination / METADATA_FILE).is_file() or not any(destination.iterdir()):
        return
    if artifact._search(destination):
        log.warning("replacing the model in %s, which ggic did not fetch", destination)
        return
    raise FetchModelError(
        f"--destination {destination} holds files that are not a model; fetch-model replaces the whole directory, "
        f"so give a new or empty directory (or one a previous fetch-model wrote)")


def _locked(destination: Path) -> ContextManager[None]:
    """One fetch per destination at a time (two deployments, or a deployment and a user)."""
    return file_lock.exclusive(destination.parent / f".{destination.name}.ggic-fetch.lock")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_into_place(new: Path, destination: Path, staging: Path) -> None:
    """`new` becomes `destination`; the previous content ends up inside `staging` (removed by the caller)."""
    if not destination.exists():
        os.rename(new, destination)
        return
    if _exchange(new, destination):
        return
    previous = staging / "previous"
    os.rename(destination, previous)  # no exchange: a moment without the directory, never a half-written one
    try:
        os.rename(new, destination)
    except OSError:
        os.rename(previous, destination)
        raise


# --- the whole fetch ---------------------------------------------------------------------------------------------

def describe_job(sagemaker: Any, job_arn: str) -> Tuple[TrainingJob, Dict[str, Any]]:
    """DescribeTrainingJob by name (from either ARN spelling); refuse a job whose model this connector cannot serve."""
    arn, _ = normalise_training_job_arn(job_arn)
    name = training_job_name(arn)
    response = _aws_call(f"DescribeTrainingJob {name}",
                         lambda: sagemaker.describe_training_job(TrainingJobName=name))
    algorithm = response.get("AlgorithmSpecification") or {}
    job = TrainingJob(name=response.get("TrainingJobName", name), status=response.get("TrainingJobStatus", ""),
                      training_image=algorithm.get("TrainingImage") or algorithm.get("AlgorithmName") or "",
                      hyperparameters=response.get("HyperParameters") or {})
    try:
        job.check()
    except TrainingJobError as exc:
        raise FetchModelError(str(exc)) from None
    return job, response


def fetch_model(job_arn: str, destination: Path, region: Optional[str] = None,
                progress: Optional[ProgressCallback] = None,
                limits: Optional[archives.ArchiveLimits] = None) -> FetchResult:
    """Put the model of a Completed image-classification training job at `destination` (see the module doc).

    `limits` bound the archive's extraction (default: `ArchiveLimits`, overridden by GGIC_ARCHIVE_* variables)."""
    if limits is None:
        try:
            limits = archives.ArchiveLimits.from_environment(os.environ)
        except ValueError as exc:
            raise FetchModelError(str(exc)) from None
    try:
        arn, changed = normalise_training_job_arn(job_arn)
        training_job_name(arn)
    except InvalidTrainingJobArnError as exc:
        raise FetchModelError(f"{exc}; expected arn:aws:sagemaker:<region>:<account>:training-job/<name>") from None
    if changed:
        log.info("read the documentation's spelling %s as the SageMaker ARN %s", job_arn, arn)
    region = region or arn.split(":")[3]
    destination = Path(destination).expanduser().absolute()
    if destination.is_symlink():
        destination = destination.resolve()
    sagemaker, s3 = _clients(region)
    job, response = describe_job(sagemaker, arn)
    uri = (response.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or ""
    if not uri:
        raise FetchModelError(f"training job {job.name} reports no ModelArtifacts.S3ModelArtifacts")
    bucket, key = parse_s3_uri(uri)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with _locked(destination):
            return _fetch_locked(job, response, uri, bucket, key, s3, destination, progress, limits)
    except OSError as exc:  # permissions, a full disk, ...: the destination is as it was
        raise FetchModelError(f"cannot put the model at {destination}: {exc}") from None


def _fetch_locked(job: TrainingJob, response: Dict[str, Any], uri: str, bucket: str, key: str, s3: Any,
                  destination: Path, progress: Optional[ProgressCallback],
                  limits: archives.ArchiveLimits) -> FetchResult:
    _check_destination(destination)
    for stale in destination.parent.glob(f".{artifact.glob_escape(destination.name)}{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a fetch that was killed
    head = _aws_call(f"HeadObject {uri}", lambda: s3.head_object(Bucket=bucket, Key=key))
    etag, size = str(head.get("ETag", "")), int(head.get("ContentLength", 0))
    job_arn = response.get("TrainingJobArn", "")

    previous = read_metadata(destination)
    if previous and previous.get("S3ModelArtifacts") == uri and previous.get("ETag") == etag \
            and _still_intact(destination, previous):
        log.info("%s is unchanged (ETag %s) and already in %s: not downloading it", uri, etag, destination)
        shape = previous.get("InputShape")
        return FetchResult(destination, False, job.name, job_arn, uri, etag, size, str(previous.get("Model")),
                           tuple(shape) if shape else None)

    log.info("downloading %s (%s, ETag %s) for training job %s", uri, _mib(size), etag, job.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}{STAGING_PREFIX}", dir=destination.parent))
    try:
        archive = staging / "model.tar.gz"
        md5 = _download(s3, bucket, key, etag, size, archive, progress)
        plain_etag = etag.strip('"')
        encryption = str(head.get("ServerSideEncryption") or "")
        if re.fullmatch(r"[0-9a-f]{32}", plain_etag) and not encryption.startswith("aws:kms") \
                and not head.get("SSECustomerAlgorithm") and md5 != plain_etag:
            raise FetchModelError(f"{uri} arrived damaged: its MD5 {md5} is not its ETag {plain_etag}")
        _check_gzip_magic(archive, uri)
        model_dir = staging / "model"
        model_dir.mkdir()
        try:  # bounded: a gzip bomb is refused after at most max_ratio x its size, naming the limit
            extracted = archives.extract(archive, model_dir, limits, kind="model")
        except archives.UnreadableArchiveError as exc:
            raise FetchModelError(f"{uri} is a corrupt gzip file or not a tar archive: {exc}") from None
        except archives.ArchiveError as exc:
            raise FetchModelError(f"{uri}: {exc}") from None
        # Every tar member has a 512-byte header (long names and pax records add a few more) and data padded to
        # 512 bytes; the end marker and the record padding add at most 20 KiB.
        _verify_gzip(archive, uri, extracted.bytes_written + (extracted.members + 4) * 4096 + MIB)
        archive.unlink()
        model = _check_model(model_dir, uri)
        shape, shape_source = _input_shape(model, job)
        described = f"{model.symbol_path.relative_to(model_dir)} + {model.params_path.relative_to(model_dir)}"
        metadata = {
            "TrainingJobName": job.name,
            "TrainingJobArn": job_arn,
            "TrainingJobStatus": job.status,
            "TrainingImage": job.training_image,
            "HyperParameters": dict(job.hyperparameters),
            "S3ModelArtifacts": uri,
            "ETag": etag,
            "ContentLength": size,
            "FetchedAt": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "Model": described,
            "InputShape": list(shape) if shape else None,
            "InputShapeSource": shape_source,
            "Files": _files(model_dir),
        }
        (model_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
        _swap_into_place(model_dir, destination, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("model of training job %s is in %s: %s", job.name, destination, described)
    return FetchResult(destination, True, job.name, job_arn, uri, etag, size, described, shape)
