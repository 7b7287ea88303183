"""`loopline gc` planning: what is removed, what is kept, and why (no servers)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loopline.data.collect import CollectOptions, collect
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore
from loopline.errors import ReferencesUnavailable
from loopline.retention.plan import (
    Decision,
    ExportSnapshot,
    Item,
    Plan,
    ServerFiles,
    plan_blobs,
    plan_exports,
    plan_model_cache,
    plan_results,
    plan_servers,
    render_plan,
    summarize,
)
from loopline.retention.references import manifest_references
from tests.helpers import image_bytes, write

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=30)


def removed(decisions: list[Decision]) -> set[str]:
    return {d.item.ref for d in decisions if d.remove}


def test_a_blob_named_only_by_an_older_manifest_is_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    options = CollectOptions(near_duplicate_threshold=-1)
    for i in range(3):
        write(tmp_path / "round1" / f"{i}.png", image_bytes(10 + i))
    collect(LocalFolderSource(tmp_path / "round1"), store, options)
    write(tmp_path / "round2" / "0.png", image_bytes(10))  # round 2 keeps one image of round 1
    collect(LocalFolderSource(tmp_path / "round2"), store, options)
    store.put_bytes("images/ff/" + "f" * 64 + ".png", image_bytes(99))  # stored, named by no manifest
    blobs = [Item("blobs", o.key, o.size, OLD) for o in store.list_objects("images")]
    assert len(blobs) == 4

    decisions = plan_blobs(blobs, manifest_references(store).content_hashes, NOW, grace_hours=24)

    assert removed(decisions) == {"images/ff/" + "f" * 64 + ".png"}
    kept = [d for d in decisions if not d.remove]
    assert len(kept) == 3 and all(d.reason == "a manifest or a registered model refers to it" for d in kept)


def test_blobs_named_by_a_registered_model_only_and_young_blobs_are_kept() -> None:
    named, young, old = ("images/aa/" + c * 64 + ".png" for c in "abc")
    blobs = [
        Item("blobs", named, 10, OLD),
        Item("blobs", young, 20, NOW - timedelta(hours=1)),
        Item("blobs", old, 30, OLD),
    ]
    decisions = plan_blobs(blobs, frozenset({"a" * 64}), NOW, grace_hours=24)
    assert removed(decisions) == {old}
    assert [d.reason for d in decisions if d.item.ref == young] == [
        "younger than 24 h (a collect may own it)"
    ]


def test_a_corrupt_manifest_refuses_rather_than_counting_its_images_unreferenced(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    store.put_bytes("manifests/0123456789abcdef.jsonl", b"{not json\n")
    with pytest.raises(ReferencesUnavailable, match=r"nothing was deleted"):
        manifest_references(store)


def test_results_younger_than_the_setting_or_used_by_an_unfinished_run_are_kept() -> None:
    files = [
        Item("results", "/h/results/young", 1, NOW - timedelta(days=6)),
        Item("results", "/h/results/paused", 2, OLD),
        Item("results", "/h/prefect/storage/by-path", 3, OLD),
        Item("results", "/h/results/old", 4, OLD),
    ]
    in_use = frozenset({"paused", "/h/prefect/storage/by-path"})  # keys as names and as absolute paths
    decisions = plan_results(files, in_use, NOW, days=7)
    assert removed(decisions) == {"/h/results/old"}
    assert summarize(Plan(tuple(decisions)))["results"].removed_bytes == 4


def test_a_running_servers_files_are_kept_however_old() -> None:
    def files(name: str, log_age: timedelta) -> tuple[Item, Item]:
        return Item("servers", f"/h/run/{name}.pid", 6, OLD), Item(
            "servers", f"/h/logs/{name}.log", 100, NOW - log_age
        )

    running = ServerFiles("serve-champion", True, *files("serve-champion", timedelta(days=90)))
    stopped_old = ServerFiles("serve-challenger", False, *files("serve-challenger", timedelta(days=8)))
    stopped_new = ServerFiles(
        "serve-challenger-candidate", False, *files("serve-challenger-candidate", timedelta(days=1))
    )
    decisions = plan_servers([running, stopped_old, stopped_new], NOW, log_days=7)
    assert removed(decisions) == {
        "/h/run/serve-challenger.pid",
        "/h/logs/serve-challenger.log",
        "/h/run/serve-challenger-candidate.pid",
    }
    assert {d.reason for d in decisions if "champion" in d.item.ref} == {"serve-champion is running"}


def test_exports_beyond_the_newest_are_removed_unless_named_or_made_by_people() -> None:
    exports = [ExportSnapshot(1, e, f"loopline {e}a 0s {e}f", 100 * e) for e in (1, 2, 3, 4, 5)]
    exports += [ExportSnapshot(1, 6, "my own export", 5), ExportSnapshot(2, 7, "loopline 1a 0s 1f", 9)]
    decisions = plan_exports(exports, frozenset({(1, 1)}), keep=2)
    assert removed(decisions) == {"project 1 export 2", "project 1 export 3"}
    reasons = {d.item.ref: d.reason for d in decisions}
    assert reasons["project 1 export 1"] == "a labeled manifest or a registered model names it"
    assert reasons["project 1 export 6"] == "not a loopline snapshot"
    assert reasons["project 2 export 7"] == "one of the newest 2 of its project"


def test_cached_model_files_go_only_when_unregistered_and_not_served() -> None:
    entries = [
        Item("model-cache", f"/h/cache/models/{n}/{v}", 10, OLD)
        for n, v in [("m", "1"), ("m", "2"), ("s", "9")]
    ]
    decisions = plan_model_cache(entries, frozenset({("m", "1")}), served=frozenset({"s"}))
    assert removed(decisions) == {"/h/cache/models/m/2"}


def test_the_report_says_what_was_or_would_be_freed_per_kind() -> None:
    plan = Plan(
        (
            Decision(Item("blobs", "images/aa/a.png", 2048, OLD), True, "no manifest"),
            Decision(Item("blobs", "images/bb/b.png", 10, OLD), False, "named"),
            Decision(Item("exports", "project 1 export 2", None), True, "old"),
        ),
        {"results": "the Prefect API does not answer"},
    )
    dry = render_plan(plan, dry_run=True)
    assert "blobs        would free     1 (   2.0 KiB), kept 1" in dry
    assert "results      skipped: the Prefect API does not answer" in dry
    assert dry[-1] == "total        would free     2 (   2.0 KiB) (1 of unknown size)"
    assert render_plan(plan, dry_run=False)[-1].startswith("total        freed     2")
