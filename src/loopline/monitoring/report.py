"""The ``model-monitor`` artifact: the verdict and what drifted, traffic per arm, every drift test with its
corrected p-value, accuracy from feedback per bucket with its Wilson interval, and plots (PNG as data
URIs): served against reference confidence and brightness, and accuracy over time."""

from __future__ import annotations

import base64
import io
import math

import numpy as np

from loopline.monitoring.features import IMAGE_STATISTICS
from loopline.monitoring.monitor import MonitorReport


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def monitor_plot(report: MonitorReport) -> bytes | None:
    """PNG: confidence and brightness histograms (reference against served) and accuracy over time; None
    when there is nothing to draw."""
    judged = [b for b in report.accuracy if b.judged]
    reference = report.reference
    if reference is None and not judged:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (conf, bright, acc) = plt.subplots(1, 3, figsize=(12, 3.2))
    if reference is not None:
        bins = np.linspace(0, 1, 21)
        conf.hist(reference.confidences, bins=bins, density=True, alpha=0.5, label="reference (test split)")
        if len(report.served_confidences):
            conf.hist(report.served_confidences, bins=bins, density=True, alpha=0.5, label="served")
        conf.legend(fontsize=7)
        i = IMAGE_STATISTICS.index("brightness")
        bright.hist(reference.statistics[:, i], bins=20, density=True, alpha=0.5, label="reference")
        if report.served_statistics.size:
            bright.hist(report.served_statistics[:, i], bins=20, density=True, alpha=0.5, label="served")
        bright.legend(fontsize=7)
        acc.axhline(reference.accuracy, color="grey", linewidth=0.8, label="test accuracy")
    conf.set_title("confidence", fontsize=9)
    bright.set_title("brightness", fontsize=9)
    if judged:
        start = report.verdict.window_start
        minutes = [(b.start - start).total_seconds() / 60 for b in judged]
        low = [b.accuracy - b.lower for b in judged]
        high = [b.upper - b.accuracy for b in judged]
        acc.errorbar(minutes, [b.accuracy for b in judged], yerr=[low, high], fmt="o", label="feedback")
        acc.set_xlabel("minutes into the window")
    acc.set_ylim(-0.05, 1.05)
    acc.set_title("accuracy (95% Wilson)", fontsize=9)
    acc.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=70)
    plt.close(figure)
    return buffer.getvalue()


def render_monitor_report(report: MonitorReport) -> str:
    """Markdown of one monitor run."""
    v = report.verdict
    champion = f"champion v{v.champion_version}" if v.champion_version else "no champion"
    lines = [
        f"# Monitor: {v.model} ({champion})",
        "",
        f"**Verdict: {v.verdict}** (severity {v.severity}) · window {v.window_start:%Y-%m-%d %H:%M} to "
        f"{v.window_end:%H:%M} UTC · {v.requests} champion answers · {v.samples} served images measured",
        "",
    ]
    lines += [f"- drifted: {f.detail}" for f in v.findings]
    lines += [f"- note: {note}" for note in v.notes]
    lines += ["", "## Traffic", "", "| arm | requests | error rate | p50 ms | p95 ms | p99 ms |"]
    lines.append("|---|---|---|---|---|---|")
    for arm, h in [*report.arms.items(), ("judged: champion version", report.champion)]:
        lines.append(
            f"| {arm} | {h.requests} | {_fmt(h.error_rate, 4)} | {_fmt(h.p50_ms, 1)} | {_fmt(h.p95_ms, 1)} | "
            f"{_fmt(h.p99_ms, 1)} |"
        )
    if report.tests:
        t = report.thresholds
        lines += ["", f"## Drift tests ({t.correction} correction, alpha {t.alpha})", ""]
        lines += ["| test | statistic | p | adjusted p | reference median | served median | drift |"]
        lines.append("|---|---|---|---|---|---|---|")
        for test in report.tests:
            lines.append(
                f"| {test.label} | {test.statistic:.4g} | {test.p_value:.3g} | {test.adjusted_p:.3g} | "
                f"{_fmt(test.reference_center)} | {_fmt(test.current_center)} | "
                f"{'**yes**' if test.rejected else 'no'} |"
            )
    o = report.overall_accuracy
    lines += ["", "## Accuracy from feedback", ""]
    lines.append(
        f"Window: {_fmt(o.accuracy)} [{_fmt(o.lower)}, {_fmt(o.upper)}] on {o.judged} judged answers."
    )
    if report.reference is not None:
        lines.append(
            f"Champion's test accuracy: {report.reference.accuracy:.3f} ({report.reference.source})."
        )
    lines += ["", "| from (UTC) | judged | accuracy | 95% Wilson interval |", "|---|---|---|---|"]
    for b in report.accuracy:
        lines.append(
            f"| {b.start:%H:%M} | {b.judged} | {_fmt(b.accuracy)} | [{_fmt(b.lower)}, {_fmt(b.upper)}] |"
        )
    png = monitor_plot(report)
    if png is not None:
        lines += ["", f"![monitor plots](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines)
