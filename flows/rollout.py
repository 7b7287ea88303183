"""A/B stage: the challenger the deploy stage started earns its place on live traffic, or is rolled back.

Input: the registered model's name, the labeled data's root (for the smoke test), ``DeployParameters``
and ``RolloutParameters``. Output: a ``RolloutRef`` (the experiment's final state), or None when no
challenger serves. The router (``loopline route``, run beside the model servers on the deploy target: a
process, a container or a Deployment, :mod:`loopline.rollout.hosts`) sends each user to
an arm by a sticky hash; the flow evaluates on an interval (always-valid statistics, the ramp policy),
moves the challenger's weight, rolls back at once when it hurts users, and asks a person (``RolloutReview``:
``loopline approve RUN_ID`` or the UI form) before it takes all traffic. Promotion moves the champion alias,
routes every user to the challenger and records the deployment in one transaction (undone as a whole if
a step fails); after a grace period the champion's server switches to the new version and the
challenger's is stopped. Artifacts: ``rollout-report`` (every evaluation), ``rollout-review``.
A rerun (or a resumed suspension) finds its experiment in the event store and carries on.
Run: ``prefect deployment run 'ab-test/local'``, or as the pipeline's last stage.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.transactions import transaction

from loopline.deploy.base import DeploymentRecord, DeploymentRefused
from loopline.rollout.experiment import SETTLED, settle
from loopline.rollout.report import render_report
from loopline.rollout.service import open_store
from loopline.settings import get_settings
from tasks.deploy import DeployParameters, deploy_target
from tasks.review import RolloutReview, ask_for_review, record_review
from tasks.rollout import (
    RolloutParameters,
    RolloutRef,
    evaluate_rollout,
    move_champion_alias,
    record_promotion,
    roll_back_rollout,
    rollout_router,
    route_all_to_challenger,
    start_rollout,
)
from tasks.train import tracking_uri


def rollout_stage(
    model: str, data_root: str, deploy: DeployParameters, params: RolloutParameters
) -> RolloutRef | None:
    """The A/B stage's tasks, run inside the calling flow."""
    uri = tracking_uri()
    ref = start_rollout(model, uri, data_root, deploy, params)
    if ref is not None and ref.status == "promoted":  # a run that stopped between promotion and switch
        return _finish_promotion(ref, "loopline", uri, data_root, deploy, params)
    if ref is None or ref.status in SETTLED:
        return ref
    while ref.status == "running":
        time.sleep(params.interval_seconds)
        ref = evaluate_rollout(ref.experiment, params)
    if ref.status in ("rolled_back", "halted"):
        return _retire_challenger(roll_back_rollout(ref.experiment, uri, ref.reasons), uri, data_root, deploy)
    store = open_store(get_settings())
    found = store.get_experiment(ref.experiment)
    report = render_report(found.state, store.list_decisions(ref.experiment)) if found else ""
    review = ask_for_review(
        f"rollout-{ref.experiment}", report, params.review_timeout_seconds, params.auto_approve, RolloutReview
    )
    record_review("rollout", f"{model} v{ref.challenger_version}", review)
    who = review.reviewer or "unknown"
    if review.decision == "reject":
        why = [f"rejected by {who}" + (f": {review.comment}" if review.comment else "")]
        return _retire_challenger(roll_back_rollout(ref.experiment, uri, why, who), uri, data_root, deploy)
    return _promote(ref, who, uri, data_root, deploy, params)


def _promote(
    ref: RolloutRef, who: str, uri: str, data_root: str, deploy: DeployParameters, params: RolloutParameters
) -> RolloutRef:
    target = deploy_target(ref.model, uri, data_root, deploy)
    serving = {r.role: r for r in target.status()}
    challenger = serving["challenger"]
    why = f"promoted after the A/B test {ref.experiment}"
    record = DeploymentRecord(target.name, ref.model, ref.challenger_version, "champion", challenger.url,
                              challenger.ref, "serving", datetime.now(UTC).isoformat(timespec="seconds"), who,
                              why)  # fmt: skip
    with transaction():
        move_champion_alias(uri, ref.model, ref.challenger_version, who, why)
        route_all_to_challenger(ref.experiment, who)
        record_promotion(uri, record.to_json())
    return _finish_promotion(ref, who, uri, data_root, deploy, params)


def _finish_promotion(
    ref: RolloutRef, who: str, uri: str, data_root: str, deploy: DeployParameters, params: RolloutParameters
) -> RolloutRef:
    """After the grace period the champion's server serves the new version; the challenger's stops."""
    logger = get_run_logger()
    target = deploy_target(ref.model, uri, data_root, deploy)
    why = f"promoted after the A/B test {ref.experiment}"
    logger.info("v%s takes all traffic; v%s stays warm for %.0f s", ref.challenger_version,
                ref.champion_version, params.grace_seconds)  # fmt: skip
    time.sleep(params.grace_seconds)
    switched = target.deploy(ref.challenger_version, "champion", who, why)
    if switched.state != "serving":
        raise DeploymentRefused(
            f"The champion's server did not switch to v{ref.challenger_version} ({switched.reason}); the "
            "router keeps every user on the challenger's server, which serves it. To fix this, read the "
            "model server's log, then rerun this flow."
        )
    store = open_store(get_settings())
    done = f"promoted: the champion's server serves v{ref.challenger_version}, every user back on it"
    state = settle(store, ref.experiment, "stopped", 0.0, done, "promote")
    if not rollout_router(deploy).await_state("stopped"):
        logger.warning("the router did not confirm the switch in time; stopping the challenger anyway")
    target.undeploy("challenger", who)
    return RolloutRef.of(state, "promote", (why,))


def _retire_challenger(ref: RolloutRef, uri: str, data_root: str, deploy: DeployParameters) -> RolloutRef:
    """Stop the rolled-back challenger's server once the router sends it nobody."""
    rollout_router(deploy).await_state(ref.status)
    deploy_target(ref.model, uri, data_root, deploy).undeploy("challenger", "loopline")
    get_run_logger().warning("v%s rolled back: %s", ref.challenger_version, "; ".join(ref.reasons)[:400])
    return ref


@flow(name="ab-test")
def rollout_flow(
    model: str = "loopline-classifier",
    data_root: str | None = None,
    deploy: DeployParameters | None = None,
    params: RolloutParameters | None = None,
) -> RolloutRef | None:
    """A/B test the deployed challenger against the champion and promote or roll it back."""
    return rollout_stage(
        model,
        data_root or get_settings().resolved_data_root,
        deploy or DeployParameters(),
        params or RolloutParameters(),
    )
