import pytest

from loopline.data.collect import CollectResult, DuplicateGroup, QuarantinedFile
from loopline.data.report import collect_counts_rows, render_collect_summary

pytestmark = pytest.mark.unit


def result(**overrides: object) -> CollectResult:
    base: dict[str, object] = dict(
        source_uri="/raw",
        data_root="/data",
        version="abc123",
        manifest_uri="/data/manifests/abc123.jsonl",
        manifest_written=True,
        seen=10,
        kept=6,
        exact_duplicates=1,
        near_duplicates=1,
        quarantined={"truncated": 1, "zero_byte": 1},
        images_written=6,
        labels={},
        splits={},
        duplicate_groups=(DuplicateGroup("exact", "/raw/a.png", ("/raw/b.png",)),),
        quarantined_files=(
            QuarantinedFile("/raw/c.png", "truncated", "image file is truncated", "/data/q/c.png"),
        ),
    )
    base.update(overrides)
    return CollectResult(**base)  # type: ignore[arg-type]


def test_counts_table_lists_every_reason() -> None:
    rows = {r["count"]: r["value"] for r in collect_counts_rows(result())}
    assert rows["seen"] == 10 and rows["kept"] == 6 and rows["quarantined"] == 2
    assert rows["quarantined: truncated"] == 1 and rows["quarantined: zero_byte"] == 1


def test_summary_names_version_manifest_and_problems() -> None:
    text = render_collect_summary(result())
    assert "`abc123`" in text and "/data/manifests/abc123.jsonl" in text
    assert "| `/raw/c.png` | truncated |" in text
    assert "| exact | `/raw/a.png` | `/raw/b.png` |" in text
    assert "already collected" in render_collect_summary(result(manifest_written=False))


def test_long_lists_are_cut() -> None:
    many = tuple(QuarantinedFile(f"/raw/{i}.png", "zero_byte", "empty", None) for i in range(25))
    assert "… and 15 more." in render_collect_summary(result(quarantined_files=many))
