"""Render labeling results for people (pure functions)."""

from __future__ import annotations

from loopline.labeling.agreement import AgreementReport
from loopline.labeling.export import ExportSummary


def render_agreement_report(
    project_url: str, summary: ExportSummary, report: AgreementReport, gate_violations: list[str]
) -> str:
    kappa = "n/a" if report.kappa is None else f"{report.kappa:.3f}"
    lines = [
        "# Labels and agreement",
        "",
        f"- project: {project_url}",
        f"- items with {report.annotators_per_item} annotations: {report.items}; "
        f"**{report.kappa_method} kappa {kappa}**; raw agreement {report.raw_agreement:.1%}",
        f"- consensus labels: {len(summary.items)}; ties sent back for review: {len(summary.ties)}",
        "- gate: " + ("passed" if not gate_violations else "**failed**: " + "; ".join(gate_violations)),
        "",
        "| count | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(summary.counts.items())),
    ]
    if summary.unknown_labels:
        lines += [
            "",
            "Labels outside the label set (not used): "
            + ", ".join(f"`{k}` x{v}" for k, v in sorted(summary.unknown_labels.items())),
        ]
    if report.per_label:
        lines += ["", "| label | kappa |", "|---|---|"]
        lines += [f"| {label} | {value:.3f} |" for label, value in sorted(report.per_label.items())]
    lines += ["", *(f"> {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"
