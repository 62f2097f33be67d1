"""AWS on a real moto_server for the tests: boto3 clients, training jobs and their model artifacts.

moto creates a job with the AlgorithmSpecification and HyperParameters it is given and reports it `Completed`
at once; it does not write the artifact, so `create_job` uploads one where moto says it is
(`ModelArtifacts.S3ModelArtifacts`). Another status can only be set on a moto running in this process
(`ThreadedMotoServer`): see `set_status`.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Dict, Optional

import boto3

from bench.material import DIGITS_MODEL

IC_IMAGE = "433757028032.dkr.ecr.us-west-2.amazonaws.com/image-classification:1"
XGBOOST_IMAGE = "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.7-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-west-2"}
BUCKET = "sagemaker-ggic-models"
DIGITS_HYPERPARAMETERS = {"image_shape": "3,28,28", "num_classes": "10", "num_layers": "20"}
SYMBOL = "image-classification-symbol.json"
PARAMS = "image-classification-0006.params"


def aws_env(endpoint: str) -> Dict[str, str]:
    """What a process needs to reach moto through the standard AWS settings."""
    return dict(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)


def client(service: str, endpoint: str):
    """A boto3 client of moto_server at `endpoint`, with the tests' region and credentials."""
    return boto3.client(service, endpoint_url=endpoint, region_name=CREDENTIALS["AWS_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def clients(endpoint: str):
    return client("sagemaker", endpoint), client("s3", endpoint)


def create_job(endpoint: str, name: str, artifact: Optional[bytes], image: str = IC_IMAGE,
               hyperparameters: Optional[Dict[str, str]] = None) -> str:
    """A training job (moto: Completed) whose model.tar.gz holds `artifact`; its ARN."""
    sagemaker, s3 = clients(endpoint)
    try:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass
    response = sagemaker.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        HyperParameters=dict(DIGITS_HYPERPARAMETERS if hyperparameters is None else hyperparameters),
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        StoppingCondition={"MaxRuntimeInSeconds": 3600})
    if artifact is not None:
        upload(endpoint, name, artifact)
    return response["TrainingJobArn"]


def artifact_key(name: str) -> str:
    return f"output/{name}/output/model.tar.gz"


def upload(endpoint: str, name: str, artifact: bytes) -> str:
    """(Re)place the job's model.tar.gz; its new ETag."""
    _, s3 = clients(endpoint)
    return s3.put_object(Bucket=BUCKET, Key=artifact_key(name), Body=artifact)["ETag"]


def head_etag(endpoint: str, name: str) -> str:
    return clients(endpoint)[1].head_object(Bucket=BUCKET, Key=artifact_key(name))["ETag"]


def set_status(name: str, status: str) -> None:
    """Only for a moto in this process: moto reports every job Completed and has no API to change that."""
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends["123456789012"]["us-west-2"].training_jobs[name].training_job_status = status


def tar_gz(files: Dict[str, bytes], links: Dict[str, str] = None) -> bytes:
    """A flat gzip tarball, like a SageMaker job's model.tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def digits_files(with_shapes: bool = True) -> Dict[str, bytes]:
    names = [SYMBOL, PARAMS] + (["model-shapes.json"] if with_shapes else [])
    return {name: (DIGITS_MODEL / name).read_bytes() for name in names}


def shifted_digits_files(directory: Path) -> Dict[str, bytes]:
    """The digits model with its output classes rotated by one (fc1 rows rolled): it answers d+1 mod 10 where
    the original answers d, so a test can tell which of the two models served a request."""
    import mxnet as mx

    params = mx.nd.load(str(DIGITS_MODEL / PARAMS))
    order = mx.nd.array([(k - 1) % 10 for k in range(10)], dtype="int64")
    for key in ("arg:fc1_weight", "arg:fc1_bias"):
        params[key] = mx.nd.take(params[key], order, axis=0)
    path = directory / PARAMS
    mx.nd.save(str(path), params)
    return dict(digits_files(), **{PARAMS: path.read_bytes()})
