"""The rollout policy (pure): what to do with the challenger's share of traffic after each evaluation.

A ramp of steps (default 10 → 50 → 80 → 100 % of users for the challenger). Each step is held for a
minimum duration and a minimum number of the challenger's requests before the next; the statistics'
verdict decides whether it may go on:

- ``roll_back`` (a guardrail breached, worse beyond the margin, a broken split): weight 0 at once,
  whatever the step or the time;
- ``step_up`` (by default: accuracy shown not worse than the margin, guardrails not breached; with the
  statistics' ``step_up_on="no_harm"``: no harm seen so far) moves to the next step once the step's
  minimums are met — but never
  to 100 %: the last step needs ``promote`` (the evidence says the challenger is not worse than the
  margin) and then a person's approval (``ask_approval``);
- ``promote`` at an earlier step counts as ``step_up``: the ramp is walked step by step regardless;
- ``hold`` and ``inconclusive`` keep the weight; an experiment still undecided after ``max_duration``
  asks a person instead of deciding (``ask_person``), and one with no traffic never goes anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopline.rollout.events import Verdict

ActionKind = Literal["set_weight", "hold", "ask_approval", "roll_back", "ask_person"]


class RampPolicy(BaseModel):
    """How the challenger's share grows (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(frozen=True)

    steps: tuple[float, ...] = Field(
        default=(0.1, 0.5, 0.8, 1.0), description="The challenger's share of users at each step, rising."
    )
    min_step_seconds: float = Field(default=300.0, ge=0, description="Shortest time on a step.")
    min_step_requests: int = Field(
        default=200, ge=0, description="Fewest challenger requests on a step before the next."
    )
    max_duration_seconds: float = Field(
        default=24 * 3600.0, gt=0, description="An experiment still undecided after this asks a person."
    )

    @field_validator("steps")
    @classmethod
    def _rising_to_all(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if len(steps) < 2 or any(not 0 < s <= 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(
                f"steps {steps} must be two or more shares rising strictly, each in (0, 1]; e.g. (0.1, 0.5, "
                "0.8, 1.0)"
            )
        if steps[-1] != 1.0:
            raise ValueError(f"the last step must be 1.0 (all traffic to the challenger), not {steps[-1]}")
        return steps


@dataclass(frozen=True)
class Action:
    """What to do now: the challenger's share after it, and why."""

    kind: ActionKind
    weight: float
    step: int
    reasons: tuple[str, ...]


def decide(
    policy: RampPolicy,
    verdict: Verdict,
    reasons: tuple[str, ...],
    step: int,
    step_seconds: float,
    step_requests: int,
    total_seconds: float,
) -> Action:
    """The next action after an evaluation whose verdict is ``verdict`` (with its ``reasons``), the
    experiment being on ``step`` for ``step_seconds`` with ``step_requests`` challenger requests there,
    ``total_seconds`` after it started."""
    weight = policy.steps[step]
    if verdict == "roll_back":
        return Action("roll_back", 0.0, step, reasons)
    if verdict in ("step_up", "promote"):
        waiting = []
        if step_seconds < policy.min_step_seconds:
            waiting.append(f"step {step + 1} held {step_seconds:.0f} s of {policy.min_step_seconds:.0f} s")
        if step_requests < policy.min_step_requests:
            waiting.append(
                f"step {step + 1} has {step_requests} challenger requests of {policy.min_step_requests}"
            )
        if not waiting and step + 1 >= len(policy.steps) - 1:  # the next step is all traffic
            if verdict == "promote":
                return Action("ask_approval", weight, step, (*reasons, "ready for all traffic: approve?"))
            waiting.append("the last step to all traffic needs the evidence to promote")
        elif not waiting:
            share = policy.steps[step + 1]
            return Action("set_weight", share, step + 1, (*reasons, f"step {step + 2}: {share:.0%}"))
        return Action("hold", weight, step, (*reasons, *waiting))
    if total_seconds >= policy.max_duration_seconds:
        hours = policy.max_duration_seconds / 3600
        return Action("ask_person", weight, step, (*reasons, f"still {verdict} after {hours:g} h: decide"))
    return Action("hold", weight, step, reasons)
