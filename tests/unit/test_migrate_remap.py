"""Version numbers inside tags, rewritten for the target: deployment history (records of versions the
bundle does not hold dropped, merged into the target's own once), alias audit records, places."""

from __future__ import annotations

import json

import pytest

from loopline.deploy.base import DeploymentRecord
from loopline.deploy.history import HISTORY_TAG, dump_history, parse_history, previous_version
from loopline.migrate.remap import changed, merge_history, remap_audit, remap_model_tags, remap_version_tags

pytestmark = pytest.mark.unit

VERSIONS = {"1": "4", "2": "5"}


def record(version: str, when: str, role: str = "champion", state: str = "serving") -> DeploymentRecord:
    return DeploymentRecord("local", "m", version, role, "http://x", "pid 1", state, when, "ada")  # type: ignore[arg-type]


def test_history_versions_are_mapped_and_unknown_ones_dropped() -> None:
    source = dump_history([record("9", "t1"), record("1", "t2"), record("2", "t3", "challenger")])
    tags = remap_model_tags({HISTORY_TAG: source, "owner": "ada"}, VERSIONS, {})
    history = parse_history(tags[HISTORY_TAG])
    assert [(r.version, r.role) for r in history] == [("4", "champion"), ("5", "challenger")]
    assert tags["owner"] == "ada"
    # a rollback on the target finds no version that does not exist there
    assert previous_version(history, "5") == "4"


def test_imported_history_merges_into_the_targets_once_in_time_order() -> None:
    team = dump_history([record("1", "t2", "champion")])
    imported = [record("4", "t1"), record("5", "t3")]
    once = merge_history(team, imported)
    assert [(r.version, r.when) for r in parse_history(once)] == [("4", "t1"), ("1", "t2"), ("5", "t3")]
    assert merge_history(once, imported) == once
    assert [r.version for r in parse_history(merge_history(None, imported))] == ["4", "5"]


def test_audit_records_name_target_versions() -> None:
    audit = json.dumps({"alias": "champion", "from_version": "1", "to_version": "2", "who": "ada"})
    mapped = json.loads(remap_audit(audit, VERSIONS))
    assert (mapped["from_version"], mapped["to_version"], mapped["who"]) == ("4", "5", "ada")
    removed = json.loads(remap_audit(json.dumps({"from_version": "2", "to_version": None}), VERSIONS))
    assert removed == {"from_version": "5", "to_version": None}
    gone = json.loads(remap_audit(json.dumps({"from_version": "7", "to_version": "1"}), VERSIONS))
    assert gone == {"from_version": "source v7", "to_version": "4"}
    assert remap_audit("not json", VERSIONS) == "not json"
    assert remap_audit('{"other": 1}', VERSIONS) == '{"other": 1}'


def test_version_tags_get_target_places_only_where_the_source_had_them() -> None:
    tags = {
        "training.run_id": "laptop-run",
        "data_root": "/laptop/data",
        "audit.champion": json.dumps({"from_version": None, "to_version": "1"}),
        "dataset_version": "abc",
    }
    places = {"training.run_id": "team-run", "data_root": "s3://team/x", "labeled_manifest_uri": "s3://..."}
    out = remap_version_tags(tags, VERSIONS, places)
    assert out["training.run_id"] == "team-run" and out["data_root"] == "s3://team/x"
    assert json.loads(out["audit.champion"])["to_version"] == "4"
    assert out["dataset_version"] == "abc" and "labeled_manifest_uri" not in out


def test_only_differing_tags_are_set() -> None:
    assert changed({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == {"b": "2"}
    assert changed({"a": "1"}, {"a": "1"}) == {}
