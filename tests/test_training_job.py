"""DescribeTrainingJob against a real moto_server on 127.0.0.1, through the standard AWS endpoint settings."""

from __future__ import annotations

import shutil
import socket

import sagemaker_jobs
from bench.harness import GGICRuntime, connector_entry
from bench.material import photos
from conftest import free_port
from sagemaker_jobs import CREDENTIALS, IC_IMAGE, XGBOOST_IMAGE

SERVICE = "GG-ML-INF-image-classification-imageClassification"


def create_job(endpoint: str, name: str, image: str, hyperparameters: dict) -> str:
    """A training job without a model artifact: these tests read only its description."""
    return sagemaker_jobs.create_job(endpoint, name, None, image, hyperparameters)


def runtime_for(tmp_path, model, job_arn: str, env: dict) -> GGICRuntime:
    return GGICRuntime(tmp_path / "state", [connector_entry(model, job_arn=job_arn)], extra_env=env)


def test_image_shape_of_the_training_job_wins(tmp_path, moto_endpoint, digits_model, sdk_env):
    # A model without model-shapes.json: the job's image_shape is the only source (it could not disagree).
    model = tmp_path / "model"
    model.mkdir()
    for path in digits_model.glob("image-classification-*"):
        shutil.copy(path, model / path.name)
    arn = create_job(moto_endpoint, "digits-32", IC_IMAGE,
                     {"image_shape": "3,32,32", "num_classes": "10", "num_layers": "20"})
    env = dict(CREDENTIALS, AWS_ENDPOINT_URL_SAGEMAKER=moto_endpoint)
    with runtime_for(tmp_path, model, arn, env) as rt:
        log = rt.log_of(SERVICE)
        assert "input shape 3,32,32 chosen from training job digits-32 hyperparameter image_shape" in log
        sdk_env(rt)
        import greengrass_machine_learning_sdk as ml

        response = ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName="imageClassification", ContentType="image/png",
            Body=photos()["camera"][1])
        assert response["Body"].read().count(b",") == 9


def test_a_job_whose_image_shape_disagrees_with_model_shapes_is_refused_naming_both(tmp_path, moto_endpoint,
                                                                                      digits_model):
    # The digits model says 3,28,28 in its model-shapes.json; this job says 3,224,224: another job's model.
    arn = create_job(moto_endpoint, "imagenet-224", IC_IMAGE,
                     {"image_shape": "3,224,224", "num_classes": "1000", "num_layers": "18"})
    env = dict(CREDENTIALS, AWS_ENDPOINT_URL_SAGEMAKER=moto_endpoint)
    rt = runtime_for(tmp_path, digits_model, arn, env).start(expect_ready=False)
    try:
        assert rt.wait_exit() != 0
        output = rt.output()
        assert "InputShapeMismatchError" in output
        assert "training job imagenet-224 (MLModelSageMakerJobArn) has image_shape 3,224,224" in output
        assert f"{digits_model / 'model-shapes.json'} says 3,28,28" in output
        assert "set MLModelSageMakerJobArn to the job that trained it" in output
    finally:
        rt.stop()


def test_a_job_of_another_algorithm_is_refused_at_start(tmp_path, moto_endpoint, digits_model):
    arn = create_job(moto_endpoint, "not-image-classification", XGBOOST_IMAGE, {"num_round": "10"})
    env = dict(CREDENTIALS, AWS_ENDPOINT_URL_SAGEMAKER=moto_endpoint)
    rt = runtime_for(tmp_path, digits_model, arn, env).start(expect_ready=False)
    try:
        assert rt.wait_exit() != 0
        assert "not the SageMaker image-classification algorithm" in rt.output()
        assert "failed to start" in rt.output()
    finally:
        rt.stop()


def test_an_unreachable_sagemaker_is_skipped_and_model_shapes_used(tmp_path, digits_model):
    closed = free_port()  # nothing listens there
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", closed)) != 0
    env = dict(CREDENTIALS, AWS_ENDPOINT_URL_SAGEMAKER=f"http://127.0.0.1:{closed}")
    arn = "arn:aws:sagemaker:us-west-2:123456789012:training-job/digits"
    with runtime_for(tmp_path, digits_model, arn, env) as rt:
        log = rt.log_of(SERVICE)
        assert "SageMaker is unreachable" in log
        assert "input shape 3,28,28 chosen from" in log and "model-shapes.json" in log


def test_without_credentials_describe_is_skipped(tmp_path, digits_model):
    arn = "arn:aws:sagemaker:us-west-2:123456789012:training-job/digits"
    with runtime_for(tmp_path, digits_model, arn, {}) as rt:
        assert "no AWS credentials: skipping DescribeTrainingJob for digits" in rt.log_of(SERVICE)
