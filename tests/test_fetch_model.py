"""`ggic fetch-model` against a real moto_server on 127.0.0.1 (SageMaker + S3, through AWS_ENDPOINT_URL).

The job is checked before anything is downloaded, the artifact is verified before it replaces the previous model,
and an unchanged artifact (same ETag) is not downloaded again.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bench.harness import GGICRuntime, connector_entry, ggic
from bench.material import DIGITS_ARCHIVE
from examples.models.digits import digit_png, split
from sagemaker_jobs import (
    PARAMS,
    SYMBOL,
    XGBOOST_IMAGE,
    aws_env,
    create_job,
    digits_files,
    head_etag,
    set_status,
    tar_gz,
    upload,
)

SERVICE = "GG-ML-INF-image-classification-imageClassification"


@pytest.fixture(scope="module")
def digits_job(moto_endpoint) -> str:
    """A Completed image-classification job whose artifact is the real digits model.tar.gz."""
    return create_job(moto_endpoint, "fetch-digits", DIGITS_ARCHIVE.read_bytes())


def fetch(env: dict, job_arn: str, destination: Path):
    return ggic("fetch-model", "--training-job-arn", job_arn, "--destination", str(destination),
                env=dict(os.environ, **env))


def test_the_fetched_model_serves_through_ggic_run(tmp_path, moto_endpoint, digits_job, sdk_env):
    destination = tmp_path / "ml" / "digits"
    colon_spelling = digits_job.replace("training-job/", "training-job:")  # the documentation's spelling
    result = fetch(aws_env(moto_endpoint), colon_spelling, destination)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert "training job fetch-digits: downloaded s3://sagemaker-ggic-models/output/fetch-digits/output/" \
           "model.tar.gz (1.0 MiB)" in out
    assert "downloaded 1.0 MiB of 1.0 MiB (100%)" in err  # progress: occasional lines when stderr is no terminal
    assert sorted(p.name for p in destination.iterdir()) == [".ggic-model.json", PARAMS, SYMBOL,
                                                             "model-shapes.json"]
    metadata = json.loads((destination / ".ggic-model.json").read_text())
    assert metadata["TrainingJobArn"] == digits_job
    assert metadata["HyperParameters"] == {"image_shape": "3,28,28", "num_classes": "10", "num_layers": "20"}
    assert metadata["ETag"] == head_etag(moto_endpoint, "fetch-digits")
    assert metadata["InputShape"] == [3, 28, 28]
    assert sorted(p.name for p in destination.parent.iterdir()) == [".digits.ggic-fetch.lock", "digits"]

    # No credentials for the runtime: the connector cannot describe the job and uses model-shapes.json.
    with GGICRuntime(tmp_path / "state", [connector_entry(destination, job_arn=digits_job)]) as rt:
        assert "input shape 3,28,28 chosen from" in rt.log_of(SERVICE)
        sdk_env(rt)
        import greengrass_machine_learning_sdk as ml

        digits = load_digits()
        heldout = split()[1][:30]
        answers = []
        for index in heldout:
            response = ml.client("inference").invoke_inference_service(
                AlgoType="image-classification", ServiceName="imageClassification", ContentType="image/png",
                Body=digit_png(digits.images[index]))
            answers.append(int(np.fromstring(response["Body"].read().decode()[1:-1], sep=",").argmax()))
        assert sum(a == digits.target[i] for a, i in zip(answers, heldout)) >= 28


def test_an_unchanged_artifact_is_not_downloaded_again(tmp_path, moto_endpoint):
    env = aws_env(moto_endpoint)
    # An archive without model-shapes.json: fetch-model writes it from the job's image_shape.
    arn = create_job(moto_endpoint, "fetch-etag", tar_gz(digits_files(with_shapes=False)))
    destination = tmp_path / "model"
    first = fetch(env, arn, destination)
    assert first.returncode == 0, first.stderr.decode()
    assert json.loads((destination / "model-shapes.json").read_text()) == [{"shape": [1, 3, 28, 28],
                                                                           "name": "data"}]
    assert "wrote one from the job's image_shape 3,28,28" in first.stderr.decode()
    before = json.loads((destination / ".ggic-model.json").read_text())
    inode, params_mtime = destination.stat().st_ino, (destination / PARAMS).stat().st_mtime_ns

    second = fetch(env, arn, destination)
    assert second.returncode == 0, second.stderr.decode()
    assert f"is unchanged (ETag {before['ETag']}): nothing downloaded" in second.stdout.decode()
    assert "not downloading it" in second.stderr.decode()
    assert "downloaded 1.0 MiB" not in second.stderr.decode()
    assert destination.stat().st_ino == inode and (destination / PARAMS).stat().st_mtime_ns == params_mtime
    assert json.loads((destination / ".ggic-model.json").read_text()) == before

    # A new artifact under the same key (new ETag) is downloaded and swapped in.
    new_etag = upload(moto_endpoint, "fetch-etag", tar_gz(dict(digits_files(), **{"NOTES.txt": b"retrained"})))
    third = fetch(env, arn, destination)
    assert third.returncode == 0, third.stderr.decode()
    assert "downloaded 1.0 MiB of 1.0 MiB (100%)" in third.stderr.decode()
    assert destination.stat().st_ino != inode
    assert (destination / "NOTES.txt").read_bytes() == b"retrained"
    assert json.loads((destination / ".ggic-model.json").read_text())["ETag"] == new_etag != before["ETag"]


@pytest.fixture(scope="module")
def threaded_moto():
    """moto's server in this process: the only way to give a job another status than Completed."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.mark.parametrize("status", ["InProgress", "Failed"])
def test_a_job_that_is_not_completed_is_refused(tmp_path, threaded_moto, status):
    name = f"fetch-{status.lower()}"
    arn = create_job(threaded_moto, name, DIGITS_ARCHIVE.read_bytes())
    set_status(name, status)
    result = fetch(aws_env(threaded_moto), arn, tmp_path / "model")
    assert result.returncode == 1
    assert f"ggic: fetch-model: training job {name} is {status}, not Completed: it has no final model to serve" \
           in result.stderr.decode()
    assert not (tmp_path / "model").exists()


def test_a_job_of_another_algorithm_is_refused(tmp_path, moto_endpoint):
    arn = create_job(moto_endpoint, "fetch-xgboost", b"not even an archive", image=XGBOOST_IMAGE,
                     hyperparameters={"num_round": "10"})
    result = fetch(aws_env(moto_endpoint), arn, tmp_path / "model")
    assert result.returncode == 1
    assert (f"training job fetch-xgboost used {XGBOOST_IMAGE}, not the SageMaker image-classification algorithm"
            in result.stderr.decode())
    assert "downloading" not in result.stderr.decode()
    assert not (tmp_path / "model").exists()


def test_an_unknown_job_or_a_bad_arn_is_reported(tmp_path, moto_endpoint):
    env = aws_env(moto_endpoint)
    missing = fetch(env, "arn:aws:sagemaker:us-west-2:123456789012:training-job/no-such-job", tmp_path / "m")
    assert missing.returncode == 1
    assert "DescribeTrainingJob no-such-job failed (ValidationException: Could not find training job" \
           in missing.stderr.decode()
    bad = fetch(env, "arn:aws:s3:::bucket/model.tar.gz", tmp_path / "m")
    assert bad.returncode == 1
    assert "Not a SageMaker training-job ARN: 'arn:aws:s3:::bucket/model.tar.gz'" in bad.stderr.decode()
    assert not (tmp_path / "m").exists()


def _corrupt(kind: str) -> bytes:
    good = digits_files()
    if kind == "truncated":
        archive = tar_gz(good)
        return archive[: len(archive) // 2]
    if kind == "bit-flipped":  # same length, one byte changed in the compressed data: the gzip CRC catches it
        archive = bytearray(tar_gz(good))
        archive[len(archive) // 2] ^= 0xFF
        return bytes(archive)
    if kind == "not-gzip":
        return (DIGITS_ARCHIVE.parent / "digits-resnet20" / SYMBOL).read_bytes()
    if kind == "link-member":
        return tar_gz(good, links={"model-shapes.json.bak": "/etc/passwd"})
    if kind == "gzip-bomb":  # issue 16 finding 3: 1.5 GiB of zeros named like weights, 1.6 MB in S3
        from bench.hostile_archives import bomb_tar_gz_bytes

        return bomb_tar_gz_bytes(dict(good, **{"image-classification-0007.params": 1536}))
    if kind == "not-a-model":
        return tar_gz({"weights.h5": b"\x89HDF\r\n", "config.json": b"{}"})
    if kind == "symbol-without-data":
        return tar_gz(dict(good, **{SYMBOL: json.dumps({"nodes": [{"op": "null", "name": "x"}],
                                                        "heads": [[0, 0, 0]]}).encode()}))
    raise ValueError(kind)


CORRUPTIONS = {
    "truncated": "is a corrupt gzip file",
    "bit-flipped": "is a corrupt gzip file",
    "not-gzip": "is not a gzip file",
    "gzip-bomb": "archive member 'image-classification-0007.params': the archive decompressed to",
    "link-member": "is a link ('/etc/passwd'); models hold plain files",
    "not-a-model": "holds no image-classification-symbol.json with a matching image-classification-NNNN.params "
                   "(it holds: config.json, weights.h5)",
    "symbol-without-data": "image-classification-symbol.json has no 'data' input",
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_bad_archive_leaves_the_previous_model_in_place(tmp_path, moto_endpoint, digits_job, monkeypatch, kind):
    from connector.control.fetch_model import FetchModelError, fetch_model

    for name, value in aws_env(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    destination = tmp_path / "model"
    fetch_model(digits_job, destination)
    inode = destination.stat().st_ino
    metadata = (destination / ".ggic-model.json").read_text()

    arn = create_job(moto_endpoint, f"fetch-corrupt-{kind}", _corrupt(kind))
    with pytest.raises(FetchModelError) as error:
        fetch_model(arn, destination)
    assert CORRUPTIONS[kind] in str(error.value)
    assert destination.stat().st_ino == inode
    assert (destination / ".ggic-model.json").read_text() == metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.ggic-fetch.lock", "model"]  # no staging left


def test_a_destination_holding_other_files_is_not_replaced(tmp_path, moto_endpoint, digits_job):
    destination = tmp_path / "home"
    destination.mkdir()
    (destination / "notes.txt").write_text("mine")
    result = fetch(aws_env(moto_endpoint), digits_job, destination)
    assert result.returncode == 1
    assert "holds files that are not a model; fetch-model replaces the whole directory" in result.stderr.decode()
    assert sorted(p.name for p in destination.iterdir()) == ["notes.txt"]


def test_without_credentials_the_reason_is_given(tmp_path, digits_job):
    result = fetch({}, digits_job, tmp_path / "model")
    assert result.returncode == 1
    assert "no AWS credentials found: fetch-model needs credentials allowed to call sagemaker:DescribeTrainingJob" \
           in result.stderr.decode()


def test_the_progress_bar_on_a_terminal():
    from connector.control.fetch_model import LogProgress, ProgressBar, progress_for

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = progress_for(terminal)
    assert isinstance(bar, ProgressBar)
    for done in range(0, 3 << 20, 1 << 18):
        bar(done, 3 << 20)
    bar(3 << 20, 3 << 20)
    text = terminal.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
    assert "[" + "#" * 30 + "] 100%  3.0/3.0 MiB" in text
    assert isinstance(progress_for(io.StringIO()), LogProgress)
