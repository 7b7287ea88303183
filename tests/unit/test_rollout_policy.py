"""The ramp policy: a roll-back verdict acts at once, steps wait for their time and sample, the last step
to all traffic needs the evidence and a person, undecided experiments ask a person after the limit, and
no traffic never moves anything."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loopline.rollout.policy import RampPolicy, decide

pytestmark = pytest.mark.unit
POLICY = RampPolicy(min_step_seconds=60, min_step_requests=100, max_duration_seconds=3600)


def test_a_roll_back_verdict_sets_weight_zero_at_once_on_any_step() -> None:
    for step in range(3):
        action = decide(POLICY, "roll_back", ("errors 5%",), step, 1, 0, 1)
        assert (action.kind, action.weight) == ("roll_back", 0.0) and action.reasons == ("errors 5%",)


def test_steps_wait_for_time_and_sample_then_move_up_one_at_a_time() -> None:
    early = decide(POLICY, "step_up", (), 0, 30, 500, 30)
    assert (early.kind, early.weight) == ("hold", 0.1) and "held 30 s of 60 s" in early.reasons[-1]
    thin = decide(POLICY, "step_up", (), 0, 90, 40, 90)
    assert thin.kind == "hold" and "40 challenger requests of 100" in thin.reasons[-1]
    up = decide(POLICY, "promote", (), 0, 90, 150, 90)  # strong evidence still walks the ramp
    assert (up.kind, up.weight, up.step) == ("set_weight", 0.5, 1)
    assert decide(POLICY, "step_up", (), 1, 90, 150, 200).weight == 0.8


def test_all_traffic_needs_the_evidence_and_then_a_person() -> None:
    no_evidence = decide(POLICY, "step_up", (), 2, 600, 5000, 900)
    assert (no_evidence.kind, no_evidence.weight) == ("hold", 0.8)
    asked = decide(POLICY, "promote", ("not worse",), 2, 600, 5000, 900)
    assert (asked.kind, asked.weight) == ("ask_approval", 0.8)


@pytest.mark.parametrize("verdict", ["hold", "inconclusive"])
def test_undecided_experiments_hold_then_ask_a_person(verdict: str) -> None:
    held = decide(POLICY, verdict, ("no traffic",), 0, 10_000, 0, 100)  # type: ignore[arg-type]
    assert (held.kind, held.weight) == ("hold", 0.1)
    late = decide(POLICY, verdict, ("no traffic",), 1, 10_000, 0, 3600)  # type: ignore[arg-type]
    assert (late.kind, late.weight) == ("ask_person", 0.5) and "after 1 h" in late.reasons[-1]


@pytest.mark.parametrize("steps", [(0.5, 0.1, 1.0), (0.1, 0.5), (1.0,), (0.0, 1.0), (0.5, 0.5, 1.0)])
def test_a_ramp_must_rise_to_all_traffic(steps: tuple[float, ...]) -> None:
    with pytest.raises(ValidationError, match=r"steps|last step"):
        RampPolicy(steps=steps)
