"""The connector hosted natively by our runtime: the catalog's `hosted` entry point,
`connector.image_classification.hosting:create`.

The runtime hands each invocation to `InferenceEndpoint.handle` in its own process, so a request crosses no
function process and no Lambda-protocol exchange on its way to the inference worker. Everything else is as under a
Greengrass core (`handler.py`): the same parameters, checked the same way, the same supervisor and workers.
"""

from __future__ import annotations

from connector.contract import logformat
from connector.contract.catalog import FEEDBACK_CONNECTOR, catalog_entry
from connector.contract.hosting import HostServices
from connector.image_classification.endpoint import InferenceEndpoint
from connector.image_classification.feedback_forwarder import invoke_sender
from connector.image_classification.parameters import ImageClassificationParameters
from connector.image_classification.supervisor import workers_from_environment


def create(services: HostServices) -> InferenceEndpoint:
    """Check the parameters, start the inference workers and wait for the model (ConnectorStartError says why
    not)."""
    environment = services.environment()
    parameters = ImageClassificationParameters.from_environment(environment)
    logformat.prefix_logger(services.log, parameters.service_name)
    feedback_arn = (f"arn:aws:lambda:{services.region}:aws:function:"
                    f"{catalog_entry(FEEDBACK_CONNECTOR, 1).function_name_template}")
    return InferenceEndpoint.start(parameters, environment, workers_from_environment(environment),
                                   invoke_sender(services.invoke, feedback_arn), logger=services.log,
                                   capture_output=services.capture_output)
