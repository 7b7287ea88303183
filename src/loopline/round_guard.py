"""Whether a pipeline run has work to do: pure decisions from what the run found, each with its message.

A run stops early, completes, and says why when

- another pipeline run is in the middle of a round: waiting for a person (paused or suspended), or running
  and started first. The deployments' concurrency limit (one run at a time, the next waits) does not cover
  this alone: a run that waits for a review gives its slot up, and the next run would label and train the
  same images again;
- collect found nothing new: the dataset version it produced is one a registered model version was already
  trained on by another pipeline run. (A run resumed after a review starts again from the top and finds its
  own version: that is not "nothing new".)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

IN_FLIGHT = frozenset({"PENDING", "RUNNING", "PAUSED", "CANCELLING"})
StopReason = Literal["round_in_flight", "nothing_new"]


@dataclass(frozen=True)
class PipelineRun:
    """A flow run of the pipeline, as the Prefect API reports it."""

    id: str
    name: str
    state_type: str  # PENDING, RUNNING, PAUSED, CANCELLING, ...
    state_name: str  # e.g. Suspended, Paused, Running
    created: datetime


@dataclass(frozen=True)
class TrainedVersion:
    """A registered model version and the pipeline run that registered it ("" when unknown)."""

    model: str
    version: str
    flow_run_id: str


@dataclass(frozen=True)
class StopEarly:
    reason: StopReason
    message: str


def run_to_give_way_to(this: PipelineRun, others: Sequence[PipelineRun]) -> PipelineRun | None:
    """The run this one gives way to, or None. A run waiting for a person always counts (its round is in
    flight); a running one only when it was created first, so of two runs that start together exactly
    one carries on."""
    first = (this.created, this.id)
    blocking = [
        run
        for run in others
        if run.id != this.id
        and run.state_type in IN_FLIGHT
        and (run.state_type == "PAUSED" or (run.created, run.id) < first)
    ]
    return min(blocking, key=lambda run: (run.created, run.id), default=None)


def round_in_flight(this: PipelineRun, others: Sequence[PipelineRun]) -> StopEarly | None:
    """Stop when another pipeline run is in the middle of a round (see ``run_to_give_way_to``)."""
    other = run_to_give_way_to(this, others)
    if other is None:
        return None
    waiting = other.state_type == "PAUSED"
    what = "waits for a person" if waiting else "is running"
    fix = f"decide on it (`loopline approve {other.id}` or `--reject`)" if waiting else "let it finish"
    return StopEarly(
        "round_in_flight",
        f"Stopped before collecting: pipeline run {other.name!r} ({other.id}) {what} "
        f"({other.state_name}), so this run would label and train the same images again. Nothing was "
        f"started. To go on, {fix}; the next run takes whatever is new then.",
    )


def nothing_new(
    dataset_version: str,
    source: str,
    this_run_id: str,
    trained: Sequence[TrainedVersion],
) -> StopEarly | None:
    """Stop when another run already trained a registered model version on this dataset version."""
    earlier = [t for t in trained if t.flow_run_id != this_run_id]
    if not earlier:
        return None
    last = max(earlier, key=lambda t: int(t.version) if t.version.isdigit() else 0)
    by = f" by pipeline run {last.flow_run_id}" if last.flow_run_id else ""
    return StopEarly(
        "nothing_new",
        f"Nothing new to do: collect found no new images in {source} (dataset version "
        f"{dataset_version[:12]} is unchanged) and {last.model} version {last.version} was already "
        f"trained on it{by}. No Label Studio project, no training. To go on, add images to the source; to "
        "train on the same images again, run with stop_when_unchanged=false.",
    )
