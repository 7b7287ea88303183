"""The ``rollout-report`` artifact: the experiment's weights, samples per arm, each metric with its
always-valid interval, the verdict with its reasons, and a plot of the accuracy interval narrowing over
time under the challenger's weight."""

from __future__ import annotations

import base64
import io
import math

from loopline.rollout.events import Decision, ExperimentState


def _fmt(value: float | None, digits: int = 3, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def interval_plot(decisions: list[Decision]) -> bytes | None:
    """PNG: the accuracy difference's always-valid interval at every evaluation, and the weight; None
    before the first evaluation with numbers."""
    points = [d for d in decisions if "accuracy_difference_lower" in d.numbers]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = points[0].at
    minutes = [(d.at - start).total_seconds() / 60 for d in points]

    def clipped(key: str, bound: float) -> list[float]:
        return [max(-bound, min(bound, d.numbers[key])) if math.isfinite(d.numbers[key]) else bound
                * (1 if "upper" in key else -1) for d in points]  # fmt: skip

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True, height_ratios=(3, 1))
    lower, upper = clipped("accuracy_difference_lower", 1), clipped("accuracy_difference_upper", 1)
    estimate = [d.numbers.get("accuracy_difference", math.nan) for d in points]
    top.fill_between(minutes, lower, upper, alpha=0.3, step="post", label="always-valid interval")
    top.plot(minutes, estimate, drawstyle="steps-post", label="estimate")
    top.axhline(0, color="grey", linewidth=0.8)
    top.set_ylabel("accuracy: challenger - champion")
    top.legend(loc="upper right", fontsize=8)
    bottom.plot(minutes, [d.weight_after for d in points], drawstyle="steps-post", color="tab:orange")
    bottom.set_ylabel("weight")
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_xlabel("minutes since the first evaluation")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def render_report(state: ExperimentState, decisions: list[Decision]) -> str:
    """Markdown of the experiment as it stands."""
    latest = next((d for d in reversed(decisions) if d.numbers), None)
    numbers = latest.numbers if latest else {}

    def v(key: str, digits: int = 3) -> str:
        return _fmt(numbers.get(key), digits)

    def interval(prefix: str, digits: int = 3, unit: str = "") -> str:
        return f"[{v(prefix + '_lower' + unit, digits)}, {v(prefix + '_upper' + unit, digits)}]"

    title = f"{state.model} v{state.challenger_version} (challenger) against v{state.champion_version}"
    lines = [
        f"# Rollout: {title}",
        "",
        f"**Status: {state.status}** · challenger weight **{state.weight:.0%}** (step {state.step + 1}) · "
        f"started {state.started_at:%Y-%m-%d %H:%M:%S} UTC · {len(decisions)} decisions",
        "",
        "| | champion | challenger | challenger - champion (always-valid interval) |",
        "|---|---|---|---|",
        f"| requests | {v('champion_requests', 0)} | {v('challenger_requests', 0)} | |",
        f"| feedback | {v('champion_feedback', 0)} | {v('challenger_feedback', 0)} | |",
        f"| accuracy | {v('champion_accuracy')} | {v('challenger_accuracy')} | "
        f"{v('accuracy_difference')} {interval('accuracy_difference')} |",
        f"| error rate | {v('champion_error_rate', 4)} | {v('challenger_error_rate', 4)} | "
        f"{interval('error_rate_difference', 4)} |",
        f"| p99 latency (ms) | {v('champion_latency_ms', 1)} | {v('challenger_latency_ms', 1)} | challenger "
        f"{interval('challenger_latency', 1, '_ms')}, allowed up to {v('latency_limit_upper_ms', 1)} |",
        f"| traffic share | | {v('observed_share')} observed | expected {v('expected_share')}, "
        f"sample-ratio p = {v('srm_p_value', 4)} |",
        "",
    ]
    if latest is not None:
        lines += [f"**Latest verdict: {latest.verdict}** ({latest.at:%H:%M:%S} UTC)", ""]
        lines += [f"- {reason}" for reason in latest.reasons]
        lines.append("")
    png = interval_plot(decisions)
    if png is not None:
        lines += [f"![interval over time](data:image/png;base64,{base64.b64encode(png).decode()})", ""]
    lines += ["## Decisions", "", "| when (UTC) | verdict | weight after | why |", "|---|---|---|---|"]
    for decision in decisions[-30:]:
        why = "; ".join(decision.reasons).replace("|", "/")[:300]
        lines.append(f"| {decision.at:%H:%M:%S} | {decision.verdict} | {decision.weight_after:.0%} | {why} |")
    return "\n".join(lines)
