"""One experiment through the event store (SQLite file): started once, judged on what both arms saw,
stepped up only after its step's time and sample, rolled back at once on errors, never promoted on no
traffic; the report shows the interval and the decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from loopline.rollout.events import Decision, Feedback, RoutedRequest, Variant
from loopline.rollout.experiment import (
    evaluate_experiment,
    expected_share,
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
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


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
    done = settle(store, state.name, "promoted", 1.0, "approved by ada")
    assert (done.status, done.weight) == ("promoted", 1.0)
    last = store.list_decisions(state.name)[-1]
    assert (last.verdict, last.reasons, last.weight_after) == ("promote", ("approved by ada",), 1.0)


def test_the_expected_share_weights_each_weight_by_how_long_it_held() -> None:
    decisions = [
        Decision("e", "hold", (), {}, 0.1, T0),
        Decision("e", "step_up", (), {}, 0.5, T0 + timedelta(minutes=10)),
    ]
    assert expected_share(decisions, T0 + timedelta(minutes=20)) == pytest.approx(0.3)
    assert expected_share([], T0) == 0.0


def test_the_router_follows_the_models_latest_experiment(store: EventStore) -> None:
    assert store.latest_experiment("digits") is None
    first = start_experiment(store, "digits", ("1", "http://a"), ("2", "http://b"), RAMP)
    start_experiment(store, "other", ("1", "http://c"), ("5", "http://d"), RAMP)
    assert store.latest_experiment("digits") == first
    second = start_experiment(store, "digits", ("2", "http://a"), ("3", "http://b"), RAMP)
    assert store.latest_experiment("digits") == second and second.started_at > first.started_at
