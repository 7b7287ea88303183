"""Register stage: a trained model → a registered version (lineage tags, model card), the `challenger`
alias, an evaluation gate against the `champion` on the same frozen test split, and a typed approval.

Input: ``TrainedModelRef`` + ``LabeledDatasetRef`` + ``RegisterParameters``. Output: ``RegisteredModelRef``.
Artifacts: ``model-evaluation`` (report with the mistakes gallery), ``model-review`` (the decision),
``model-aliases`` (every alias change). Approve moves `champion` to the version; reject leaves the aliases.
Run: ``prefect deployment run 'register-model/local' -p model='{…}' -p labels='{…}'``, or as a pipeline
stage; ``loopline approve RUN_ID`` (or the Prefect UI) answers the review.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from loopline.registry.gate import compare, gate_violations
from loopline.registry.registry import (
    CHALLENGER,
    CHAMPION,
    AliasChange,
    move_alias,
    record_decision,
    resolve_alias,
)
from loopline.registry.report import render_evaluation
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


def _publish_alias_change(name: str, change: AliasChange) -> None:
    create_markdown_artifact(
        key="model-aliases",
        markdown=(
            f"# {name}: `{change.alias}` moved\n\n| from | to | who | when | why |\n|---|---|---|---|---|\n"
            f"| {change.from_version or '-'} | {change.to_version} | {change.who} | {change.when} | "
            f"{change.why} |\n"
        ),
        description=f"{change.alias}: v{change.from_version or '-'} → v{change.to_version}",
    )


def register_stage(
    model: TrainedModelRef, labels: LabeledDatasetRef, params: RegisterParameters
) -> RegisteredModelRef:
    """The register stage's tasks, run inside the calling flow (a suspension suspends that flow run)."""
    logger = get_run_logger()
    client = mlflow_client(model.tracking_uri)
    registered = register_version(model, labels, params)
    name, version = params.model_name, registered.version

    def reference(
        decision: str, champion: str | None, violations: list[str] | None = None
    ) -> RegisteredModelRef:
        return RegisteredModelRef(
            name=name,
            version=version,
            run_id=model.run_id,
            decision=decision,
            champion_version=champion,
            violations=violations or [],
        )

    decided = client.get_model_version(name, version).tags.get("review.decision")
    if decided:  # a rerun after the decision: nothing is asked or moved again
        champion = resolve_alias(client, name, CHAMPION)
        return reference(decided, str(champion.version) if champion else None)
    current = resolve_alias(client, name, CHALLENGER)
    if current is None or str(current.version) != version:
        _publish_alias_change(
            name, move_alias(client, name, CHALLENGER, version, "loopline", "new candidate")
        )

    challenger, champion, champion_version = evaluate_against_champion(registered, model, labels, params)
    comparison = compare(challenger, champion)
    violations = gate_violations(challenger, comparison, params.gate)
    report = render_evaluation(
        name,
        version,
        challenger,
        champion,
        champion_version,
        comparison,
        violations,
        min_class_support=params.gate.min_class_support,
    )
    create_markdown_artifact(markdown=report, key="model-evaluation", description=f"{name} v{version}")
    if violations:
        logger.warning("%s v%s failed the gate: %s", name, version, "; ".join(violations))
        record_decision(client, name, version, "gate_failed", "loopline", "; ".join(violations))
        return reference("gate_failed", champion_version, violations)

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
        _publish_alias_change(name, move_alias(client, name, CHAMPION, version, who, why))
        record_decision(client, name, version, "approved", who, review.comment)
        return reference("approved", version)
    record_decision(client, name, version, "rejected", who, review.comment)
    logger.info("%s v%s rejected (%s): aliases untouched", name, version, review.comment)
    return reference("rejected", champion_version)


@flow(name="register-model")
def register_flow(
    model: TrainedModelRef, labels: LabeledDatasetRef, params: RegisterParameters | None = None
) -> RegisteredModelRef:
    """Register, gate and review a trained model."""
    return register_stage(model, labels, params or RegisterParameters())
