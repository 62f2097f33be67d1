"""The image classification inference service, in the handler shape model servers use:
initialize (find and load the model) → preprocess (bytes → tensor) → inference (tensor → probabilities) →
postprocess (probabilities → the connector's answer).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from connector.contract.environment import MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_SCANS_ENV, MODEL_CACHE_ENV
from connector.image_classification import artifact, imaging, training_job
from connector.image_classification.engines import engine_class, engine_from_environment
from connector.image_classification.model import ClassifierModel, InputShape, resolve_input_shape
from connector.image_classification.parameters import ImageClassificationParameters
from connector.contract.catalog import training_job_name

log = logging.getLogger(__name__)

RESPONSE_CONTENT_TYPE = "application/json"


def format_probabilities(probabilities: np.ndarray) -> str:
    """`[p0,p1,...]`: no spaces, each value the shortest text that reads back as the same float32."""
    return "[" + ",".join(map(str, probabilities.astype(np.float32, copy=False))) + "]"


class ImageClassificationService:
    def __init__(self, parameters: ImageClassificationParameters) -> None:
        self.parameters = parameters
        self.model: Optional[ClassifierModel] = None
        # Not a connector parameter (the schema has none): `ggic run --max-image-pixels` sets it for the process.
        # The connector's process has checked each request against the memory-derived limits already
        # (`decode_budget.py`); the worker keeps these outer bounds of its own.
        self.max_pixels = int(os.environ.get(MAX_IMAGE_PIXELS_ENV) or imaging.DEFAULT_MAX_IMAGE_PIXELS)
        self.max_scans = int(os.environ.get(MAX_IMAGE_SCANS_ENV) or imaging.DEFAULT_MAX_IMAGE_SCANS)

    @property
    def shape(self) -> InputShape:
        assert self.model is not None, "initialize() first"
        return self.model.shape

    def initialize(self) -> None:
        started = time.monotonic()
        params = self.parameters
        cache = os.environ.get(MODEL_CACHE_ENV)
        found = artifact.locate(Path(params.model_destination_path), Path(cache) if cache else None)
        log.info("model artifact: %s", found.describe())

        region = params.sagemaker_job_arn.split(":")[3]
        job = training_job.describe(region, training_job_name(params.sagemaker_job_arn))
        if job is not None:
            job.check()
        shape = resolve_input_shape(found, job)
        log.info("input shape %s chosen from %s", shape, shape.source)

        engine = engine_from_environment()
        log.info("inference engine: %s", engine)
        self.model = engine_class(engine.name)(found, shape, params.gpu_acceleration)
        expected = job.hyperparameter("num_classes") if job else None
        if expected and expected.isdigit() and int(expected) != self.model.num_classes:
            log.warning("the training job says num_classes=%s but the model outputs %d values",
                        expected, self.model.num_classes)
        log.info("service %s ready in %.2f s", params.service_name, time.monotonic() - started)

    def warm_up(self) -> None:
        """One forward on a blank image: MXNet allocates lazily, so the first request would pay for it."""
        shape = self.shape
        self.inference(np.zeros((1, shape.channels, shape.height, shape.width), dtype=np.float32))

    def preprocess(self, body: bytes, content_type: Optional[str]) -> np.ndarray:
        shape = self.shape
        return imaging.preprocess(body, content_type, shape.height, shape.width, shape.channels,
                                  max_pixels=self.max_pixels, max_scans=self.max_scans)

    def inference(self, tensor: np.ndarray) -> np.ndarray:
        assert self.model is not None, "initialize() first"
        return self.model.predict(tensor)

    def postprocess(self, probabilities: np.ndarray) -> Dict[str, str]:
        return {"Body": format_probabilities(probabilities), "ContentType": RESPONSE_CONTENT_TYPE}

    def handle(self, body: bytes, content_type: Optional[str]) -> Dict[str, str]:
        return self.postprocess(self.inference(self.preprocess(body, content_type)))
