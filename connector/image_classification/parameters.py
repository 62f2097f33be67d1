"""The connector's own view of its parameters: what Greengrass passes as same-named environment variables, checked
against the connector's schema in the catalog (the same check as when a definition is created, so a bad value is
refused with every problem at once) and typed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Optional

from connector.contract.catalog import (
    FEEDBACK_CONNECTOR,
    FEEDBACK_PARAMETER,
    GPU_PARAMETER,
    JOB_ARN_PARAMETER,
    SERVICE_NAME_PARAMETER,
    all_parameter_names,
    catalog_entry,
    check_parameters,
    match_arn,
    unknown_arn_message,
)
from connector.contract.environment import CONNECTOR_ARN_ENV, CONNECTOR_ID_ENV
from connector.contract.problems import INVALID_CONNECTOR_ARN, detail
from connector.contract.schemas import validator
from connector.image_classification.errors import ConfigurationError

logger = logging.getLogger(__name__)

# Without an ARN (a real Greengrass group) we can only guess the connector from the parameters themselves.
_DEFAULT_CONNECTOR = ("ImageClassificationx86-64", 2)
_DEFAULT_GPU_CONNECTOR = ("ImageClassificationAarch64JTX2", 2)


@dataclass(frozen=True)
class ImageClassificationParameters:
    """Validated, typed connector configuration as the running connector uses it."""

    model_destination_path: str
    model_resource_id: str
    sagemaker_job_arn: str
    service_name: str
    timeout_seconds: int
    memory_limit_kb: int
    gpu_acceleration: str = "CPU"
    feedback_config_id: Optional[str] = None
    connector_arn: Optional[str] = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> "ImageClassificationParameters":
        """Read the parameters Greengrass passes as same-named environment variables, validating them.

        The connector ARN comes from ``GGIC_CONNECTOR_ARN`` when our runtime hosts the connector; a real core
        does not set it, so then the x86-64 version 2 schema applies, or the JTX2 version 2 schema when
        GPUAcceleration is set.  An empty MLFeedbackConnectorConfigId means no feedback and becomes None.
        Raises ConfigurationError listing every problem (also kept as ``error_details`` on the exception).
        """
        arn = environ.get(CONNECTOR_ARN_ENV) or None
        if arn is not None:
            found = match_arn(arn)
            if found is None or found[0].name == FEEDBACK_CONNECTOR:
                message = unknown_arn_message(f"Environment variable {CONNECTOR_ARN_ENV}", arn,
                                               "an ML Image Classification")
                error = ConfigurationError(message)
                error.error_details = [detail(INVALID_CONNECTOR_ARN, message)]
                raise error
            entry = found[0]
        else:
            entry = catalog_entry(*(_DEFAULT_GPU_CONNECTOR if GPU_PARAMETER in environ else _DEFAULT_CONNECTOR))

        names = list(validator(entry.schema_file).schema["properties"])
        ignored = sorted(n for n in all_parameter_names() - set(names) if n in environ)
        if ignored:
            logger.warning("Ignoring environment variables %s: not parameters of %s version %d",
                           ", ".join(ignored), entry.name, entry.version)
        connector_id = environ.get(CONNECTOR_ID_ENV)
        subject = (f"Connector {connector_id!r} ({entry.name} version {entry.version}, environment)" if connector_id
                   else f"Connector {entry.name} version {entry.version} (environment)")
        result = check_parameters(subject, entry, {n: environ[n] for n in names if n in environ})
        for warning in result.warnings:
            logger.warning("%s", warning)
        if result.details:
            count = len(result.details)
            message = (f"Invalid connector configuration: {count} problem{'s' if count != 1 else ''}\n"
                       + "\n".join(f"  - [{d['DetailedErrorCode']}] {d['DetailedErrorMessage']}"
                                   for d in result.details))
            error = ConfigurationError(message)
            error.error_details = result.details
            raise error

        params = result.parameters
        return cls(
            model_destination_path=params["MLModelDestinationPath"],
            model_resource_id=params["MLModelResourceId"],
            sagemaker_job_arn=params[JOB_ARN_PARAMETER],
            service_name=params[SERVICE_NAME_PARAMETER],
            timeout_seconds=int(params["LocalInferenceServiceTimeoutSeconds"]),
            memory_limit_kb=int(params["LocalInferenceServiceMemoryLimitKB"]),
            gpu_acceleration=params.get(GPU_PARAMETER, "CPU"),
            feedback_config_id=params.get(FEEDBACK_PARAMETER) or None,
            connector_arn=arn,
        )


def positive_setting(environ: Mapping[str, str], name: str, what: str = "a positive whole number") -> Optional[int]:
    """A ggic setting passed as an environment variable (`GGIC_*`): a whole number of 1 or more, or None when unset;
    anything else is a start-up error naming the variable."""
    text = environ.get(name) or ""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"{name}={text!r} is not {what}")
    return int(text)
