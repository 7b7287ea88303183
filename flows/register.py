"""Register stage: a trained model → a registered version (lineage tags, model card), the `challenger`
alias, an evaluation gate against the `champion` on the same frozen test split, and a typed approval.

Input: ``TrainedModelRef`` + ``LabeledDatasetRef`` + ``RegisterParameters``. Output: ``RegisteredModelRef``.
The gate (``loopline.registry.gate.model_gate``) pairs champion and challenger image by image (McNemar);
a drop fails it only when significant and beyond the rule's tolerance; its ``GateVerdict`` notes what the
test set is too small to tell. A detector is judged on COCO mAP with a paired bootstrap interval for its
difference (``loopline.registry.detection_gate``), and its report draws the worst images' boxes.
Artifacts: ``model-evaluation`` (report with Wilson intervals, paired tests,
the verdict and a gallery of the most confident mistakes), ``model-review`` (the decision),
``model-aliases`` (every alias change). Approve moves `champion` to the version (which then drops
`challenger`); reject leaves the aliases.
Run: ``prefect deployment run 'register-model/local' -p model='{…}' -p labels='{…}'``, or as a pipeline
stage; ``loopline approve RUN_ID`` (or the Prefect UI) answers the review.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from loopline.registry.detection_eval import DetectionEvaluations
from loopline.registry.detection_gate import compare_detectors, detection_gate
from loopline.registry.detection_report import render_detection_evaluation
from loopline.registry.evaluate import ModelEvaluations
from loopline.registry.gate import compare, model_gate
from loopline.registry.registry import (
    CHALLENGER,
    CHAMPION,
    AliasChange,
    move_alias,
    record_decision,
    resolve_alias,
)
from loopline.registry.report import render_evaluation
from loopline.verdict import GateVerdict
from tasks.label import LabeledDatasetRef
from tasks.register import (
    RegisteredModelRef,
    RegisterParameters,
    evaluate_against_champion,
    mlflow_client,
    register_version,
)
from tasks.review import ModelReview, ask_for_review, record_review
from tasks.train import TrainedModelRef


def _publish_alias_changes(name: str, changes: list[AliasChange]) -> None:
    for change in changes:
        to = f"v{change.to_version}" if change.to_version else "removed"
        create_markdown_artifact(
            key="model-aliases",
            markdown=(
                f"# {name}: `{change.alias}` {'moved' if change.to_version else 'removed'}\n\n"
                "| from | to | who | when | why |\n|---|---|---|---|---|\n"
                f"| {change.from_version or '-'} | {change.to_version or '-'} | {change.who} | "
                f"{change.when} | {change.why} |\n"
            ),
            description=f"{change.alias}: v{change.from_version or '-'} → {to}",
        )


def register_stage(
    model: TrainedModelRef, labels: LabeledDatasetRef, params: RegisterParameters, promote: bool = True
) -> RegisteredModelRef:
    """The register stage's tasks, run inside the calling flow (a suspension suspends that flow run).
    An approved version becomes champion; with ``promote`` off, and a champion there, it stays challenger
    (the A/B stage promotes it, or not)."""
    logger = get_run_logger()
    client = mlflow_client(model.tracking_uri)
    registered = register_version(model, labels, params)
    name, version = params.model_name, registered.version

    def reference(
        decision: str, champion: str | None, verdict: GateVerdict | None = None
    ) -> RegisteredModelRef:
        return RegisteredModelRef(
            name=name,
            version=version,
            run_id=model.run_id,
            decision=decision,
            champion_version=champion,
            violations=list(verdict.violations) if verdict else [],
            notes=list(verdict.notes) if verdict else [],
        )

    decided = client.get_model_version(name, version).tags.get("review.decision")
    if decided:  # a rerun after the decision: nothing is asked or moved again
        champion = resolve_alias(client, name, CHAMPION)
        return reference(decided, str(champion.version) if champion else None)
    current = resolve_alias(client, name, CHALLENGER)
    if current is None or str(current.version) != version:
        _publish_alias_changes(
            name, move_alias(client, name, CHALLENGER, version, "loopline", "new candidate")
        )

    evaluations = evaluate_against_champion(registered, model, labels, params)
    verdict, report = judge(name, version, evaluations, params)
    create_markdown_artifact(markdown=report, key="model-evaluation", description=f"{name} v{version}")
    for note in verdict.notes:
        logger.info("%s v%s gate note: %s", name, version, note)
    if not verdict.passed:
        logger.warning("%s v%s failed the gate: %s", name, version, verdict.summary())
        record_decision(client, name, version, "gate_failed", "loopline", "; ".join(verdict.violations))
        return reference("gate_failed", evaluations.champion_version, verdict)

    review = ask_for_review(
        f"model-review-{name}-{version}",
        report,
        int(params.review_timeout_hours * 3600),
        params.auto_approve,
        form_type=ModelReview,
    )
    record_review("model", f"{name} v{version}", review)
    who = review.reviewer or "unknown"
    if review.decision == "approve":
        why = review.comment or "approved"
        champion_now = version if promote or evaluations.champion_version is None else None
        if champion_now:
            _publish_alias_changes(name, move_alias(client, name, CHAMPION, version, who, why))
        else:
            logger.info("%s v%s approved: challenger of an A/B test against v%s", name, version,
                        evaluations.champion_version)  # fmt: skip
        record_decision(client, name, version, "approved", who, review.comment)
        return reference("approved", champion_now or evaluations.champion_version, verdict)
    record_decision(client, name, version, "rejected", who, review.comment)
    logger.info("%s v%s rejected (%s): aliases untouched", name, version, review.comment)
    return reference("rejected", evaluations.champion_version, verdict)


def judge(
    name: str, version: str, evaluations: ModelEvaluations | DetectionEvaluations, params: RegisterParameters
) -> tuple[GateVerdict, str]:
    """The gate's verdict on the challenger and the evaluation report a reviewer reads."""
    if isinstance(evaluations, DetectionEvaluations):
        found, bar = evaluations.challenger, evaluations.champion
        against = compare_detectors(found, bar, params.detection_gate)
        box_verdict = detection_gate(found, against, params.detection_gate)
        pictures = evaluations.pictures.get
        return box_verdict, render_detection_evaluation(
            name, version, found, bar, evaluations.champion_version, against, box_verdict, pictures
        )
    challenger, champion = evaluations.challenger, evaluations.champion
    comparison = compare(challenger, champion)
    verdict = model_gate(challenger, comparison, params.gate)
    return verdict, render_evaluation(
        name,
        version,
        challenger,
        champion,
        evaluations.champion_version,
        comparison,
        verdict,
        thumbnail=evaluations.thumbnails.get,
        confidence=1 - params.gate.alpha,
    )


@flow(name="register-model")
def register_flow(
    model: TrainedModelRef, labels: LabeledDatasetRef, params: RegisterParameters | None = None
) -> RegisteredModelRef:
    """Register, gate and review a trained model."""
    return register_stage(model, labels, params or RegisterParameters())
