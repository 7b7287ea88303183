"""Label stage: a collected dataset → images labeled by people in Label Studio, checked for agreement.

Input: a ``DatasetRef`` (from collect) and ``LabelParameters``. Output: a ``LabeledDatasetRef``
(labeled manifest ``labels/<version>.jsonl`` with consensus labels, annotators and splits).
Steps: get-or-create the project (keyed by dataset version, task type and label set) → import this
round's images (idempotent by content hash) → wait for the annotations (progress artifact) → snapshot
export → tied images get one more annotator each, up to ``max_annotators_per_task`` (re-export) →
agreement report (Krippendorff's alpha; for boxes, the annotators' IoU-matched F1 and consensus boxes;
unresolved ties listed with links; artifact) → typed review
(``loopline approve RUN_ID [--reject]``; a suspension under a deployment, a pause in-process) →
agreement gate (a ``GateVerdict``) → labeled manifest (what was and was not written: artifact).
A rejected batch goes back to Label Studio with one more annotator per image.

Run: ``prefect deployment run 'label-images/local' -p dataset='{…}'`` or as part of the pipeline.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from loopline.errors import QualityGateFailed
from loopline.labeling.agreement import AGREEMENT_FIX, AgreementReport, agreement_gate
from loopline.labeling.box_consensus import BoxLabels, box_agreement_gate
from loopline.labeling.detection import DetectionAgreement
from loopline.labeling.export import ExportSummary
from loopline.labeling.report import render_agreement_report, render_box_agreement_report
from loopline.labeling.studio import Project
from loopline.labeling.ties import more_annotators
from loopline.verdict import GateVerdict
from tasks.collect import DatasetRef
from tasks.label import (
    ChampionRef,
    LabeledDatasetRef,
    LabelParameters,
    agreement_of,
    ask_for_tie_breaks,
    export_labels,
    import_round,
    prepare_project,
    publish_agreement,
    studio_from_block,
    wait_for_labels,
    write_labeled,
)
from tasks.review import ask_for_review, record_review


def break_ties(
    project: Project, export_id: int, summary: ExportSummary | BoxLabels, params: LabelParameters
) -> tuple[int, ExportSummary | BoxLabels, int]:
    """One more annotator per tied task, export again, until no tie may grow (the cap, or an ask nobody
    answered). Returns the latest export, its summary, and how many extra annotations were asked for."""
    asked: dict[int, int] = {}
    extra = 0
    while overlaps := more_annotators(summary.ties, params.max_annotators_per_task, asked):
        progress = ask_for_tie_breaks(project, overlaps, params)
        asked.update(overlaps)
        extra += len(overlaps)
        export_id, summary = export_labels(project, progress, params)
    return export_id, summary, extra


def judge_agreement(
    project_url: str,
    summary: ExportSummary | BoxLabels,
    report: AgreementReport | DetectionAgreement,
    params: LabelParameters,
    tie_breaks: int,
) -> tuple[GateVerdict, str]:
    """The agreement gate's verdict and the review's markdown (labels: alpha; boxes: IoU-matched F1)."""
    if isinstance(summary, BoxLabels):
        assert isinstance(report, DetectionAgreement)
        verdict = box_agreement_gate(report, params.min_box_f1)
        return verdict, render_box_agreement_report(project_url, summary, report, verdict, tie_breaks)
    assert isinstance(report, AgreementReport)
    verdict = agreement_gate(report, params.min_agreement, params.min_label_agreement)
    return verdict, render_agreement_report(project_url, summary, report, verdict, tie_breaks)


def label_stage(
    dataset: DatasetRef, params: LabelParameters, champion: ChampionRef | None = None
) -> LabeledDatasetRef:
    """The label stage's tasks, run inside the calling flow (so a suspension suspends that flow run).
    With a ``champion`` from an earlier round, it chooses the images and pre-annotates them."""
    logger = get_run_logger()
    project = prepare_project(dataset, params)
    target = import_round(dataset, project, params, champion)
    with studio_from_block() as studio:
        project_url = f"{studio.url}/projects/{project.id}"
    for round_number in range(params.max_review_rounds):
        annotators = params.annotators_per_task + round_number
        if round_number:
            with studio_from_block() as studio:
                studio.set_maximum_annotations(project.id, annotators)
        progress = wait_for_labels(project, target, annotators, params)
        export_id, summary = export_labels(project, progress, params)
        export_id, summary, tie_breaks = break_ties(project, export_id, summary, params)
        report = agreement_of(summary, params)
        verdict, markdown = judge_agreement(project_url, summary, report, params, tie_breaks)
        publish_agreement(markdown, summary)
        review = ask_for_review(
            f"label-review-{project.id}-{round_number}",
            markdown,
            int(params.review_timeout_hours * 3600),
            params.auto_approve,
        )
        record_review("label", f"project {project.id}, export {export_id}", review)
        if review.decision == "approve":
            verdict.raise_if_failed(AGREEMENT_FIX)
            return write_labeled(dataset, project, export_id, summary, report, params, champion)
        logger.info(
            "Labels sent back (%s): asking for %d annotations per image", review.comment, annotators + 1
        )
    raise QualityGateFailed(
        f"The labels of project {project.id} were sent back {params.max_review_rounds} times. To fix this, "
        "review the guidelines with the annotators, then rerun with more review rounds (max_review_rounds)."
    )


@flow(name="label-images")
def label_flow(
    dataset: DatasetRef, params: LabelParameters, champion: ChampionRef | None = None
) -> LabeledDatasetRef:
    """Label a collected dataset version (with a champion: active learning and pre-annotations)."""
    return label_stage(dataset, params, champion)
