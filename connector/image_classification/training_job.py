"""What the connector learns from SageMaker DescribeTrainingJob: the training `image_shape`, and that the job
really is a Completed run of the built-in image-classification algorithm.

The group role grants `sagemaker:DescribeTrainingJob`, so the original connector called it on the device. Off AWS
(no credentials, no network) the call is skipped quickly: credentials are resolved without waiting on the instance
metadata service for long, and the call itself has short timeouts and no retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from connector.image_classification.errors import TrainingJobError

log = logging.getLogger(__name__)

IMAGE_CLASSIFICATION_REPOSITORY = "image-classification"
CONNECT_TIMEOUT_S = 2
READ_TIMEOUT_S = 5


@dataclass(frozen=True)
class TrainingJob:
    name: str
    status: str
    training_image: str
    hyperparameters: Dict[str, str] = field(default_factory=dict)

    @property
    def uses_image_classification(self) -> bool:
        """`<account>.dkr.ecr.<region>.amazonaws.com/image-classification:<tag>`, whatever account, region, tag."""
        path = self.training_image.split("/", 1)[-1] if "/" in self.training_image else self.training_image
        repository = path.split("@", 1)[0].rsplit(":", 1)[0]
        return repository == IMAGE_CLASSIFICATION_REPOSITORY

    def hyperparameter(self, name: str) -> Optional[str]:
        value = self.hyperparameters.get(name)
        if value is None:
            return None
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':  # Framework estimators JSON-encode values
            value = value[1:-1]
        return value

    def image_shape(self) -> Optional[Tuple[int, int, int]]:
        text = self.hyperparameter("image_shape")
        if not text:
            return None
        try:
            channels, height, width = (int(part) for part in text.split(","))
        except ValueError:
            log.warning("training job %s has an unreadable image_shape %r; ignoring it", self.name, text)
            return None
        return channels, height, width

    def check(self) -> None:
        """Refuse a job that cannot have produced the model this connector serves."""
        if not self.uses_image_classification:
            raise TrainingJobError(
                f"training job {self.name} used {self.training_image or 'no training image'}, not the SageMaker "
                f"image-classification algorithm: this connector serves only models that algorithm trained")
        if self.status != "Completed":
            raise TrainingJobError(
                f"training job {self.name} is {self.status}, not Completed: it has no final model to serve")


def describe(region: str, name: str) -> Optional[TrainingJob]:
    """DescribeTrainingJob, or None (with the reason in the log) when SageMaker cannot be reached."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
        import botocore.session
    except ImportError:
        log.info("boto3 is not installed: skipping DescribeTrainingJob")
        return None
    core_session = botocore.session.get_session()
    # Do not stall start-up on the instance metadata service when no credentials are configured.
    core_session.set_config_variable("metadata_service_timeout", 1)
    core_session.set_config_variable("metadata_service_num_attempts", 1)
    session = boto3.session.Session(botocore_session=core_session, region_name=region)
    try:
        if session.get_credentials() is None:
            log.info("no AWS credentials: skipping DescribeTrainingJob for %s", name)
            return None
        client = session.client("sagemaker", config=botocore.config.Config(
            connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, retries={"max_attempts": 1}))
        response = client.describe_training_job(TrainingJobName=name)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        log.warning("DescribeTrainingJob %s failed (%s: %s): continuing without it", name,
                    error.get("Code"), error.get("Message"))
        return None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        log.warning("SageMaker is unreachable (%s): skipping DescribeTrainingJob for %s", exc, name)
        return None
    algorithm = response.get("AlgorithmSpecification") or {}
    return TrainingJob(
        name=response.get("TrainingJobName", name),
        status=response.get("TrainingJobStatus", ""),
        training_image=algorithm.get("TrainingImage") or algorithm.get("AlgorithmName") or "",
        hyperparameters=response.get("HyperParameters") or {},
    )
