"""A registered model version, from its reference to a warm ONNX Runtime session.

- ``ModelRef`` / ``resolve_version``: ``models:/NAME@alias`` or ``models:/NAME/VERSION`` → a version number;
- ``fetch_version``: the version's ONNX model and ``class_mapping.json`` downloaded through MLflow into
  ``cache_dir/NAME/VERSION/`` (atomically; reused when present). ONNX and JSON only, never a pickle;
- ``load_model``: an ``InferenceSession`` tuned for the host, warmed up and smoke-checked against the
  class mapping → ``LoadedModel`` (a classifier), or ``LoadedDetector`` (``detector.py``) when the mapping
  says ``"task_type": "detection"``;
- ``softmax`` / ``top_k``: logits → the answers the HTTP layer returns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.errors import ModelLoadError, ModelNotFound
from loopline.registry.evaluation import softmax
from loopline.registry.registry import is_not_found, resolve_alias

if TYPE_CHECKING:
    from loopline.registry.artifacts import ModelFiles
    from loopline.serving.detector import LoadedDetector

__all__ = [
    "ClassScore",
    "LoadedModel",
    "ModelRef",
    "fetch_version",
    "load_model",
    "resolve_version",
    "softmax",
    "top_k",
]

_REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
MAPPING = "class_mapping.json"


@dataclass(frozen=True)
class ModelRef:
    """A registered model and a selector: an alias (``champion``) or a version number (``"3"``)."""

    name: str
    selector: str

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        """``models:/NAME@alias`` or ``models:/NAME/VERSION``.

        Raises:
            ModelNotFound: ``uri`` has neither form.
        """
        match = _REF.match(uri.strip())
        if not match:
            raise ModelNotFound(
                f"{uri!r} is not a model reference. To fix this, use models:/NAME@ALIAS or "
                "models:/NAME/VERSION, e.g. models:/digits@champion or models:/digits/3."
            )
        return cls(match["name"], match["alias"] or match["version"])

    @property
    def is_version(self) -> bool:
        return self.selector.isdigit()

    @property
    def uri(self) -> str:
        separator = "/" if self.is_version else "@"
        return f"models:/{self.name}{separator}{self.selector}"


def resolve_version(client: Any, name: str, selector: str) -> str:
    """The version number ``selector`` (an alias or a version number) names, through an ``MlflowClient``.

    Raises:
        ModelNotFound: the model, the version or the alias does not exist (the message lists the
            model's aliases).
    """
    from mlflow.exceptions import MlflowException

    try:
        if selector.isdigit():
            found = client.get_model_version(name, selector)
        else:
            found = resolve_alias(client, name, selector)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        found = None
    if found is None:
        what = f"version {selector}" if selector.isdigit() else f"alias @{selector}"
        raise ModelNotFound(f"Model {name!r} has no {what}: {_known(client, name)}")
    return str(found.version)


def _known(client: Any, name: str) -> str:
    """What exists instead, and how to fix the reference (for ``ModelNotFound`` messages)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return (
            f"no registered model is named {name!r}. To fix this, register one (loopline's register stage) "
            "or serve a model name that exists in this MLflow server."
        )
    aliases = ", ".join(f"@{a} → v{v}" for a, v in sorted(dict(model.aliases or {}).items())) or "none"
    return (
        f"its aliases are {aliases}. To fix this, serve one of them or a version number "
        f"(models:/{name}/VERSION), or point the alias at a version (loopline approve / register)."
    )


def fetch_version(tracking_uri: str, name: str, version: str, cache_dir: Path) -> Path:
    """``cache_dir/NAME/VERSION/`` holding the version's ``model/*.onnx`` and ``class_mapping.json``,
    downloaded from its training run (into a temporary folder, then renamed: a folder there is complete).
    A folder already there is reused without contacting MLflow.

    Raises:
        ModelNotFound: the model or version does not exist.
        ModelLoadError: the version's run lacks the files, or the download failed.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from loopline.errors import RegistryError
    from loopline.registry.artifacts import download_model_files

    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise ModelNotFound(
            f"{name!r} is not a registered model name. To fix this, use a name like 'digits'."
        )
    target = cache_dir / name / version
    if target.is_dir():
        return target
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        run_id = client.get_model_version(name, version).run_id
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        raise ModelNotFound(f"Model {name!r} has no version {version}: {_known(client, name)}") from exc
    if not run_id:
        raise ModelLoadError(
            f"Version {version} of {name!r} has no training run, so its files cannot be found. To fix this, "
            "register models through loopline's register stage (it registers runs:/<run id>/model)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}-partial-"))
    try:
        download_model_files(run_id, partial, tracking_uri)
        try:
            partial.rename(target)
        except OSError:  # another process finished the same download first: use its copy
            if not target.is_dir():
                raise
    except RegistryError as exc:
        raise ModelLoadError(f"Version {version} of {name!r} cannot be downloaded: {exc}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


@dataclass(frozen=True)
class LoadedModel:
    """A model version ready to answer: its warm session and what its outputs mean."""

    name: str
    version: str
    labels: tuple[str, ...]  # output order
    input_size: int
    session: Any  # onnxruntime.InferenceSession
    input_name: str
    output_name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N x len(labels), float32) of a preprocessed batch (N x 3 x S x S)."""
        inputs = np.ascontiguousarray(batch, dtype=np.float32)
        outputs = self.session.run([self.output_name], {self.input_name: inputs})
        return np.asarray(outputs[0], dtype=np.float32)


def read_model_files(folder: Path) -> ModelFiles:
    """The ONNX file and class mapping of a version folder as ``fetch_version`` leaves it (no splits).

    Raises:
        ModelLoadError: a file is missing or the class mapping is malformed."""
    from loopline.registry.artifacts import ModelFiles

    labels, input_size = _read_mapping(folder / MAPPING)
    return ModelFiles(_find_onnx(folder), labels, input_size, {})


def load_model(
    folder: Path, name: str, version: str, threads: int | None = None
) -> LoadedModel | LoadedDetector:
    """The model in ``folder`` (``model/*.onnx`` and ``class_mapping.json``, as ``fetch_version`` leaves
    them) in an ONNX Runtime session: ``threads`` intra-op threads (default: every CPU but one), CUDA first
    when this onnxruntime build has it, all graph optimisations; warmed up and checked on a zero batch (a
    zero image for a detector).

    Raises:
        ModelLoadError: a file is missing or corrupt, or the class mapping does not fit the model.
    """
    detector_labels = _detector_labels(folder / MAPPING)
    if detector_labels is not None:
        from loopline.serving.detector import load_detector

        onnx = _find_onnx(folder)
        return load_detector(onnx, _open_session(onnx, threads), name, version, detector_labels)
    labels, input_size = _read_mapping(folder / MAPPING)
    onnx = _find_onnx(folder)
    session = _open_session(onnx, threads)
    model = LoadedModel(
        name=name,
        version=version,
        labels=labels,
        input_size=input_size,
        session=session,
        input_name=session.get_inputs()[0].name,
        output_name=session.get_outputs()[0].name,
    )
    _smoke_check(model, onnx)
    return model


def _detector_labels(path: Path) -> tuple[str, ...] | None:
    """A detector's labels when the class mapping says ``"task_type": "detection"``, else None (a
    classifier's mapping, or one ``_read_mapping`` then reports as unreadable)."""
    try:
        mapping = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(mapping, dict) or mapping.get("task_type") != "detection":
        return None
    labels = mapping.get("labels")
    if not isinstance(labels, list) or not labels or len(set(map(str, labels))) != len(labels):
        raise ModelLoadError(
            f'The class mapping {path} of a detector needs "labels": a list of distinct names, one per class '
            f"(class id i + 1 is labels[i]); it has {labels!r}. To fix this, re-register the detector with "
            "the mapping it was trained with."
        )
    return tuple(str(label) for label in labels)


def _read_mapping(path: Path) -> tuple[tuple[str, ...], int]:
    fix = f"To fix this, re-download the version (delete {path.parent}) or re-register the model."
    try:
        mapping = json.loads(path.read_text())
        labels = tuple(str(label) for label in mapping["labels"])
        input_size = int(mapping["input_size"])
    except FileNotFoundError as exc:
        raise ModelLoadError(f"The class mapping {path} is missing. {fix}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f'The class mapping {path} is not {{"labels": [...], "input_size": N}} '
            f"({type(exc).__name__}: {exc}). {fix}"
        ) from exc
    if len(labels) < 2 or input_size < 1:
        raise ModelLoadError(
            f"The class mapping {path} has labels {list(labels)} and input size {input_size}; a model needs "
            f"at least 2 labels and a positive size. {fix}"
        )
    return labels, input_size


def _find_onnx(folder: Path) -> Path:
    found = sorted((folder / "model").glob("*.onnx"))
    if not found:
        raise ModelLoadError(
            f"No ONNX model in {folder / 'model'}. To fix this, delete {folder} so the version is downloaded "
            "again, or retrain with loopline's train stage (it logs model/<name>.onnx)."
        )
    return found[0]


def execution_providers() -> list[str]:
    """The providers this onnxruntime build offers that loopline uses: CUDA first when present, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def default_threads(workers: int = 1) -> int:
    """ONNX Runtime's intra-op threads when none are set: each of ``workers`` server processes gets its
    share of the CPUs but one, which its HTTP event loop (parsing, decoding, answers) keeps; at least one."""
    return max(1, (os.cpu_count() or 1) // workers - 1)


def _open_session(onnx: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    # Idle intra-op threads sleep instead of spinning: the HTTP event loop shares these cores (spinning
    # took 1.5x the CPU per request at concurrency 32 on 2 cores, for no faster answers).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(onnx), sess_options=options, providers=execution_providers())
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf, Fail, NoSuchFile, … classes
        raise ModelLoadError(
            f"ONNX Runtime cannot load {onnx} ({type(exc).__name__}: {exc}). To fix this, delete "
            f"{onnx.parent.parent} so the version is downloaded again; if it persists, re-export and "
            "re-register the model."
        ) from exc


def _smoke_check(model: LoadedModel, onnx: Path) -> None:
    """Warm-up inference on a zero batch: finite logits, one per label."""
    zeros = np.zeros((1, 3, model.input_size, model.input_size), dtype=np.float32)
    try:
        logits = model.predict(zeros)
    except Exception as exc:  # onnxruntime errors: wrong input rank or size, unsupported operators, …
        raise ModelLoadError(
            f"{onnx} fails on a 1 x 3 x {model.input_size} x {model.input_size} input ({type(exc).__name__}: "
            f"{exc}). To fix this, check that class_mapping.json's input_size matches the exported model."
        ) from exc
    expected = (1, len(model.labels))
    if logits.shape != expected:
        raise ModelLoadError(
            f"{onnx} answers {logits.shape[-1] if logits.ndim else '?'} outputs per image but "
            f"class_mapping.json lists {len(model.labels)} labels {list(model.labels)} (logits shape "
            f"{logits.shape}, expected {expected}). To fix this, register the model with the class mapping "
            "it was trained with."
        )
    if not np.isfinite(logits).all():
        raise ModelLoadError(
            f"{onnx} gives non-finite logits on a zero image. To fix this, retrain or re-export the model."
        )


@dataclass(frozen=True)
class ClassScore:
    label: str
    probability: float


def top_k(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[ClassScore]:
    """The ``k`` most probable labels of one image (``probabilities``: one row of ``softmax``), most
    probable first; ties keep the label order. ``k`` above the number of labels returns them all."""
    if probabilities.ndim != 1 or len(probabilities) != len(labels):
        raise ValueError(
            f"top_k takes one image's {len(labels)} probabilities, got shape {probabilities.shape}."
        )
    if k < 1:
        raise ValueError(f"top_k needs k >= 1, got {k}.")
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [ClassScore(labels[i], float(probabilities[i])) for i in order]
