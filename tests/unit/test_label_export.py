import pytest

from loopline.data.labeled import read_labeled_manifest, write_labeled_manifest
from loopline.data.manifest import ManifestRow
from loopline.data.splits import SplitFractions
from loopline.data.store import LocalStore
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.demo_annotator import annotate_project, demo_label
from loopline.labeling.export import parse_classification_export
from loopline.labeling.labeled import build_labeled_rows
from loopline.labeling.ties import TiedTask

pytestmark = pytest.mark.unit

CONFIG = parse_label_config(render_label_config("classification", ["cat", "dog"]), "classification")


def annotation(aid: int, who: int, label: str | None, cancelled: bool = False) -> dict:  # type: ignore[type-arg]
    result = (
        []
        if label is None
        else [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
    )
    return {"id": aid, "completed_by": who, "result": result, "was_cancelled": cancelled, "created_at": "t"}


EXPORT = [
    {
        "id": 1,
        "data": {"content_hash": "a"},
        "annotations": [annotation(1, 7, "cat"), annotation(2, 8, "cat")],
    },
    {
        "id": 2,
        "data": {"content_hash": "b"},
        "annotations": [annotation(3, 7, "cat"), annotation(4, 8, "dog")],
    },
    {"id": 3, "data": {"content_hash": "c"}, "annotations": [annotation(5, 7, None, cancelled=True)]},
    {
        "id": 4,
        "data": {"content_hash": "d"},
        "annotations": [annotation(6, 7, None), annotation(7, 8, "wolf")],
    },
    {"id": 5, "data": {"content_hash": "e"}, "annotations": [annotation(8, 7, "dog")]},
    {"id": 6, "data": {}, "annotations": []},
]


def test_every_kind_of_annotation_is_counted() -> None:
    summary = parse_classification_export(EXPORT, CONFIG)
    assert summary.counts == {
        "tasks": 6,
        "tasks without content_hash": 1,
        "annotations": 8,
        "skipped or cancelled": 1,
        "empty results": 1,
        "unknown labels": 1,
        "labeled": 2,
        "ties (no label yet)": 1,
        "without a valid annotation": 2,
    }
    assert summary.unknown_labels == {"wolf": 1}
    assert summary.ties == (TiedTask("b", 2, 2, {"cat": 1, "dog": 1}),)
    assert {(i.content_hash, i.label) for i in summary.items} == {("a", "cat"), ("e", "dog")}
    first = next(i for i in summary.items if i.content_hash == "a")
    assert [(r.annotation_id, r.annotator) for r in first.annotations] == [(1, 7), (2, 8)]


def test_labeled_manifest_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    summary = parse_classification_export(EXPORT, CONFIG)
    manifest = [ManifestRow(h, f"/s/{h}", f"/d/{h}", 8, 8, "PNG", None, None) for h in "ae"]
    rows = build_labeled_rows(manifest, summary.items, "v1", 3, 9, SplitFractions(0.0, 0.0))
    store = LocalStore(tmp_path)
    version, uri = write_labeled_manifest(store, rows)
    assert write_labeled_manifest(store, rows) == (version, uri)
    assert read_labeled_manifest(store, version) == rows
    assert {r.split for r in rows} == {"train"} and rows[0].export_id == 9


def test_demo_annotator_errs_at_the_requested_rate_deterministically() -> None:
    labels = tuple(str(d) for d in range(10))
    answers = [demo_label("3", labels, 0.2, 0, f"h{i}", 0) for i in range(2000)]
    assert answers == [demo_label("3", labels, 0.2, 0, f"h{i}", 0) for i in range(2000)]
    assert 0.17 < sum(a != "3" for a in answers) / 2000 < 0.23
    assert all(demo_label("3", labels, 0.0, 0, f"h{i}", 1) == "3" for i in range(100))


def test_a_tie_counts_every_annotator_who_looked_skips_included() -> None:
    task = {
        "id": 9,
        "data": {"content_hash": "t"},
        "annotations": [annotation(1, 7, "cat"), annotation(2, 8, "dog"), annotation(3, 9, None, True)],
    }
    [tie] = parse_classification_export([task], CONFIG).ties
    assert tie == TiedTask("t", 9, 3, {"cat": 1, "dog": 1})


class FakeStudio:
    """Tasks with their own overlap; records what the demo annotator answers."""

    def __init__(self, tasks: list[dict]) -> None:  # type: ignore[type-arg]
        self.tasks, self.answers = tasks, []  # type: ignore[var-annotated]

    def tasks_with_annotations(self, project_id: int) -> list[dict]:  # type: ignore[type-arg]
        return self.tasks

    def ensure_user(self, email: str, first_name: str, last_name: str = "") -> int:
        return 100 + int(last_name)

    def annotate(self, task_id: int, result: list, completed_by: int) -> int:  # type: ignore[type-arg]
        self.answers.append((task_id, completed_by))
        return len(self.answers)


def test_demo_annotator_answers_a_tasks_raised_overlap() -> None:
    studio = FakeStudio(
        [
            {"id": 1, "overlap": 2, "data": {"content_hash": "a"}, "annotations": []},
            {
                "id": 2,
                "overlap": 3,  # a tie asked for one more annotator
                "data": {"content_hash": "b"},
                "annotations": [annotation(1, 101, "cat"), annotation(2, 102, "dog")],
            },
        ]
    )
    made = annotate_project(studio, 1, CONFIG, {"a": "cat", "b": "cat"}, annotators=2)  # type: ignore[arg-type]
    assert made == 3
    assert studio.answers == [(1, 101), (1, 102), (2, 103)]


def test_the_labeled_version_ignores_where_images_are_stored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from loopline.data.labeled import LabeledRow, write_labeled_manifest
    from loopline.data.store import LocalStore

    rows = [LabeledRow(f"h{i}", f"/old/images/h{i}.png", "a", "train", "dv", 1, 2, i, ()) for i in range(3)]
    moved = [replace(r, stored_uri=r.stored_uri.replace("/old/", "/new/")) for r in rows]
    relabeled = [replace(rows[0], label="b"), *rows[1:]]
    first, _ = write_labeled_manifest(LocalStore(tmp_path / "a"), rows)
    assert write_labeled_manifest(LocalStore(tmp_path / "b"), moved)[0] == first
    assert write_labeled_manifest(LocalStore(tmp_path / "c"), list(reversed(rows)))[0] == first
    assert write_labeled_manifest(LocalStore(tmp_path / "d"), relabeled)[0] != first
