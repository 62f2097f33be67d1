"""Errors the connector raises, one class per reason a caller or operator must tell apart.

Request errors (`RequestError` and subclasses) are reported to the caller as a *Handled* function error, which
the ML SDK turns into `GreengrassInferenceException`; the service keeps serving.  Start-up errors
(`ConnectorStartError` and subclasses) stop the connector before it accepts work, with a message that says why.
"""

from typing import Optional


class ConnectorError(Exception):
    """Base class of every error the connector raises on purpose."""


# --- request errors: one request fails, the service goes on -------------------------------------------------

class RequestError(ConnectorError):
    """A request the connector refuses; `reason` is a short machine-readable tag (used in logs and metrics).

    `expected` tells the Lambda runtime loop this is a refused request, not a bug: no traceback is logged.
    """

    reason = "bad-request"
    expected = True


class UnsupportedContentTypeError(RequestError):
    reason = "unsupported-content-type"


class EmptyBodyError(RequestError):
    reason = "empty-body"


class ContentMismatchError(RequestError):
    """The bytes are not in the format the ContentType names."""

    reason = "content-mismatch"


class ImageDecodeError(RequestError):
    reason = "undecodable-image"


class InvalidImageHeaderError(ImageDecodeError):
    """The header that gives the image's size is missing, truncated or claims no pixels (found before decoding)."""

    reason = "invalid-image-header"


class ImageTooLargeError(RequestError):
    """The image (by its header, before decoding) has more pixels than the connector will decode."""

    reason = "image-too-large"


class TooManyScansError(RequestError):
    """A JPEG (by its markers, before decoding) has more scans than the connector will decode: each is a pass over
    the whole image."""

    reason = "too-many-scans"


# --- request errors the inference worker's supervisor reports: the request failed, the worker is replaced ------

class InferenceError(RequestError):
    """The engine failed on an input that passed every check (logged with its traceback by the worker)."""

    reason = "inference-failed"


class InferenceTimeoutError(RequestError):
    """The request was not answered within LocalInferenceServiceTimeoutSeconds of its arrival (its deadline passed
    in the queue, or while a worker ran it), or its inference ran longer than that and the worker was stopped."""

    reason = "timeout"


class ServiceBusyError(RequestError):
    """Load shedding: the request's wait for a worker plus one measured inference would pass its deadline, so it
    is refused at once, before any worker runs it."""

    reason = "busy"


class MemoryLimitExceededError(RequestError):
    """The inference worker went over LocalInferenceServiceMemoryLimitKB while it held this request."""

    reason = "memory-limit"


class WorkerCrashedError(RequestError):
    """The inference worker died (a signal, a native crash) while it held this request."""

    reason = "worker-crashed"


def error_class(name: object, base: type, default: Optional[type]) -> Optional[type]:
    """The error class of this module called `name` if it is a `base`, else `default`: how an error's type name,
    sent as text by the inference worker or a function, becomes an exception or a reason again."""
    found = globals().get(str(name))
    return found if isinstance(found, type) and issubclass(found, base) else default


# --- start-up errors: the connector does not start ----------------------------------------------------------

class ConnectorStartError(ConnectorError):
    """The connector cannot start with this configuration or on this machine."""


class ConfigurationError(ConnectorStartError):
    """A connector parameter (delivered as an environment variable) is missing or invalid."""


class ModelArtifactError(ConnectorStartError):
    """The model files at MLModelDestinationPath are missing, ambiguous or unreadable."""


class UnsafeArchiveError(ModelArtifactError):
    """A model.tar.gz member would land outside the extraction directory or is not a plain file/directory."""


class ParamsFormatError(ModelArtifactError):
    """The `.params` file is not an MXNet NDArray list the converter can read (truncated, corrupt, sparse storage,
    a dtype numpy lacks)."""


class UnsupportedOperatorError(ModelArtifactError):
    """The symbol uses an operator (or an operator setting) that the ONNX converter does not translate; the message
    names the operator and the node."""


class InputShapeMismatchError(ModelArtifactError):
    """The training job's image_shape and the artifact's model-shapes.json disagree: the model at
    MLModelDestinationPath was not trained by the job that MLModelSageMakerJobArn names."""


class ArchiveLimitExceededError(UnsafeArchiveError):
    """A model.tar.gz holds more than an extraction limit allows (members, bytes, compression ratio); `limit` names
    the limit's environment variable and `member` the member being extracted when it was reached."""

    def __init__(self, message: str, limit: str = "", member: str = "") -> None:
        super().__init__(message)
        self.limit = limit
        self.member = member


class TrainingJobError(ConnectorStartError):
    """DescribeTrainingJob answered, and the job cannot have produced a usable image-classification model."""


class AcceleratorUnavailableError(ConnectorStartError):
    """GPUAcceleration=GPU was asked for and this machine or the engine's build cannot provide it."""


class EngineUnavailableError(ConfigurationError):
    """The engine asked for (`--engine`, GGIC_ENGINE), or every engine this platform could use, cannot run on this
    machine."""


class MemoryLimitTooSmallError(ConfigurationError):
    """LocalInferenceServiceMemoryLimitKB is below what the loaded model needs."""


class WorkerStartError(ConnectorStartError):
    """The inference worker process could not be started or died while loading the model."""
