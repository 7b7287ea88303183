"""Render labeling results for people (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

from loopline.labeling.agreement import AgreementReport
from loopline.labeling.box_consensus import BoxLabels
from loopline.labeling.detection import DetectionAgreement
from loopline.labeling.export import ExportSummary
from loopline.labeling.ties import TiedTask
from loopline.verdict import GateVerdict


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_agreement_report(
    project_url: str,
    summary: ExportSummary,
    report: AgreementReport,
    verdict: GateVerdict,
    tie_breaks: int = 0,
) -> str:
    """The review's markdown: agreement, the gate's verdict, every count, and each unresolved tie with a
    link to its Label Studio task (``tie_breaks``: extra annotations asked for tied images this round)."""
    per_item = ", ".join(f"{n} annotations: {items}" for n, items in report.annotations_per_item.items())
    unanimous = "n/a" if report.unanimous is None else f"{report.unanimous:.1%}"
    lines = [
        "# Labels and agreement",
        "",
        f"- project: {project_url}",
        f"- images with 2+ valid annotations: {report.items} ({per_item or 'none'}); "
        f"**Krippendorff's alpha (nominal) {_figure(report.alpha)}**; "
        f"Fleiss' kappa {_figure(report.fleiss_kappa)}; unanimous {unanimous}",
        f"- consensus labels (to the labeled manifest): {len(summary.items)}; "
        f"unresolved ties (listed below, not labeled): {len(summary.ties)}; "
        f"tied images given one more annotator this round: {tie_breaks}",
        f"- gate: {verdict.summary()}",
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
        lines += ["", "| label | alpha (vs the rest) |", "|---|---|"]
        lines += [f"| {label} | {value:.3f} |" for label, value in sorted(report.per_label.items())]
    lines += _ties(project_url, summary.ties)
    notes = dict.fromkeys([*report.notes, *verdict.notes])
    lines += ["", *(f"> {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def render_box_agreement_report(
    project_url: str,
    labels: BoxLabels,
    report: DetectionAgreement,
    verdict: GateVerdict,
    tie_breaks: int = 0,
) -> str:
    """The review's markdown for boxes: IoU-matched F1 between annotators (overall and per label), the
    gate's verdict, every count (boxes clipped or dropped and why, minority boxes, label conflicts), and
    each image still undecided with a link to its task."""
    lines = [
        "# Boxes and agreement",
        "",
        f"- project: {project_url}",
        f"- images with 2+ valid annotations: {report.images} ({report.pairs} annotation pairs); "
        f"**box F1 {_figure(report.f1)}** (boxes of the same label matched one to one at IoU >= "
        f"{report.threshold}); images with one annotation: {report.single}",
        f"- images with consensus boxes (to the labeled manifest): {len(labels.items)}; "
        f"undecided (listed below, not labeled): {len(labels.ties)}; "
        f"undecided images given one more annotator this round: {tie_breaks}",
        "- consensus: boxes of one label clustered by IoU, corners combined by median, a box kept when "
        "most of the image's annotators drew it",
        f"- gate: {verdict.summary()}",
        "",
        "| count | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(labels.counts.items())),
    ]
    if labels.unknown_labels:
        lines += [
            "",
            "Labels outside the label set (not used): "
            + ", ".join(f"`{k}` x{v}" for k, v in sorted(labels.unknown_labels.items())),
        ]
    if report.per_label:
        lines += ["", "| label | box F1 |", "|---|---|"]
        lines += [f"| {label} | {value:.3f} |" for label, value in sorted(report.per_label.items())]
    lines += _ties(project_url, labels.ties)
    lines += ["", *(f"> {note}" for note in dict.fromkeys(verdict.notes))]
    return "\n".join(lines) + "\n"


def _ties(project_url: str, ties: Sequence[TiedTask]) -> list[str]:
    """The unresolved ties, each linked to its Label Studio task (votes: label -> annotations for it)."""
    if not ties:
        return []
    lines = [
        "",
        "## Unresolved ties: a person decides",
        "",
        "These images are not in the labeled manifest. To label one, open its task, add your "
        "annotation, then send the batch back (reject) so it is counted again; approving leaves "
        "them out.",
        "",
        "| task | content hash | annotations | votes |",
        "|---|---|---|---|",
    ]
    return lines + [
        f"| [{t.task_id}]({project_url}/data?task={t.task_id}) | `{t.content_hash}` | {t.annotations} | "
        + ", ".join(f"{label}: {n}" for label, n in t.votes.items())
        + " |"
        for t in ties
    ]


def render_labeled_manifest(
    version: str,
    uri: str,
    summary: ExportSummary | BoxLabels,
    written: int,
    carried: int,
    earlier: list[str],
    outside: list[str],
) -> str:
    """What went into the labeled manifest and what did not, each image counted and named.

    ``written``: this round's consensus labels written; ``carried``: rows carried from the champion's
    manifest; ``earlier``: hashes labeled again this round whose earlier label was kept; ``outside``:
    hashes not in the dataset version (not written).
    """
    lines = [
        f"# Labeled manifest `{version}`",
        "",
        f"- {uri}: {written + carried} images ({written} labeled this round, {carried} carried forward)",
        f"- consensus labels in the export: {len(summary.items)} = {written} written + {len(earlier)} "
        f"labeled in an earlier round (earlier label kept) + {len(outside)} not in the dataset version",
        f"- unresolved ties, not written (listed in the label review): {len(summary.ties)}",
    ]
    if earlier:
        lines += ["", "Earlier label kept: " + ", ".join(f"`{h}`" for h in earlier)]
    if outside:
        lines += ["", "Not in the dataset version (not written): " + ", ".join(f"`{h}`" for h in outside)]
    if summary.ties:
        lines += ["", "Tied (not written): " + ", ".join(f"`{t.content_hash}`" for t in summary.ties)]
    return "\n".join(lines) + "\n"
