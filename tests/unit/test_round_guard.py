"""A pipeline run stops early when another run is mid-round or nothing is new (loopline.round_guard)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loopline.round_guard import PipelineRun, TrainedVersion, nothing_new, round_in_flight, run_to_give_way_to

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


def run(id: str, state_type: str = "RUNNING", minutes: int = 0, state_name: str = "Running") -> PipelineRun:
    return PipelineRun(id, f"run-{id}", state_type, state_name, T0 + timedelta(minutes=minutes))


def test_alone_a_run_goes_on() -> None:
    this = run("b", minutes=5)
    assert round_in_flight(this, []) is None
    assert round_in_flight(this, [this]) is None  # the API lists the run itself too


def test_a_run_gives_way_to_one_waiting_for_a_person_whenever_that_one_started() -> None:
    this = run("a", minutes=0)
    later_but_waiting = run("b", "PAUSED", minutes=5, state_name="Suspended")
    stop = round_in_flight(this, [this, later_but_waiting])
    assert stop is not None and stop.reason == "round_in_flight"
    assert "run-b" in stop.message and "Suspended" in stop.message and "loopline approve b" in stop.message


def test_of_two_running_runs_only_the_later_one_stops() -> None:
    first, second = run("a", minutes=0), run("b", minutes=0)  # same instant: the id decides
    assert run_to_give_way_to(first, [first, second]) is None
    assert run_to_give_way_to(second, [first, second]) == first
    older = run("z", "PENDING", minutes=-1)
    assert run_to_give_way_to(first, [older]) == older


@pytest.mark.parametrize("state_type", ["COMPLETED", "FAILED", "CRASHED", "CANCELLED", "SCHEDULED"])
def test_finished_and_queued_runs_are_not_in_the_way(state_type: str) -> None:
    this = run("b", minutes=5)
    assert round_in_flight(this, [run("a", state_type, minutes=0)]) is None


def test_nothing_new_when_another_run_trained_on_this_dataset_version() -> None:
    trained = [TrainedVersion("clf", "2", "run-1"), TrainedVersion("clf", "10", "run-2")]
    stop = nothing_new("abcdef0123456789", "/incoming", "run-3", trained)
    assert stop is not None and stop.reason == "nothing_new"
    assert "clf version 10" in stop.message and "run-2" in stop.message and "/incoming" in stop.message
    assert "stop_when_unchanged=false" in stop.message


def test_a_new_dataset_version_or_the_runs_own_model_is_work_to_do() -> None:
    assert nothing_new("abc", "/incoming", "run-3", []) is None
    # resumed after its model review, a run starts again from the top and meets its own version
    assert nothing_new("abc", "/incoming", "run-3", [TrainedVersion("clf", "1", "run-3")]) is None
