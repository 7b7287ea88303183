"""Domain errors. Each message says what was wrong, the value, and how to fix it."""

from __future__ import annotations


class LooplineError(Exception):
    """Base class for errors a user can act on."""


class SourceNotFound(LooplineError):
    """The folder or bucket/prefix to collect from does not exist."""


class EmptySource(LooplineError):
    """The source exists but holds no files."""


class SourceAccessDenied(LooplineError):
    """The source exists but the credentials cannot read it."""


class SourceUnreachable(LooplineError, ConnectionError):
    """The source's server does not answer (a connection problem: retried like one, then reported)."""


class DataRootNotWritable(LooplineError):
    """The data root cannot be written (permissions, missing bucket, bad credentials)."""


class DataRootUnavailable(LooplineError, ConnectionError):
    """The S3 server of the data root could not be reached (transient: worth a retry)."""


class StoredImageMissing(LooplineError):
    """An image a manifest points at cannot be read from the data root."""


class ServiceError(LooplineError):
    """A local service could not be started, reached or stopped."""


class LabelConfigMismatch(LooplineError):
    """A Label Studio label config (or a prediction) does not fit the task type and label set."""


class QualityGateFailed(LooplineError):
    """Labels (or a model) failed a quality gate; the message lists every violated rule."""


class LabelStudioError(LooplineError):
    """Label Studio refused a request, is unreachable, or rejected the token."""


class LabelStudioUnavailable(LabelStudioError):
    """Label Studio could not be reached (worth a retry)."""


class ProjectMissing(LabelStudioError):
    """The Label Studio project was deleted or never existed."""


class ApprovalError(LooplineError):
    """An approval could not be sent: the run is not waiting, or the input does not fit."""


class TrainingDataError(LooplineError):
    """The labeled data cannot train a model (too few labels, a class missing from a split, …)."""


class CheckpointError(LooplineError):
    """A checkpoint cannot be read or does not fit the model."""


class RegistryError(LooplineError):
    """A registry operation could not be done (invalid name, version not ready, incomparable models)."""


class InvalidImage(LooplineError):
    """An uploaded image is empty, too large, or not a decodable image."""


class ModelNotFound(LooplineError):
    """A model name, version or alias does not exist in the registry."""


class ModelLoadError(LooplineError):
    """A model's files are missing, corrupt, or do not fit each other (ONNX output vs class mapping)."""


class QueueFull(LooplineError):
    """The model server's request queue is full; the client should retry later."""


class ReferencesUnavailable(LooplineError):
    """Retention cannot read what is still referenced (a registry or manifest cannot be read): it deletes
    nothing rather than guess."""


class DetectorExportRefused(LooplineError):
    """A detector could not be exported to ONNX faithfully (export failed, the graph fixes the image size,
    or ONNX Runtime's detections differ from PyTorch's); the message names the reason."""
