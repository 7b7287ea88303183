"""One experiment through the event store (SQLite file): started once, judged on what both arms saw,
stepped up only after its step's time and sample, rolled back at once on errors, never promoted on no
traffic; the report shows the interval and the decisions."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from loopline.rollout.events import Decision, Feedback, RoutedRequest, Variant
from loopline.rollout.experiment import (
    evaluate_experiment,
    settle,
    start_experiment,
    step_started,
)
from loopline.rollout.policy import RampPolicy
from loopline.rollout.report import render_report
from loopline.rollout.stats import AbConfig
from loopline.rollout.store import EventStore, sqlite_url

pytestmark = pytest.mark.unit
RAMP = RampPolicy(min_step_seconds=60, min_step_requests=100, max_duration_seconds=3600)
CONFIG = AbConfig(margin=0.05, min_feedback_per_arm=100, min_requests_per_arm=100)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(sqlite_url(tmp_path / "events.db"))


def traffic(
    store: EventStore, name: str, n: int, share: float, errors: float, seed: int, at: datetime
) -> None:
    """``n`` requests split by ``share``, every one with feedback; both arms 90 % accurate; the
    challenger fails ``errors`` of its requests."""
    rng = np.random.default_rng(seed)
    rows, outcomes = [], []
    for i in range(n):
        variant: Variant = "challenger" if rng.random() < share else "champion"
        failed = variant == "challenger" and rng.random() < errors
        request_id = f"{seed}-{i}"
        rows.append(
            RoutedRequest(request_id, name, variant, "2" if variant == "challenger" else "1",
                          f"u{rng.integers(10**6)}", float(rng.gamma(4, 1)), 502 if failed else 200, "7", 0.9,
                          failed, at)
        )  # fmt: skip
        if not failed:
            outcomes.append(Feedback(request_id, correct=bool(rng.random() < 0.9), at=at))
    store.insert_requests(rows)
    store.insert_feedback(outcomes)


def test_start_is_idempotent_and_no_traffic_never_moves(store: EventStore) -> None:
    state = start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP)
    assert (state.name, state.weight, state.step, state.status) == ("digits-v2", 0.1, 0, "running")
    assert start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP) == state
    later = state.started_at + timedelta(hours=2)
    result = evaluate_experiment(store, state.name, RAMP, CONFIG, now=state.started_at + timedelta(minutes=5))
    assert result.evaluation.verdict == "inconclusive" and result.state.weight == 0.1
    assert "no traffic" in " ".join(result.action.reasons)
    asked = evaluate_experiment(store, state.name, RAMP, CONFIG, now=later)  # past max duration: a person
    assert asked.action.kind == "ask_person" and asked.state.status == "awaiting_approval"


def test_a_failing_challenger_is_rolled_back_at_once(store: EventStore) -> None:
    state = start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP)
    traffic(store, state.name, 4000, 0.1, errors=0.05, seed=1, at=state.started_at + timedelta(seconds=5))
    result = evaluate_experiment(
        store, state.name, RAMP, CONFIG, now=state.started_at + timedelta(seconds=10)
    )
    assert result.action.kind == "roll_back" and result.state.weight == 0
    assert result.state.status == "rolled_back" and "error" in " ".join(result.action.reasons)
    assert store.get_experiment(state.name).state.status == "rolled_back"  # type: ignore[union-attr]


def test_a_good_challenger_walks_the_ramp_after_each_steps_time_and_sample(store: EventStore) -> None:
    state = start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP)
    start = state.started_at
    traffic(store, state.name, 3000, 0.1, errors=0, seed=2, at=start + timedelta(seconds=5))
    early = evaluate_experiment(store, state.name, RAMP, CONFIG, now=start + timedelta(seconds=30))
    assert early.state.weight == 0.1  # the step's minimum time is not over
    traffic(store, state.name, 20000, 0.1, errors=0, seed=3, at=start + timedelta(seconds=40))
    later = evaluate_experiment(store, state.name, RAMP, CONFIG, now=start + timedelta(seconds=90))
    assert later.evaluation.verdict == "step_up", later.evaluation.reasons  # 2,300 challenger rows, 90 %
    assert (later.state.weight, later.state.step) == (0.5, 1)
    assert step_started(later.state, store.list_decisions(state.name)) == start + timedelta(seconds=90)
    markdown = render_report(later.state, store.list_decisions(state.name))
    assert "always-valid interval" in markdown and "data:image/png;base64," in markdown
    assert "| accuracy |" in markdown and f"{later.evaluation.verdict}" in markdown


def test_settle_records_the_end_with_its_reason(store: EventStore) -> None:
    state = start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP)
    done = settle(store, state.name, "promoted", 1.0, "approved by ada", "promote")
    assert (done.status, done.weight) == ("promoted", 1.0)
    last = store.list_decisions(state.name)[-1]
    assert (last.verdict, last.reasons, last.weight_after) == ("promote", ("approved by ada",), 1.0)


def test_the_router_follows_the_models_latest_experiment(store: EventStore) -> None:
    assert store.latest_experiment("digits") is None
    first = start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP)
    start_experiment(store, "other", ("1", "http://c"), ("5", "http://d"), RAMP)
    assert store.latest_experiment("digits") == first
    second = start_experiment(store, "digits", ("2", "http://a"), ("3", "http://b"), RAMP)
    assert store.latest_experiment("digits") == second and second.started_at > first.started_at


def sticky_traffic(
    store: EventStore,
    name: str,
    weight: float,
    start: datetime,
    seconds: int,
    users: int = 200,
    rig: float = 0,
) -> None:
    """Requests from 200 sticky users over ``seconds``, each assigned by the router's hash at
    ``weight`` (``rig``: the share of users sent to the challenger whatever their hash, a broken split)."""
    from loopline.rollout.assign import assign, user_hash

    rng, users = np.random.default_rng(seconds), 200
    rows = []
    for i in range(users * 3):
        key = f"user-{rng.integers(users)}"
        arm: Variant = "challenger" if rng.random() < rig else assign(name, key, weight)
        rows.append(RoutedRequest(f"{start.isoformat()}-{i}", name, arm, "2" if arm == "challenger" else "1",
                                  user_hash(name, key), 5.0, 200, "7", 0.9, False,
                                  start + timedelta(seconds=seconds * i / (users * 3))))  # fmt: skip
    store.insert_requests(rows)


def test_the_split_is_checked_on_the_current_steps_users_not_across_the_ramp(store: EventStore) -> None:
    """Across steps a sticky user is counted in both arms (champion at 10 %, challenger at 50 %): the
    cumulative users are no sample of one weight. Each step's users, once the routers follow the new
    weight, are."""
    state = start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP)
    start = state.started_at
    sticky_traffic(store, state.name, 0.1, start, 60)
    evaluate_experiment(store, state.name, RAMP.model_copy(update={"min_step_requests": 1}), CONFIG,
                        now=start + timedelta(seconds=61))  # fmt: skip
    assert store.get_experiment(state.name).state.weight in (0.1, 0.5)  # type: ignore[union-attr]
    stepped = start + timedelta(seconds=62)  # step 2 at 50 %, as the policy would set it
    found = store.get_experiment(state.name)
    assert found is not None
    store.save_experiment(replace(found.state, weight=0.5, step=1), found.version)
    store.append_decision(Decision(state.name, "step_up", ("step 2",), {}, 0.5, stepped))
    sticky_traffic(store, state.name, 0.5, stepped + timedelta(seconds=1), 15)  # a short step so far
    fine = evaluate_experiment(store, state.name, RAMP, CONFIG, now=stepped + timedelta(seconds=16))
    assert not fine.evaluation.halted and fine.evaluation.srm.unit == "users", fine.evaluation.reasons
    cumulative = store.arm_summaries(state.name)
    assert cumulative["champion"].users + cumulative["challenger"].users > 200  # users in both arms
    rigged = start_experiment(store, "rigged", ("1", "http://a"), ("2", "http://b"), RAMP)
    sticky_traffic(store, rigged.name, 0.1, rigged.started_at, 60, rig=0.4)
    broken = evaluate_experiment(
        store, rigged.name, RAMP, CONFIG, now=rigged.started_at + timedelta(seconds=61)
    )
    assert broken.evaluation.halted and broken.state.status == "halted" and broken.state.weight == 0
    assert "sample ratio mismatch" in " ".join(broken.action.reasons)
