"""A/B tasks: start the experiment for the deployed challenger behind the router, evaluate it (statistics,
ramp policy, the ``rollout-report`` artifact), and end it — promote (alias, router and deployment record
in one transaction that undoes all three if a step fails) or roll back (weight 0, the version tagged with
the reasons, a ``loopline.rollout.rolled-back`` event)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.transactions import Transaction, get_transaction
from pydantic import BaseModel, Field

from loopline.deploy.base import DeploymentRecord
from loopline.registry.registry import CHAMPION, move_alias, resolve_alias
from loopline.rollout.events import ExperimentState
from loopline.rollout.experiment import SETTLED, evaluate_experiment, settle, start_experiment
from loopline.rollout.hosts import RouterHost, router_host
from loopline.rollout.policy import RampPolicy
from loopline.rollout.report import render_report
from loopline.rollout.service import open_store
from loopline.rollout.stats import AbConfig
from loopline.settings import get_settings
from tasks.deploy import DeployParameters, deploy_target
from tasks.register import mlflow_client


class RolloutParameters(BaseModel):
    """How the challenger earns its place (rendered as a form in the Prefect UI)."""

    ramp: RampPolicy = Field(default_factory=RampPolicy, description="The challenger's share, step by step.")
    statistics: AbConfig = Field(default_factory=AbConfig, description="How the challenger is judged.")
    interval_seconds: float = Field(default=30.0, gt=0, description="Seconds between evaluations.")
    grace_seconds: float = Field(
        default=60.0, ge=0, description="After a promotion, the old champion stays warm this long."
    )
    auto_approve: bool = Field(
        default=False, description="Demo only: approve the promotion without a person (never in production)."
    )
    review_timeout_seconds: int = Field(
        default=7 * 24 * 3600, gt=0, description="How long to wait for a person."
    )


class RolloutRef(BaseModel):
    """Where an experiment stands."""

    experiment: str
    model: str
    champion_version: str
    challenger_version: str
    status: str
    weight: float
    verdict: str = ""
    reasons: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, state: ExperimentState, verdict: str = "", reasons: tuple[str, ...] = ()) -> RolloutRef:
        return cls(
            experiment=state.name,
            model=state.model,
            champion_version=state.champion_version,
            challenger_version=state.challenger_version,
            status=state.status,
            weight=state.weight,
            verdict=verdict,
            reasons=list(reasons),
        )


def rollout_router(deploy: DeployParameters) -> RouterHost:
    """The router on the deploy target of ``deploy`` (a process, a container or a Deployment)."""
    settings = get_settings()
    return router_host(deploy.target or settings.deploy_target, settings)


def _publish_report(name: str) -> None:
    store = open_store(get_settings())
    found = store.get_experiment(name)
    if found is not None:
        state = found.state
        create_markdown_artifact(
            key="rollout-report",
            markdown=render_report(state, store.list_decisions(name)),
            description=f"{state.model} v{state.challenger_version}: {state.status} at {state.weight:.0%}",
        )


@task(name="start-rollout", cache_policy=NO_CACHE)
def start_rollout(
    model: str, tracking_uri: str, data_root: str, deploy: DeployParameters, params: RolloutParameters
) -> RolloutRef | None:
    """The experiment of the challenger that serves now (None when none does), behind a running router.
    A rerun finds the experiment it started before, in whatever state it is."""
    logger = get_run_logger()
    records = {r.role: r for r in deploy_target(model, tracking_uri, data_root, deploy).status()}
    champion, challenger = records.get("champion"), records.get("challenger")
    if champion is None or challenger is None or "serving" not in (champion.state, challenger.state):
        logger.info("%s has no challenger serving beside its champion: no experiment", model)
        return None
    settings = get_settings()
    store = open_store(settings)
    state = start_experiment(
        store, model, (champion.version, champion.url), (challenger.version, challenger.url), params.ramp
    )
    if state.status not in SETTLED:
        url = rollout_router(deploy).ensure(model)
        logger.info("experiment %s: %s at %.0f%% through the router at %s", state.name, state.status,
                    100 * state.weight, url)  # fmt: skip
    _publish_report(state.name)
    return RolloutRef.of(state)


@task(name="evaluate-rollout", cache_policy=NO_CACHE)
def evaluate_rollout(name: str, params: RolloutParameters) -> RolloutRef:
    """One evaluation: the verdict, the action the ramp takes, the report."""
    result = evaluate_experiment(open_store(get_settings()), name, params.ramp, params.statistics)
    get_run_logger().info(
        "%s: %s → %s, challenger %.0f%% (%s)", name, result.evaluation.verdict, result.action.kind,
        100 * result.state.weight, "; ".join(result.action.reasons)[:400],
    )  # fmt: skip
    _publish_report(name)
    return RolloutRef.of(result.state, result.evaluation.verdict, result.action.reasons)


def _remember(key: str, value: Any) -> None:
    """Keep ``value`` on this task's transaction for its rollback hook."""
    current = get_transaction()
    if current is not None:
        current.set(key, value)


@task(name="move-champion-alias", cache_policy=NO_CACHE)
def move_champion_alias(tracking_uri: str, model: str, version: str, who: str, why: str) -> str | None:
    """The champion alias → ``version`` (audited); returns the version it named before."""
    client = mlflow_client(tracking_uri)
    before = resolve_alias(client, model, CHAMPION)
    previous = str(before.version) if before is not None else None
    _remember("alias", {"tracking_uri": tracking_uri, "model": model, "before": previous})
    move_alias(client, model, CHAMPION, version, who, why)
    return previous


@move_champion_alias.on_rollback
def _alias_back(transaction: Transaction) -> None:
    values = transaction.get("alias")
    if values and values["before"]:
        client = mlflow_client(values["tracking_uri"])
        move_alias(client, values["model"], CHAMPION, values["before"], "loopline", "promotion undone")


@task(name="route-all-to-challenger", cache_policy=NO_CACHE)
def route_all_to_challenger(name: str, who: str) -> None:
    """The router sends every user to the challenger (the old champion's server stays warm)."""
    _remember("experiment", name)
    why = f"promoted by {who}: all traffic to the challenger"
    settle(open_store(get_settings()), name, "promoted", 1.0, why, "promote")


@route_all_to_challenger.on_rollback
def _route_back(transaction: Transaction) -> None:
    name = transaction.get("experiment")
    why = "promotion undone: all traffic back to the champion"
    settle(open_store(get_settings()), name, "awaiting_approval", 0.0, why, "hold")


@task(name="record-promotion", cache_policy=NO_CACHE)
def record_promotion(tracking_uri: str, record: dict[str, Any]) -> None:
    """The promotion in the model's deployment history and on the version's tags."""
    from loopline.deploy.history import save_record

    _remember("record", {"tracking_uri": tracking_uri, "record": record})
    save_record(mlflow_client(tracking_uri), DeploymentRecord.from_json(record))


@record_promotion.on_rollback
def _record_undone(transaction: Transaction) -> None:
    from dataclasses import replace

    from loopline.deploy.history import save_record

    values = transaction.get("record")
    if values:
        undone = replace(
            DeploymentRecord.from_json(values["record"]), state="replaced", reason="promotion undone"
        )
        save_record(mlflow_client(values["tracking_uri"]), undone)


@task(name="roll-back-rollout", cache_policy=NO_CACHE)
def roll_back_rollout(name: str, tracking_uri: str, reasons: list[str], who: str = "loopline") -> RolloutRef:
    """Weight 0 (if not already), the version tagged with why, the event automations act on."""
    store = open_store(get_settings())
    found = store.get_experiment(name)
    if found is None:
        raise ValueError(f"No experiment {name!r}")
    state = found.state
    if state.status not in ("rolled_back", "halted"):
        why = f"rolled back by {who}: " + "; ".join(reasons)
        state = settle(store, name, "rolled_back", 0.0, why, "roll_back")
    client = mlflow_client(tracking_uri)
    client.set_model_version_tag(state.model, state.challenger_version, "rollout.verdict", state.status)
    client.set_model_version_tag(
        state.model, state.challenger_version, "rollout.reasons", "; ".join(reasons)[:4900]
    )
    emit_event(
        event="loopline.rollout.rolled-back",
        resource={"prefect.resource.id": f"loopline.model.{state.model}",
                  "prefect.resource.name": state.model},
        related=[{"prefect.resource.id": f"loopline.experiment.{name}",
                  "prefect.resource.role": "experiment"}],
        payload={"version": state.challenger_version, "champion": state.champion_version, "reasons": reasons,
                 "status": state.status},
    )  # fmt: skip
    _publish_report(name)
    return RolloutRef.of(state, "roll_back", tuple(reasons))
