"""Label tasks: Label Studio project and import, waiting for people, export, agreement, labeled manifest."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from uuid import UUID

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, Field, model_validator

from blocks.servers import BLOCK_NAME, LabelStudioServer
from loopline.data.labeled import read_labeled_manifest, write_labeled_manifest
from loopline.data.manifest import ManifestRow, read_manifest
from loopline.data.pixels import ImageReader
from loopline.data.s3 import parse_s3_uri
from loopline.data.splits import SplitFractions, check_split_fractions
from loopline.data.store import open_store
from loopline.errors import LabelStudioUnavailable
from loopline.labeling.agreement import AgreementReport, agreement_parameter_problems, agreement_report
from loopline.labeling.box_consensus import BoxLabels, box_labels
from loopline.labeling.configs import LabelConfig, parse_label_config, render_label_config
from loopline.labeling.detection import (
    DetectionAgreement,
    detection_agreement_report,
    labeled_coco,
    parse_detection_export,
)
from loopline.labeling.export import ExportSummary, parse_classification_export
from loopline.labeling.labeled import build_detection_rows, build_labeled_rows
from loopline.labeling.report import render_labeled_manifest
from loopline.labeling.rounds import ChampionModel, RoundSelection, render_selection_report, select_round
from loopline.labeling.studio import LabelStudio, Project, ProjectProgress
from loopline.registry.artifacts import download_model_files
from loopline.settings import get_settings
from tasks.collect import DatasetRef
from tasks.retry import IO_RETRIES


class LabelParameters(BaseModel):
    """How to label a dataset version (rendered as a form in the Prefect UI)."""

    task_type: Literal["classification", "detection"] = Field(
        default="classification",
        description="classification: one label per image (Choices); detection: boxes (RectangleLabels).",
    )
    labels: list[str] = Field(
        ..., description='The label set, e.g. ["cat", "dog"] (no default: it is your data\'s).'
    )
    budget: int = Field(default=300, ge=1, description="Images sent to people in this round.")
    annotators_per_task: int = Field(default=2, ge=1, le=10, description="Annotations required per image.")
    max_annotators_per_task: int = Field(
        default=3,
        ge=1,
        le=10,
        description="A tied image gets one more annotator in the same round, up to this many annotators; "
        "what is still tied then is listed in the review for a person to decide.",
    )
    min_agreement: float | None = Field(
        default=0.6,
        ge=-1,
        le=1,
        description="Agreement gate: minimum Krippendorff's alpha (nominal) over every image with 2+ "
        "annotations (1 = perfect, 0 = chance). None turns the gate off.",
    )
    min_label_agreement: float | None = Field(
        default=None, ge=-1, le=1, description="Optional gate on every label's alpha (label vs the rest)."
    )
    min_box_f1: float | None = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Detection: agreement gate on the annotators' boxes, the mean IoU-matched F1 over every "
        "pair of annotations of an image (1 = the same boxes). None turns the gate off.",
    )
    box_iou: float = Field(
        default=0.5, gt=0, lt=1, description="Detection: IoU at which two boxes of one label are the same."
    )
    preannotation_min_score: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Detection, later rounds: the champion's boxes scored at least this go to Label Studio "
        "as pre-annotations.",
    )
    wait_timeout_minutes: float = Field(
        default=24 * 60, gt=0, description="Stop waiting for labels after this."
    )
    poll_seconds: float = Field(default=5.0, gt=0, description="How often to check labeling progress.")
    review_timeout_hours: float = Field(default=72, gt=0, description="How long the review may take.")
    max_review_rounds: int = Field(default=3, ge=1, description="Times a batch may be sent back.")
    auto_approve: bool = Field(default=False, description="DEMO ONLY: accept the labels without a person.")
    val_fraction: float = Field(default=0.15, ge=0, lt=1)
    test_fraction: float = Field(default=0.15, ge=0, lt=1)
    seed: int = Field(default=0, description="Seed of the round's selection and of the split.")

    @model_validator(mode="before")
    @classmethod
    def _renamed_agreement_gate(cls, data: object) -> object:
        renamed = {"min_kappa": "min_agreement", "min_label_kappa": "min_label_agreement"}
        old = sorted(set(renamed) & set(data)) if isinstance(data, dict) else []
        if old:
            raise ValueError(
                f"{', '.join(old)} no longer exist: the agreement gate now measures Krippendorff's alpha "
                "(order-free, any number of annotators per image). To fix this, use "
                + " and ".join(renamed[k] for k in old)
                + " instead (same scale: 1 = perfect, 0 = chance)."
            )
        return data

    @model_validator(mode="after")
    def _check_labels_and_annotators(self) -> LabelParameters:
        problems = agreement_parameter_problems(
            self.labels,
            self.annotators_per_task,
            self.max_annotators_per_task,
            self.min_agreement,
            self.min_label_agreement,
        )
        if problems:
            raise ValueError("; ".join(problems))
        check_split_fractions(self.val_fraction, self.test_fraction)  # before anyone labels for an hour
        return self


class LabeledDatasetRef(BaseModel):
    version: str
    manifest_uri: str
    data_root: str
    dataset_version: str
    project_id: int
    export_id: int
    images: int
    kappa: float | None  # Fleiss' kappa (None when images have different numbers of annotations)
    alpha: float | None = None  # Krippendorff's alpha (nominal): what the agreement gate judged
    task_type: Literal["classification", "detection"] = "classification"
    box_f1: float | None = None  # detection: the annotators' IoU-matched F1 (what the gate judged)


class ChampionRef(BaseModel):
    """The model people approved last: it scores the next round's images and is the bar to beat."""

    name: str
    version: str
    run_id: str
    labeled_version: str
    dataset_version: str


def studio_from_block() -> LabelStudio:
    server = LabelStudioServer.load(BLOCK_NAME)
    assert isinstance(server, LabelStudioServer)
    return LabelStudio(server.url, server.api_key.get_secret_value())


def project_key(dataset: DatasetRef, params: LabelParameters) -> str:
    import hashlib

    text = f"{dataset.version}|{params.task_type}|{'|'.join(sorted(params.labels))}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@task(
    name="prepare-label-project",
    **IO_RETRIES,
)
def prepare_project(dataset: DatasetRef, params: LabelParameters) -> Project:
    """Get or create the project for (dataset version, task type, label set); connect the data root."""
    config_xml = render_label_config(params.task_type, params.labels)
    with studio_from_block() as studio:
        project = studio.get_or_create_project(
            project_key(dataset, params),
            f"loopline {dataset.version[:8]} {params.task_type}",
            config_xml,
            params.annotators_per_task,
            description=f"Dataset {dataset.version} ({dataset.manifest_uri})",
        )
        parse_label_config(project.label_config, params.task_type, params.labels)
        connect_data_root(studio, project.id, dataset.data_root)
    get_run_logger().info(
        "Label Studio project %s (%s)", project.id, "created" if project.created else "found"
    )
    return project


def connect_data_root(studio: LabelStudio, project_id: int, data_root: str) -> None:
    """Let Label Studio serve the images: Local Files storage, or S3 import storage for an S3 root."""
    if not data_root.startswith("s3://"):
        studio.ensure_local_storage(project_id, f"{data_root}/images")
        return
    settings = get_settings()
    bucket, prefix = parse_s3_uri(data_root)
    key, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    studio.ensure_s3_storage(
        project_id,
        bucket,
        f"{prefix}/images".lstrip("/"),
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=key.get_secret_value() if key else None,
        secret_access_key=secret.get_secret_value() if secret else None,
    )


def task_image(stored_uri: str, data_root: str) -> str:
    """What a task's ``image`` field holds: the S3 URI itself, or a Local Files URL under the data root."""
    if stored_uri.startswith("s3://"):
        return stored_uri
    relative = stored_uri[len(data_root) :].lstrip("/") if stored_uri.startswith(data_root) else stored_uri
    return f"/data/local-files/?d={relative}"


@task(
    name="import-label-tasks",
    **IO_RETRIES,
)
def import_round(
    dataset: DatasetRef,
    project: Project,
    params: LabelParameters,
    champion: ChampionRef | None = None,
    batch_size: int = 500,
) -> int:
    """Send this round's images to the project; idempotent. Without a champion (round 1) a seeded random
    choice; with one, active learning on the champion's scores, its answers sent as pre-annotations."""
    settings = get_settings()
    rows = read_manifest(open_store(dataset.data_root, settings), dataset.version)
    with studio_from_block() as studio:
        present = studio.task_hashes(project.id)
        missing = max(0, params.budget - len(present))
        candidates = sorted((r for r in rows if r.content_hash not in present), key=lambda r: r.content_hash)
        predictions: Mapping[str, dict[str, object]] = {}
        if prior_round(champion):
            assert champion is not None
            config = parse_label_config(project.label_config, params.task_type, params.labels)
            selection = select_with_champion(candidates, missing, champion, dataset, config, params)
            chosen, predictions = list(selection.chosen), selection.predictions
        else:
            rng = np.random.default_rng(params.seed)
            picks = rng.choice(len(candidates), min(missing, len(candidates)), replace=False)
            chosen = [candidates[i] for i in sorted(picks)]
        tasks = [
            {
                "data": {
                    "image": task_image(r.stored_uri, dataset.data_root),
                    "content_hash": r.content_hash,
                    "dataset_version": dataset.version,
                },
                **({"predictions": [predictions[r.content_hash]]} if r.content_hash in predictions else {}),
            }
            for r in chosen
        ]
        for start in range(0, len(tasks), batch_size):
            studio.import_tasks(project.id, tasks[start : start + batch_size])
    get_run_logger().info("Imported %d tasks (%d were already there)", len(tasks), len(present))
    return len(present) + len(tasks)


def prior_round(champion: ChampionRef | None) -> bool:
    """A champion with known training labels: this is a later round of the loop. (Its labels are merged
    into this round's manifest; when it was trained on this round's labels already, that is a no-op.)"""
    return champion is not None and bool(champion.labeled_version)


def select_with_champion(
    candidates: list[ManifestRow],
    budget: int,
    champion: ChampionRef,
    dataset: DatasetRef,
    config: LabelConfig,
    params: LabelParameters,
) -> RoundSelection:
    """The champion scores the images not labeled yet; margin x k-center picks ``budget`` of them
    (``loopline.labeling.rounds``); the ``label-selection`` artifact says how, or why nothing was chosen."""
    settings = get_settings()
    prior = read_labeled_manifest(open_store(dataset.data_root, settings), champion.labeled_version)
    version = f"{champion.name} v{champion.version}"
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, mapping, _ = download_model_files(champion.run_id, Path(tmp))
        model = ChampionModel.from_mapping(onnx_path, mapping, version)
        selection = select_round(
            candidates,
            prior,
            ImageReader(settings).open,
            model,
            budget,
            params.seed,
            config,
            params.preannotation_min_score,
        )
    if selection.nothing_because:
        get_run_logger().info(
            "Round selection by %s: nothing to import, %s", version, selection.nothing_because
        )
    create_markdown_artifact(
        key="label-selection",
        markdown=render_selection_report(selection),
        description=f"active learning with {version}",
    )
    return selection


@task(name="wait-for-labels")
def wait_for_labels(
    project: Project, target: int, annotators: int, params: LabelParameters
) -> ProjectProgress:
    """Poll until ``target`` tasks have ``annotators`` annotations each (or the timeout), updating a
    progress artifact. Label Studio's finished-task counter is recomputed in the background after the
    overlap changes, so the annotation count is checked as well."""
    logger = get_run_logger()
    deadline = time.monotonic() + params.wait_timeout_minutes * 60
    artifact = create_progress_artifact(
        0.0, key="label-progress", description=f"Project {project.id}: labeled tasks"
    )
    assert isinstance(artifact, UUID)
    with studio_from_block() as studio:
        while True:
            try:
                progress = studio.progress(project.id)
            except LabelStudioUnavailable as exc:  # keep waiting through restarts; give up at the deadline
                logger.warning("%s", exc)
                if time.monotonic() > deadline:
                    raise
                time.sleep(params.poll_seconds)
                continue
            update_progress_artifact(
                artifact, progress=min(100.0, 100.0 * progress.finished / max(1, target))
            )
            if progress.finished >= target and progress.annotations + progress.skipped >= target * annotators:
                return progress
            if time.monotonic() > deadline:
                logger.warning(
                    "Stopped waiting after %.0f min: %d of %d tasks done",
                    params.wait_timeout_minutes,
                    progress.finished,
                    target,
                )
                return progress
            time.sleep(params.poll_seconds)


@task(
    name="ask-for-tie-breaks",
    **IO_RETRIES,
)
def ask_for_tie_breaks(
    project: Project, overlaps: dict[int, int], params: LabelParameters
) -> ProjectProgress:
    """Ask Label Studio for more annotations on tied tasks (task id → annotations wanted) and wait until
    they have them (or the timeout: what is unanswered stays tied and goes to the review). A task asked
    for as many before (an earlier run of this flow, e.g. before a review) is not waited for again."""
    logger = get_run_logger()
    deadline = time.monotonic() + params.wait_timeout_minutes * 60
    with studio_from_block() as studio:
        states = studio.task_states(project.id, list(overlaps))
        new = {t: n for t, n in overlaps.items() if states[t].overlap < n}
        if len(new) < len(overlaps):
            logger.info(
                "Tied tasks %s were asked before: not waiting again", sorted(set(overlaps) - set(new))
            )
        studio.request_annotations(project.id, new)
        logger.info("Tied tasks %s: asked for one more annotator each", sorted(new))
        while True:
            have = studio.task_states(project.id, list(new))
            waiting = sorted(t for t, n in new.items() if have[t].annotations < n)
            if not waiting or time.monotonic() > deadline:
                if waiting:
                    logger.warning("Stopped waiting for tie-breaks; unanswered tasks: %s", waiting)
                return studio.progress(project.id)
            time.sleep(params.poll_seconds)


@task(
    name="export-labels",
    **IO_RETRIES,
)
def export_labels(
    project: Project, progress: ProjectProgress, params: LabelParameters
) -> tuple[int, ExportSummary | BoxLabels]:
    """A snapshot export (one per annotation state: reruns reuse it), parsed into consensus labels (for
    detection: consensus boxes)."""
    config: LabelConfig = parse_label_config(project.label_config, params.task_type, params.labels)
    with studio_from_block() as studio:
        title = f"loopline {progress.annotations}a {progress.skipped}s {progress.finished}f"
        export_id, tasks = studio.snapshot_export(project.id, title)
    if params.task_type == "detection":
        return export_id, box_labels(parse_detection_export(tasks, config), params.box_iou)
    return export_id, parse_classification_export(tasks, config)


@task(name="publish-agreement-report")
def publish_agreement(markdown: str, summary: ExportSummary | BoxLabels) -> None:
    create_markdown_artifact(markdown=markdown, key="label-agreement", description="Agreement of the labels")
    create_table_artifact(
        table=[{"count": k, "value": v} for k, v in sorted(summary.counts.items())], key="label-counts"
    )


@task(name="write-labeled-manifest")
def write_labeled(
    dataset: DatasetRef,
    project: Project,
    export_id: int,
    summary: ExportSummary | BoxLabels,
    report: AgreementReport | DetectionAgreement,
    params: LabelParameters,
    champion: ChampionRef | None = None,
) -> LabeledDatasetRef:
    """The labeled manifest of this round; in later rounds, with the labels the champion learned from
    carried forward unchanged (their splits too: an image once in test stays in test)."""
    settings = get_settings()
    store = open_store(dataset.data_root, settings)
    fractions = SplitFractions(val=params.val_fraction, test=params.test_fraction)
    manifest = read_manifest(store, dataset.version)
    if isinstance(summary, BoxLabels):
        new_rows = build_detection_rows(
            manifest, summary.consensus, dataset.version, project.id, export_id, fractions, params.seed
        )
    else:
        new_rows = build_labeled_rows(
            manifest, summary.items, dataset.version, project.id, export_id, fractions, params.seed
        )
    prior = []
    if champion is not None and prior_round(champion):
        prior = read_labeled_manifest(store, champion.labeled_version)
    known = {r.content_hash for r in prior}
    rows = sorted(
        [*prior, *(r for r in new_rows if r.content_hash not in known)], key=lambda r: r.content_hash
    )
    version, uri = write_labeled_manifest(store, rows)
    if isinstance(summary, BoxLabels) and not store.exists(f"labels/{version}.coco.json"):
        coco = labeled_coco(rows, params.labels)  # the consensus boxes, image ids the task ids
        store.put_bytes(f"labels/{version}.coco.json", json.dumps(coco).encode())
    in_dataset = {r.content_hash for r in new_rows}
    earlier = sorted(in_dataset & known)  # labeled in an earlier round: that label is kept
    outside = sorted(i.content_hash for i in summary.items if i.content_hash not in in_dataset)
    get_run_logger().info(
        "Labeled manifest %s: %d images (%s); %d tied and %d outside the dataset version not written",
        version,
        len(rows),
        uri,
        len(summary.ties),
        len(outside),
    )
    create_markdown_artifact(
        key="label-manifest",
        markdown=render_labeled_manifest(
            version, uri, summary, len(in_dataset) - len(earlier), len(prior), earlier, outside
        ),
        description="What went into the labeled manifest, and what did not",
    )
    return LabeledDatasetRef(
        version=version,
        manifest_uri=uri,
        data_root=dataset.data_root,
        dataset_version=dataset.version,
        project_id=project.id,
        export_id=export_id,
        images=len(rows),
        kappa=report.fleiss_kappa if isinstance(report, AgreementReport) else None,
        alpha=report.alpha if isinstance(report, AgreementReport) else None,
        task_type=params.task_type,
        box_f1=report.f1 if isinstance(report, DetectionAgreement) else None,
    )


def agreement_of(
    summary: ExportSummary | BoxLabels, params: LabelParameters
) -> AgreementReport | DetectionAgreement:
    if isinstance(summary, BoxLabels):
        return detection_agreement_report(summary.summary, params.box_iou)
    return agreement_report(summary.ratings, params.labels)
