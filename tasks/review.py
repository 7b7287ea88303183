"""Typed human approvals: a pause when a flow runs in-process, a suspension under a deployment.

A suspended run holds no process or pod while people decide; when resumed, the worker runs the flow
again from the top, every task before the gate is idempotent, and the same ``key`` returns the decision
given. ``loopline approve RUN_ID [--reject] [--comment …]`` or the Prefect UI form resumes it.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Literal

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from pydantic import Field


class Review(RunInput):
    """A reviewer's decision at a gate."""

    decision: Literal["approve", "reject"] = Field(..., description="approve, or reject (send it back)")
    comment: str = Field(default="", description="Why: shown in the audit trail")
    reviewer: str = Field(default="", description="Who decides")


class ModelReview(Review):
    """A reviewer's decision on a model: approve (it becomes the champion, or the challenger of an A/B
    test) or reject (aliases untouched)."""


class RolloutReview(Review):
    """A reviewer's decision at the end of an A/B test: approve (the challenger takes all traffic and
    becomes champion) or reject (it is rolled back)."""


def ask_for_review(
    key: str,
    report_markdown: str,
    timeout_seconds: int,
    auto_approve: bool = False,
    form_type: type[Review] = Review,
) -> Review:
    """Stop at a typed approval (``form_type``) showing ``report_markdown``; returns the decision."""
    logger = get_run_logger()
    if auto_approve:
        logger.warning("Review %s approved automatically (auto_approve=True: a demo, not a decision)", key)
        return form_type(
            decision="approve", comment="auto-approved by the demo (auto_approve=True)", reviewer="demo"
        )
    form = form_type.with_initial_data(description=report_markdown, reviewer=getpass.getuser())
    context = FlowRunContext.get()
    under_deployment = bool(context and context.flow_run and context.flow_run.deployment_id)
    logger.info(
        "Waiting for review %s (%s): loopline approve <flow run id>",
        key,
        "suspended" if under_deployment else "paused",
    )
    if under_deployment:
        return suspend_flow_run(wait_for_input=form, timeout=timeout_seconds, key=key)
    return pause_flow_run(wait_for_input=form, timeout=timeout_seconds, poll_interval=5, key=key)


def record_review(gate: str, subject: str, review: Review) -> str:
    """An audit artifact: who decided what, when, about which subject, and why."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    markdown = (
        f"# Review: {gate}\n\n| subject | decision | reviewer | when | comment |\n|---|---|---|---|---|\n"
        f"| {subject} | **{review.decision}** | {review.reviewer or 'unknown'} | {when} | "
        f"{review.comment.replace('|', '/') or '-'} |\n"
    )
    create_markdown_artifact(
        markdown=markdown, key=f"{gate}-review", description=f"{gate}: {review.decision}"
    )
    return markdown
