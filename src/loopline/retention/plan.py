"""Pure decisions of ``loopline gc``: for each candidate, remove it or keep it, and why.

Nothing here reads a file or a server; the inputs are lists of candidates and sets of what is still
referenced, so every rule is tested without servers (tests/unit/test_gc.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePath, PurePosixPath
from typing import Literal

Kind = Literal["results", "blobs", "exports", "servers", "model-cache"]
KINDS: tuple[Kind, ...] = ("results", "blobs", "exports", "servers", "model-cache")
EXPORT_TITLE_PREFIX = "loopline "  # the label stage's snapshot exports (tasks/label.py); others are people's


@dataclass(frozen=True)
class Item:
    """Something gc could remove: a file or folder path, a data-root key, or a Label Studio export."""

    kind: Kind
    ref: str
    size: int | None  # bytes; None when unknown
    modified: datetime | None = None


@dataclass(frozen=True)
class Decision:
    item: Item
    remove: bool
    reason: str


@dataclass(frozen=True)
class ExportSnapshot:
    """A Label Studio export of one project (``size``: bytes of its file, when known)."""

    project_id: int
    export_id: int
    title: str
    size: int | None

    @property
    def ref(self) -> str:
        return f"project {self.project_id} export {self.export_id}"


@dataclass(frozen=True)
class ServerFiles:
    """A local model server's PID file and log (either may be missing) and whether it runs now."""

    name: str
    running: bool
    pid_file: Item | None
    log: Item | None


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]
    skipped: dict[Kind, str] = field(default_factory=dict)  # kinds not planned, with the reason

    @property
    def removals(self) -> list[Item]:
        return [d.item for d in self.decisions if d.remove]


@dataclass(frozen=True)
class KindSummary:
    removed: int
    removed_bytes: int
    kept: int


def _older(item: Item, now: datetime, age: timedelta) -> bool:
    return item.modified is not None and now - item.modified > age


def plan_results(files: Iterable[Item], in_use: frozenset[str], now: datetime, days: float) -> list[Decision]:
    """Result files older than ``days``, unless a run that has not finished refers to them (``in_use``:
    storage keys from those runs' states; compared by file name, so a key as path or as name matches)."""
    names = {PurePath(key).name for key in in_use}
    decisions = []
    for item in files:
        if PurePath(item.ref).name in names:
            decisions.append(Decision(item, False, "a run that has not finished refers to it"))
        elif not _older(item, now, timedelta(days=days)):
            decisions.append(Decision(item, False, f"younger than {days:g} days"))
        else:
            decisions.append(Decision(item, True, f"older than {days:g} days, no unfinished run uses it"))
    return decisions


def blob_hash(key: str) -> str:
    """The content hash a blob key is named after (``images/ab/<sha256>.png`` → ``<sha256>``)."""
    return PurePosixPath(key).name.split(".", 1)[0]


def plan_blobs(
    blobs: Iterable[Item], referenced: frozenset[str], now: datetime, grace_hours: float
) -> list[Decision]:
    """Stored images no manifest or registered model refers to (``referenced``: content hashes), once older
    than ``grace_hours`` (collect stores images before it writes their manifest)."""
    decisions = []
    for item in blobs:
        if blob_hash(item.ref) in referenced:
            decisions.append(Decision(item, False, "a manifest or a registered model refers to it"))
        elif not _older(item, now, timedelta(hours=grace_hours)):
            decisions.append(Decision(item, False, f"younger than {grace_hours:g} h (a collect may own it)"))
        else:
            decisions.append(Decision(item, True, "no manifest or registered model refers to it"))
    return decisions


def plan_exports(
    exports: Iterable[ExportSnapshot], referenced: frozenset[tuple[int, int]], keep: int
) -> list[Decision]:
    """Per project, loopline's snapshot exports beyond the newest ``keep``, unless a labeled manifest or a
    registered model names them (``referenced``: ``(project id, export id)``). Exports people made are
    never removed."""
    by_project: dict[int, list[ExportSnapshot]] = {}
    for export in exports:
        by_project.setdefault(export.project_id, []).append(export)
    decisions = []
    for project_exports in by_project.values():
        ours = 0
        for export in sorted(project_exports, key=lambda e: -e.export_id):  # ids grow: newest first
            item = Item("exports", export.ref, export.size)
            if not export.title.startswith(EXPORT_TITLE_PREFIX):
                decisions.append(Decision(item, False, "not a loopline snapshot"))
                continue
            ours += 1
            if (export.project_id, export.export_id) in referenced:
                decisions.append(Decision(item, False, "a labeled manifest or a registered model names it"))
            elif ours <= keep:
                decisions.append(Decision(item, False, f"one of the newest {keep} of its project"))
            else:
                decisions.append(Decision(item, True, f"older than the newest {keep}, not referenced"))
    return decisions


def plan_servers(servers: Iterable[ServerFiles], now: datetime, log_days: float) -> list[Decision]:
    """A stopped model server's PID file, and its log once older than ``log_days`` (what it said before it
    stopped stays readable a while); nothing of a running server."""
    decisions = []
    for server in servers:
        for item in (server.pid_file, server.log):
            if item is None:
                continue
            if server.running:
                decisions.append(Decision(item, False, f"{server.name} is running"))
            elif item is server.log and not _older(item, now, timedelta(days=log_days)):
                decisions.append(
                    Decision(item, False, f"{server.name} stopped; log younger than {log_days:g} days")
                )
            else:
                decisions.append(Decision(item, True, f"{server.name} is not running"))
    return decisions


def plan_model_cache(
    entries: Iterable[Item], registered: frozenset[tuple[str, str]], served: frozenset[str]
) -> list[Decision]:
    """Model files cached by servers (``…/NAME/VERSION``): removed once the version is no longer registered
    and no running server serves that model."""
    decisions = []
    for item in entries:
        path = PurePath(item.ref)
        name, version = path.parent.name, path.name
        if (name, version) in registered:
            decisions.append(Decision(item, False, "a registered version"))
        elif name in served:
            decisions.append(Decision(item, False, f"a running server serves {name}"))
        else:
            decisions.append(Decision(item, True, "no longer registered, no running server"))
    return decisions


def summarize(plan: Plan) -> dict[Kind, KindSummary]:
    summary = {}
    for kind in KINDS:
        mine = [d for d in plan.decisions if d.item.kind == kind]
        removed = [d.item for d in mine if d.remove]
        size = sum(i.size or 0 for i in removed)
        summary[kind] = KindSummary(len(removed), size, len(mine) - len(removed))
    return summary


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_plan(plan: Plan, dry_run: bool, verbose: bool = False) -> list[str]:
    """Lines for ``loopline gc``: per kind, what was (or would be) freed and what was kept."""
    verb = "would free" if dry_run else "freed"
    summary = summarize(plan)
    lines = []
    for kind in KINDS:
        if kind in plan.skipped:
            lines.append(f"{kind:<12} skipped: {plan.skipped[kind]}")
            continue
        s = summary[kind]
        lines.append(f"{kind:<12} {verb} {s.removed:>5} ({human_bytes(s.removed_bytes):>10}), kept {s.kept}")
    total = sum(s.removed for s in summary.values())
    total_bytes = sum(s.removed_bytes for s in summary.values())
    unknown = sum(1 for i in plan.removals if i.size is None)
    note = f" ({unknown} of unknown size)" if unknown else ""
    lines.append(f"{'total':<12} {verb} {total:>5} ({human_bytes(total_bytes):>10}){note}")
    if verbose:
        for d in plan.decisions:
            lines.append(
                f"  {'remove' if d.remove else 'keep  '} {d.item.kind:<11} {d.item.ref}  ({d.reason})"
            )
    return lines
