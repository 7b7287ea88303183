"""Doctor's findings as text (one line per check, its fix below it) or as JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

from loopline.doctor.checks import Check

STATUS_WIDTH = len("warning")


def render_check(check: Check, name_width: int = 0) -> list[str]:
    """``STATUS  NAME  DETAIL``, then ``fix: …`` indented under it when there is one."""
    lines = [f"{check.status:<{STATUS_WIDTH}}  {check.name:<{name_width}}  {check.detail}"]
    if check.fix and check.status != "ok":
        lines.append(f"{'':<{STATUS_WIDTH}}  {'':<{name_width}}  fix: {check.fix}")
    return lines


def summary(checks: Sequence[Check]) -> str:
    counts = Counter(c.status for c in checks)
    verdict = "FAILED" if counts["failed"] else "ok" if not counts["warning"] else "ok, with warnings"
    return f"{verdict}: {counts['ok']} ok, {counts['warning']} warning(s), {counts['failed']} failed"


def render_text(checks: Sequence[Check]) -> list[str]:
    """Every check in order, names aligned, and a summary line."""
    width = max((len(c.name) for c in checks), default=0)
    lines = [line for check in checks for line in render_check(check, width)]
    return [*lines, summary(checks)]


def render_json(checks: Sequence[Check]) -> str:
    """``{"ok": bool, "counts": {...}, "checks": [{name, status, detail, fix}, ...]}``."""
    counts = Counter(c.status for c in checks)
    body = {
        "ok": not counts["failed"],
        "counts": {status: counts[status] for status in ("ok", "warning", "failed")},
        "checks": [asdict(c) for c in checks],
    }
    return json.dumps(body, indent=2)
