"""Render collect results for people: a counts table and a markdown summary (pure functions)."""

from __future__ import annotations

from loopline.data.collect import CollectResult

MAX_LISTED = 10


def collect_counts_rows(result: CollectResult) -> list[dict[str, object]]:
    """One row per count: seen, kept, duplicates, and quarantined files by reason."""
    rows: list[dict[str, object]] = [
        {"count": "seen", "value": result.seen},
        {"count": "kept", "value": result.kept},
        {"count": "exact duplicates", "value": result.exact_duplicates},
        {"count": "near duplicates", "value": result.near_duplicates},
        {"count": "quarantined", "value": sum(result.quarantined.values())},
    ]
    rows += [{"count": f"quarantined: {reason}", "value": n} for reason, n in result.quarantined.items()]
    rows.append({"count": "new images stored", "value": result.images_written})
    return rows


def render_collect_summary(result: CollectResult) -> str:
    """Markdown: the dataset version, where the manifest is, what was removed and why."""
    lines = [
        f"# Collected dataset `{result.version}`",
        "",
        f"- source: `{result.source_uri}`",
        f"- manifest: `{result.manifest_uri}`"
        + ("" if result.manifest_written else " (unchanged: already collected)"),
        f"- images: {result.seen} seen, **{result.kept} kept**, {result.exact_duplicates} exact and "
        f"{result.near_duplicates} near duplicates removed, {sum(result.quarantined.values())} quarantined",
    ]
    if result.labels:
        labels = ", ".join(f"{k}: {v}" for k, v in result.labels.items())
        splits = ", ".join(f"{k}: {v}" for k, v in result.splits.items())
        lines += [f"- labels from folder names: {labels}", f"- splits: {splits}"]
    else:
        lines.append("- no folder labels: the images go to labeling")
    if result.quarantined_files:
        lines += ["", "## Quarantined", "", "| file | reason | detail |", "|---|---|---|"]
        for q in result.quarantined_files[:MAX_LISTED]:
            lines.append(f"| `{q.source_uri}` | {q.reason} | {q.detail.replace('|', '/')} |")
        lines += _more(len(result.quarantined_files))
    if result.duplicate_groups:
        lines += ["", "## Duplicate groups", "", "| kind | kept | removed |", "|---|---|---|"]
        for g in result.duplicate_groups[:MAX_LISTED]:
            lines.append(f"| {g.kind} | `{g.kept_uri}` | {', '.join(f'`{u}`' for u in g.removed_uris)} |")
        lines += _more(len(result.duplicate_groups))
    return "\n".join(lines) + "\n"


def _more(n: int) -> list[str]:
    return ["", f"… and {n - MAX_LISTED} more."] if n > MAX_LISTED else []
