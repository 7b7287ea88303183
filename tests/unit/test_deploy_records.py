"""Deployment records, their tags and the bounded history a rollback reads."""

import json

import pytest

from loopline.deploy.base import (
    DeploymentRecord,
    DeployState,
    Role,
    check_role,
    choose_role,
    render_deployments,
)
from loopline.deploy.history import (
    appended,
    dump_history,
    parse_history,
    previous_version,
    serving,
    undeployed,
)

pytestmark = pytest.mark.unit


def record(version: str, role: Role = "champion", state: DeployState = "serving") -> DeploymentRecord:
    return DeploymentRecord(
        "local",
        "m",
        version,
        role,
        "http://127.0.0.1:8000",
        "pid 1",
        state,
        "2026-01-01T00:00:00",
        "ada",
    )


def test_a_record_is_stored_as_tags_named_by_its_role() -> None:
    tags = record("3", role="challenger").tags()
    assert tags["deploy.challenger.url"] == "http://127.0.0.1:8000"
    assert tags["deploy.challenger.state"] == "serving" and tags["deploy.challenger.who"] == "ada"
    assert all(k.startswith("deploy.challenger.") for k in tags)


def test_records_survive_the_json_round_trip() -> None:
    history = [record("1"), record("2", state="refused")]
    assert parse_history(dump_history(history)) == history
    assert parse_history(None) == [] and parse_history("") == []


def test_the_history_keeps_only_the_newest_records() -> None:
    history: list[DeploymentRecord] = []
    for v in range(1, 8):
        history = appended(history, record(str(v)), limit=5)
    assert [r.version for r in history] == ["3", "4", "5", "6", "7"]


def test_a_history_too_long_for_one_tag_drops_its_oldest_records() -> None:
    history = [record(str(v)) for v in range(100)]
    text = dump_history(history, max_chars=1000)
    kept = json.loads(text)
    assert len(text) <= 1000 and kept[-1]["version"] == "99" and len(kept) < 100


def test_rollback_goes_to_the_champion_before_the_current_one_skipping_refused_and_challengers() -> None:
    history = [
        record("1"),
        record("2", role="challenger"),
        record("3", state="refused"),
        record("4"),
        record("4"),  # a rerun
    ]
    assert serving(history, "champion") == history[-1]
    assert serving(history, "challenger") == history[1]
    assert previous_version(history, "4") == "1"
    assert previous_version([record("1")], "1") is None


def test_a_role_stopped_on_purpose_is_told_from_one_that_went_down() -> None:
    promoted = [record("1"), record("2", role="challenger"), record("2", role="challenger", state="stopped")]
    assert undeployed(promoted, "challenger") and not undeployed(promoted, "champion")
    redeployed = [*promoted, record("3", role="challenger"), record("2", role="challenger", state="replaced")]
    assert not undeployed(redeployed, "challenger")  # serving again: down if its server is gone
    assert not undeployed([], "champion")


def test_an_unknown_role_is_named_with_the_valid_ones() -> None:
    assert check_role("challenger") == "challenger"
    with pytest.raises(ValueError, match=r"'canary'.*\['champion', 'challenger'\]"):
        check_role("canary")


def test_the_report_says_what_serves_where() -> None:
    text = render_deployments([record("2"), record("3", state="refused")])
    assert "| champion | m | 2 | serving | [http://127.0.0.1:8000](http://127.0.0.1:8000)" in text
    assert "| 3 | refused |" in text
    assert "Nothing is deployed" in render_deployments([])


@pytest.mark.parametrize(
    ("decision", "promote_directly", "champion", "role"),
    [
        ("approved", False, None, "champion"),  # the first model, nothing to stand beside
        ("approved", True, "1", "champion"),
        ("approved", False, "1", "challenger"),
        ("rejected", True, "1", None),
        ("gate_failed", True, None, None),
    ],
)
def test_only_approved_models_are_deployed_and_the_first_as_champion(
    decision: str, promote_directly: bool, champion: str | None, role: str | None
) -> None:
    assert choose_role(decision, promote_directly, champion) == role


def test_the_local_target_is_a_deploy_target() -> None:
    from loopline.deploy.base import DeployTarget
    from loopline.deploy.local import LocalTarget

    def accepts(target: DeployTarget) -> str:
        return target.name

    assert accepts(LocalTarget.__new__(LocalTarget)) == "local"  # mypy checks the signatures match
