"""Lineage: from a served request (or a registered model version) back to the labels, the people and the
images that trained the model answering it, by following what each stage records:

    request (event store: the version that answered, the experiment → the model's name)
    → model version (MLflow registry: its lineage tags, set by the register stage)
    → training run (MLflow: params and tags, the Optuna study's name and storage)
    → labeled manifest (``labels/<version>.jsonl`` under the data root: every label and annotation)
    → Label Studio projects and exports (the rows' ids), annotators and their agreement
    → dataset versions (``manifests/<version>.jsonl``) → the images' content hashes and sources.

The walk is pure over small reader interfaces (``EventReader``, ``RegistryReader``, ``DataReader``,
``AnnotatorDirectory``; the real ones are in ``lineage_readers.py``). A start that cannot be found is a
``LineageError``; a link that cannot be followed later (a server down, a manifest deleted) is a
``BrokenLink`` naming the step and why, and the walk goes on wherever another recorded link still leads.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from loopline.data.labeled import LabeledRow
from loopline.data.manifest import ManifestRow
from loopline.errors import LooplineError

StepName = Literal["request", "model", "training", "labels", "label_studio", "dataset", "images"]
DEFAULT_MODEL = "loopline-classifier"


class LineageError(LooplineError):
    """The start of the chain cannot be found (an unknown request id, model version or alias)."""


class LinkBroken(LooplineError):
    """A reader could not follow one link: the walk records why and goes on where it can."""


@dataclass(frozen=True)
class Query:
    kind: Literal["request", "version", "alias"]
    text: str
    model: str = ""
    ref: str = ""  # the request id, version number or alias


_VERSION = re.compile(r"^[0-9]+$")


def parse_query(text: str, default_model: str = DEFAULT_MODEL) -> Query:
    """``MODEL@ALIAS``, ``MODEL/VERSION``, ``VERSION`` (of ``default_model``), ``request:ID`` or a request
    id (anything else: the router's ``X-Request-Id``)."""
    text = text.strip()
    if not text:
        raise LineageError(
            "Nothing to trace. Examples: loopline lineage 3f2a…(a request id from X-Request-Id), "
            "loopline lineage loopline-classifier@champion, loopline lineage loopline-classifier/3, "
            "loopline lineage 3"
        )
    if text.startswith("request:"):
        return Query("request", text, ref=text.removeprefix("request:"))
    if "@" in text:
        model, alias = text.split("@", 1)
        if model and alias:
            return Query("alias", text, model, alias)
    if "/" in text:
        model, version = text.rsplit("/", 1)
        if model and _VERSION.match(version):
            return Query("version", text, model, version)
        raise LineageError(
            f"{text!r} is not MODEL/VERSION: the version must be a number (e.g. {model or DEFAULT_MODEL}/3)."
        )
    if _VERSION.match(text):
        return Query("version", text, default_model, text)
    return Query("request", text, ref=text)


# --- what the walk finds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedRequest:
    request_id: str
    at: str
    experiment: str
    model: str  # the experiment's model; "" when the experiment is not in the store
    variant: str  # the arm the user was assigned to
    model_version: str  # the version that answered
    status: int
    latency_ms: float
    predicted_label: str | None
    confidence: float | None
    fallback: bool


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str
    source: str
    created: str
    tags: dict[str, str]


@dataclass(frozen=True)
class TrainingRun:
    run_id: str
    run_name: str
    experiment_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]  # loopline's (MLflow's own ``mlflow.*`` tags left out)

    @property
    def study(self) -> str | None:
        return self.tags.get("optuna.study")


@dataclass(frozen=True)
class LabelingRound:
    """Labels of one Label Studio project's export on one dataset version (later rounds carry earlier
    rounds' rows forward, so a labeled manifest can hold several)."""

    project_id: int
    export_id: int
    dataset_version: str
    images: int | None  # None: known from the model's tags only (the labeled manifest was not read)
    project_url: str


@dataclass(frozen=True)
class Annotator:
    user_id: int | None
    name: str | None  # Label Studio's e-mail of the user, when it could be asked
    annotations: int
    agree: int  # of those, the image's final (consensus) label

    @property
    def agreement(self) -> float:
        return self.agree / self.annotations if self.annotations else 0.0


@dataclass(frozen=True)
class LabeledManifest:
    version: str
    uri: str
    images: int
    classes: dict[str, int]
    splits: dict[str, int]
    annotators: tuple[Annotator, ...]
    alpha_at_gate: float | None  # Krippendorff's alpha the label stage's gate judged (model tag)
    alpha: float | None  # over this manifest's images with 2+ annotations
    names_note: str = ""  # why annotators are shown by id only


@dataclass(frozen=True)
class DatasetVersion:
    version: str
    uri: str
    images: int  # in the whole dataset version
    trained_on: int  # of those, images in the labeled manifest
    sources: dict[str, int]  # source folder or prefix → training images collected from it


@dataclass(frozen=True)
class TrainingImage:
    content_hash: str
    label: str
    split: str
    dataset_version: str
    source_uri: str | None  # None: the dataset manifest could not be read
    stored_uri: str
    annotators: tuple[int | None, ...]
    project_id: int
    task_id: int


@dataclass(frozen=True)
class BrokenLink:
    step: StepName
    why: str


@dataclass(frozen=True)
class Lineage:
    query: str
    request: ServedRequest | None = None
    model: ModelVersion | None = None
    training: TrainingRun | None = None
    labels: LabeledManifest | None = None
    label_studio: tuple[LabelingRound, ...] = ()
    datasets: tuple[DatasetVersion, ...] = ()
    images: tuple[TrainingImage, ...] = ()
    broken: tuple[BrokenLink, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return not self.broken

    def to_json(self) -> dict[str, Any]:
        return {"complete": self.complete, **asdict(self)}


# --- the readers -----------------------------------------------------------------------------------------


class EventReader(Protocol):
    def served_request(self, request_id: str) -> ServedRequest | None: ...


class RegistryReader(Protocol):
    def model_version(self, name: str, version: str) -> ModelVersion | None: ...
    def aliased_version(self, name: str, alias: str) -> ModelVersion | None: ...
    def training_run(self, run_id: str) -> TrainingRun: ...


class DataReader(Protocol):
    def labeled_rows(self, root: str, version: str) -> tuple[str, list[LabeledRow]]: ...  # (uri, rows)
    def dataset_rows(self, root: str, version: str) -> tuple[str, list[ManifestRow]]: ...


class AnnotatorDirectory(Protocol):
    def names(self) -> dict[int, str]: ...


@dataclass(frozen=True)
class Readers:
    events: EventReader
    registry: RegistryReader
    data: DataReader
    people: AnnotatorDirectory | None
    data_root: str  # where manifests are when the model's tags do not say
    label_studio_url: str


# --- the walk --------------------------------------------------------------------------------------------


def trace(query: Query, readers: Readers) -> Lineage:
    """Walk the chain from ``query`` as far as the recorded links lead."""
    broken: list[BrokenLink] = []
    request = _find_request(query, readers) if query.kind == "request" else None
    model = _find_model(query, request, readers, broken)
    if model is None:
        return Lineage(query.text, request, broken=tuple(broken))
    training = _follow(broken, "training", lambda: readers.registry.training_run(model.run_id))
    labeled_version = model.tags.get("labeled_version") or (training.params if training else {}).get(
        "labeled_version", ""
    )
    root = model.tags.get("data_root") or readers.data_root
    found = None
    if labeled_version:
        found = _follow(broken, "labels", lambda: readers.data.labeled_rows(root, labeled_version))
    else:
        broken.append(BrokenLink("labels", f"{_name(model)} has no labeled_version tag: {NOT_REGISTERED}"))
    if found is None:
        rounds = _rounds_from_tags(model, readers.label_studio_url)
        datasets = _datasets(readers, root, [r.dataset_version for r in rounds], [], {}, broken)
        broken.append(BrokenLink("images", "the training images are listed in the labeled manifest"))
        return Lineage(query.text, request, model, training, None, rounds, datasets, broken=tuple(broken))
    uri, rows = found
    names, note = _annotator_names(readers.people, rows)
    labels = summarise_labels(labeled_version, uri, rows, _float(model.tags.get("labels.alpha")), names, note)
    sources: dict[str, str] = {}
    datasets = _datasets(readers, root, sorted({r.dataset_version for r in rows}), rows, sources, broken)
    images = tuple(
        TrainingImage(
            r.content_hash,
            r.label,
            r.split,
            r.dataset_version,
            sources.get(r.content_hash),
            r.stored_uri,
            tuple(a.annotator for a in r.annotations),
            r.project_id,
            r.task_id,
        )
        for r in rows
    )
    rounds = _rounds(rows, readers.label_studio_url)
    return Lineage(query.text, request, model, training, labels, rounds, datasets, images, tuple(broken))


NOT_REGISTERED = (
    "it was not registered by the register stage (which tags every version with its labeled_version, "
    "dataset_version and Label Studio ids), so its labels cannot be traced"
)


def _name(model: ModelVersion) -> str:
    return f"{model.name} v{model.version}"


def _find_request(query: Query, readers: Readers) -> ServedRequest:
    try:
        request = readers.events.served_request(query.ref)
    except LinkBroken as exc:
        raise LineageError(f"Cannot look up request {query.ref!r}: {exc}") from exc
    if request is None:
        raise LineageError(
            f"No routed request has id {query.ref!r} in the event store. To fix this, give the id the router "
            "returned in its X-Request-Id header (a request answered in the last second may not be stored "
            "yet), or trace a model instead: loopline lineage MODEL@champion | MODEL/VERSION."
        )
    return request


def _find_model(
    query: Query, request: ServedRequest | None, readers: Readers, broken: list[BrokenLink]
) -> ModelVersion | None:
    if request is not None:
        if not request.model:
            why = f"the request's experiment {request.experiment!r} is not in the event store, so the name "
            broken.append(BrokenLink("model", why + f"of the model whose v{request.model_version} answered"))
            return None
        before = len(broken)
        version = _follow(
            broken, "model", lambda: readers.registry.model_version(request.model, request.model_version)
        )
        if version is None and len(broken) == before:
            why = f"{request.model} v{request.model_version} answered the request but is not in the registry"
            broken.append(BrokenLink("model", why + " (deleted since?)"))
        return version
    try:
        if query.kind == "alias":
            version = readers.registry.aliased_version(query.model, query.ref)
        else:
            version = readers.registry.model_version(query.model, query.ref)
    except LinkBroken as exc:
        raise LineageError(f"Cannot look up {query.text}: {exc}") from exc
    if version is None:
        what = f"alias {query.ref!r}" if query.kind == "alias" else f"version {query.ref}"
        raise LineageError(
            f"The registered model {query.model!r} has no {what}. To fix this, check the name and "
            f"version in the MLflow UI, or trace {query.model}@champion / {query.model}/VERSION."
        )
    return version


def _follow(broken: list[BrokenLink], step: StepName, read: Any) -> Any:
    try:
        return read()
    except LinkBroken as exc:
        broken.append(BrokenLink(step, str(exc)))
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _annotator_names(people: AnnotatorDirectory | None, rows: list[LabeledRow]) -> tuple[dict[int, str], str]:
    if not any(a.annotator is not None for r in rows for a in r.annotations):
        return {}, ""
    if people is None:
        return {}, "Label Studio user names were not asked for"
    try:
        return people.names(), ""
    except LinkBroken as exc:
        return {}, f"annotators shown by Label Studio user id: {exc}"


def summarise_labels(
    version: str,
    uri: str,
    rows: list[LabeledRow],
    alpha_at_gate: float | None,
    names: dict[int, str],
    names_note: str = "",
) -> LabeledManifest:
    """Classes, splits, each annotator's annotations and agreement with the final labels, and
    Krippendorff's alpha over the images with two or more annotations."""
    from loopline.labeling.agreement import krippendorff_alpha, rating_table

    made: Counter[int | None] = Counter()
    agreed: Counter[int | None] = Counter()
    for row in rows:
        for a in row.annotations:
            made[a.annotator] += 1
            agreed[a.annotator] += a.label == row.label
    annotators = tuple(
        Annotator(who, names.get(who) if who is not None else None, n, agreed[who])
        for who, n in sorted(made.items(), key=lambda item: (-item[1], str(item[0])))
    )
    ratings = [[a.label for a in r.annotations] for r in rows if len(r.annotations) >= 2]
    classes = sorted({label for item in ratings for label in item})
    alpha = krippendorff_alpha(rating_table(ratings, classes)) if ratings else None
    return LabeledManifest(
        version=version,
        uri=uri,
        images=len(rows),
        classes=dict(sorted(Counter(r.label for r in rows).items())),
        splits=dict(sorted(Counter(str(r.split) for r in rows).items())),
        annotators=annotators,
        alpha_at_gate=alpha_at_gate,
        alpha=alpha,
        names_note=names_note,
    )


def _project_url(label_studio_url: str, project_id: int) -> str:
    return f"{label_studio_url.rstrip('/')}/projects/{project_id}"


def _rounds(rows: list[LabeledRow], label_studio_url: str) -> tuple[LabelingRound, ...]:
    counts = Counter((r.project_id, r.export_id, r.dataset_version) for r in rows)
    return tuple(
        LabelingRound(p, e, d, n, _project_url(label_studio_url, p))
        for (p, e, d), n in sorted(counts.items())
    )


def _rounds_from_tags(model: ModelVersion, label_studio_url: str) -> tuple[LabelingRound, ...]:
    project, export = (
        model.tags.get("label_studio.project_id", ""),
        model.tags.get("label_studio.export_id", ""),
    )
    dataset = model.tags.get("dataset_version", "")
    if not (project.isdigit() and export.isdigit()):
        return ()
    return (
        LabelingRound(int(project), int(export), dataset, None, _project_url(label_studio_url, int(project))),
    )


def _datasets(
    readers: Readers,
    root: str,
    versions: list[str],
    rows: list[LabeledRow],
    sources: dict[str, str],
    broken: list[BrokenLink],
) -> tuple[DatasetVersion, ...]:
    """Each dataset version the labels were drawn from; fills ``sources`` (content hash → source URI)."""
    trained = {r.content_hash for r in rows}
    found = []
    for version in [v for v in versions if v]:
        read = _follow(broken, "dataset", lambda v=version: readers.data.dataset_rows(root, v))
        if read is None:
            continue
        uri, manifest = read
        per_folder: defaultdict[str, int] = defaultdict(int)
        for m in manifest:
            if m.content_hash in trained:
                sources[m.content_hash] = m.source_uri
                per_folder[m.source_uri.rsplit("/", 1)[0]] += 1
        on_it = sum(per_folder.values())
        found.append(DatasetVersion(version, uri, len(manifest), on_it, dict(sorted(per_folder.items()))))
    return tuple(found)
