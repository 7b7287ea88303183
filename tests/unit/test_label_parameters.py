"""LabelParameters refuse a plan that would fail only after people worked, and the tie-breaking loop."""

import pytest
from pydantic import ValidationError

import flows.label as label_flow
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.export import parse_classification_export
from loopline.labeling.studio import Project, ProjectProgress
from tasks.label import LabelParameters

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"labels": []}, "the label set is empty"),
        ({"labels": ["cat", "dog", "cat"]}, "labels ['cat'] appear more than once"),
        ({"annotators_per_task": 1}, "set annotators_per_task to 2 or more, or turn the gate off"),
        ({"annotators_per_task": 4}, "max_annotators_per_task=3 is below annotators_per_task=4"),
        ({"min_kappa": 0.7}, "use min_agreement instead"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave room for train"),
    ],
)
def test_a_plan_that_cannot_work_is_refused_before_any_work(values: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        LabelParameters(**{"labels": ["cat", "dog"], **values})


def test_the_label_set_has_no_default() -> None:
    with pytest.raises(ValidationError, match="labels"):
        LabelParameters()  # type: ignore[call-arg]


def test_one_annotator_is_fine_without_a_gate() -> None:
    params = LabelParameters(labels=["cat", "dog"], annotators_per_task=1, min_agreement=None)
    assert params.min_agreement is None and params.max_annotators_per_task == 3


CONFIG = parse_label_config(render_label_config("classification", ["a", "b", "c"]), "classification")
PROJECT = Project(1, "p", "k", "<View/>", 2, False)


def export(votes: dict[int, list[str]]) -> list[dict]:  # type: ignore[type-arg]
    choice = {"from_name": "label", "to_name": "image", "type": "choices"}
    return [
        {
            "id": task_id,
            "data": {"content_hash": f"h{task_id}"},
            "annotations": [
                {"id": k, "completed_by": k, "result": [{**choice, "value": {"choices": [x]}}]}
                for k, x in enumerate(given)
            ],
        }
        for task_id, given in votes.items()
    ]


def test_ties_get_one_more_annotator_until_the_cap_then_stay_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Label Studio as the flow sees it: task 1 agreed; task 2 tied, then broken by a third annotator;
    # task 3 tied, still tied (1-1-1) at the cap of three annotators
    votes = {1: ["a", "a"], 2: ["a", "b"], 3: ["a", "b"]}
    third = {2: "a", 3: "c"}
    asks: list[dict[int, int]] = []

    def ask(project: Project, overlaps: dict[int, int], params: LabelParameters) -> ProjectProgress:
        asks.append(overlaps)
        for task_id, wanted in overlaps.items():
            while len(votes[task_id]) < wanted:
                votes[task_id].append(third[task_id])
        return ProjectProgress(3, 3, sum(map(len, votes.values())), 0)

    exports = []

    def export_labels(project: Project, progress: ProjectProgress, params: LabelParameters) -> tuple:  # type: ignore[type-arg]
        exports.append(progress.annotations)
        return 7, parse_classification_export(export(votes), CONFIG)

    monkeypatch.setattr(label_flow, "ask_for_tie_breaks", ask)
    monkeypatch.setattr(label_flow, "export_labels", export_labels)
    first = parse_classification_export(export(votes), CONFIG)
    export_id, summary, extra = label_flow.break_ties(
        PROJECT, 6, first, LabelParameters(labels=["a", "b", "c"])
    )
    assert asks == [{2: 3, 3: 3}] and exports == [8] and export_id == 7 and extra == 2
    assert {i.content_hash: i.label for i in summary.items} == {"h1": "a", "h2": "a"}
    assert [(t.task_id, t.votes) for t in summary.ties] == [(3, {"a": 1, "b": 1, "c": 1})]


def test_an_unanswered_tie_break_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    votes = {1: ["a", "b"]}
    asks: list[dict[int, int]] = []

    def ask(project: Project, overlaps: dict[int, int], params: LabelParameters) -> ProjectProgress:
        asks.append(overlaps)  # nobody answers (the wait timed out)
        return ProjectProgress(1, 0, 2, 0)

    monkeypatch.setattr(label_flow, "ask_for_tie_breaks", ask)
    monkeypatch.setattr(
        label_flow, "export_labels", lambda *_: (8, parse_classification_export(export(votes), CONFIG))
    )
    params = LabelParameters(labels=["a", "b", "c"], max_annotators_per_task=5)
    _, summary, extra = label_flow.break_ties(
        PROJECT, 6, parse_classification_export(export(votes), CONFIG), params
    )
    assert asks == [{1: 3}] and extra == 1 and len(summary.ties) == 1
