"""One experiment's life in the event store, without Prefect: start it (idempotent), evaluate it (the
statistics on everything both arms saw, the policy on the verdict, the new state saved with optimistic
concurrency and the decision appended), and settle it (promoted, rolled back, halted, stopped)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from loopline.rollout import stats
from loopline.rollout.events import Decision, ExperimentState, ExperimentStatus, Variant, Verdict, utc_now
from loopline.rollout.policy import Action, RampPolicy, decide
from loopline.rollout.store import ArmTotals, EventStore

SETTLED: frozenset[ExperimentStatus] = frozenset({"promoted", "rolled_back", "halted", "stopped"})
# The split is checked on the users of the current step from this long after it began: routers re-read
# the weight every few seconds (RouterSettings.refresh_seconds, 5), and before that they route by the old one.
SPLIT_SETTLE = timedelta(seconds=10)


def experiment_name(model: str, challenger_version: str) -> str:
    """One experiment per challenger version: a rerun finds it again."""
    return f"{model}-v{challenger_version}"


def start_experiment(
    store: EventStore,
    model: str,
    champion: tuple[str, str],
    challenger: tuple[str, str],
    ramp: RampPolicy,
) -> ExperimentState:
    """The experiment of ``challenger`` ((version, url)) against ``champion``: created on the ramp's
    first step, or the one a previous run started (whatever its state)."""
    name = experiment_name(model, challenger[0])
    found = store.get_experiment(name)
    if found is not None:
        return found.state
    state = ExperimentState(
        name=name,
        model=model,
        champion_version=champion[0],
        challenger_version=challenger[0],
        champion_url=champion[1],
        challenger_url=challenger[1],
        seed=name,
        weight=ramp.steps[0],
        step=0,
        status="running",
    )
    store.save_experiment(state, None)
    store.append_decision(Decision(name, "hold", ("experiment started",), {}, state.weight, state.started_at))
    return state


def step_started(state: ExperimentState, decisions: list[Decision]) -> datetime:
    """When the current weight was set: the first decision of the latest run of equal weights."""
    started = state.started_at
    previous: float | None = None
    for decision in decisions:
        if decision.weight_after != previous:
            started, previous = decision.at, decision.weight_after
    return started if previous == state.weight else state.updated_at


@dataclass(frozen=True)
class Evaluated:
    """One evaluation: what the statistics said, what the policy did, the state after it."""

    evaluation: stats.AbEvaluation
    action: Action
    state: ExperimentState
    arms: dict[Variant, ArmTotals]


def evaluate_experiment(
    store: EventStore,
    name: str,
    ramp: RampPolicy,
    config: stats.AbConfig,
    now: datetime | None = None,
) -> Evaluated:
    """Judge the experiment on everything both arms saw, decide, save the new state and the decision.

    Raises:
        ExperimentConflict: another writer changed the experiment meanwhile (nothing saved: evaluate again).
        ValueError: no experiment of this name.
    """
    when = now or utc_now()
    found = store.get_experiment(name)
    if found is None:
        raise ValueError(f"No experiment {name!r} in the event store. To fix this, start it first.")
    state, decisions = found.state, store.list_decisions(name)
    arms = store.arm_summaries(name)
    since = step_started(state, decisions)
    on_step = store.arm_summaries(name, since=since)["challenger"].requests
    final = state.step + 1 >= len(ramp.steps) - 1
    settled = store.arm_summaries(name, since=since + SPLIT_SETTLE)
    evaluation = stats.evaluate(
        arms["champion"],
        arms["challenger"],
        config,
        expected_share=state.weight,
        final_step=final,
        split=(settled["champion"], settled["challenger"]),
    )
    seconds_on_step = (when - since).total_seconds()
    total_seconds = (when - state.started_at).total_seconds()
    action = decide(
        ramp, evaluation.verdict, evaluation.reasons, state.step, seconds_on_step, on_step, total_seconds
    )
    status: ExperimentStatus = state.status
    if action.kind == "roll_back":
        status = "halted" if evaluation.halted else "rolled_back"
    elif action.kind in ("ask_approval", "ask_person"):
        status = "awaiting_approval"
    new = replace(state, weight=action.weight, step=action.step, status=status, updated_at=when)
    store.save_experiment(new, found.version)
    store.append_decision(
        Decision(name, evaluation.verdict, action.reasons, evaluation.numbers, new.weight, when)
    )
    return Evaluated(evaluation, action, new, arms)


def settle(
    store: EventStore, name: str, status: ExperimentStatus, weight: float, reason: str, verdict: Verdict
) -> ExperimentState:
    """Set the experiment's final (or resumed) status and weight, with a decision row (``verdict``,
    ``reason``) saying why."""
    found = store.get_experiment(name)
    if found is None:
        raise ValueError(f"No experiment {name!r} in the event store. To fix this, start it first.")
    when = utc_now()
    new = replace(found.state, status=status, weight=weight, updated_at=when)
    store.save_experiment(new, found.version)
    store.append_decision(Decision(name, verdict, (reason,), {}, weight, when))
    return new
