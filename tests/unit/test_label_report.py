import pytest

from loopline.labeling.agreement import agreement_gate, agreement_report
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.export import parse_classification_export
from loopline.labeling.report import render_agreement_report, render_labeled_manifest

pytestmark = pytest.mark.unit

CONFIG = parse_label_config(render_label_config("classification", ["cat", "dog", "eel"]), "classification")


def task(task_id: int, content_hash: str, *labels: str) -> dict:  # type: ignore[type-arg]
    annotations = [
        {
            "id": 10 * task_id + k,
            "completed_by": k,
            "was_cancelled": False,
            "result": [
                {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [x]}}
            ],
        }
        for k, x in enumerate(labels)
    ]
    return {"id": task_id, "data": {"content_hash": content_hash}, "annotations": annotations}


EXPORT = [
    task(1, "h-agreed", "cat", "cat"),
    task(2, "h-broken", "cat", "dog", "cat"),
    task(3, "h-still-tied", "cat", "dog", "eel"),
    task(4, "h-dogs", "dog", "dog"),
]


def test_review_lists_every_unresolved_tie_with_its_task_link_hash_and_votes() -> None:
    summary = parse_classification_export(EXPORT, CONFIG)
    report = agreement_report(summary.ratings, list(CONFIG.labels))
    text = render_agreement_report("http://ls/projects/5", summary, report, agreement_gate(report, 0.99), 2)
    assert "| [3](http://ls/projects/5/data?task=3) | `h-still-tied` | 3 | cat: 1, dog: 1, eel: 1 |" in text
    assert "unresolved ties (listed below, not labeled): 1" in text
    assert "consensus labels (to the labeled manifest): 3" in text
    assert "one more annotator this round: 2" in text
    assert "**failed**: Krippendorff's alpha" in text
    assert "Fleiss' kappa n/a" in text and "2 annotations: 2, 3 annotations: 2" in text


def test_no_ties_no_tie_section_and_a_passing_gate() -> None:
    summary = parse_classification_export(EXPORT[:1] + EXPORT[3:], CONFIG)
    report = agreement_report(summary.ratings, list(CONFIG.labels))
    text = render_agreement_report("http://ls/projects/5", summary, report, agreement_gate(report, 0.6))
    assert "Unresolved ties" not in text and "- gate: passed" in text


def test_manifest_summary_accounts_for_every_consensus_label() -> None:
    summary = parse_classification_export(EXPORT, CONFIG)  # 3 consensus labels, 1 tie
    text = render_labeled_manifest("v9", "/data/labels/v9.jsonl", summary, 1, 40, ["h-dogs"], ["h-agreed"])
    assert "41 images (1 labeled this round, 40 carried forward)" in text
    assert "consensus labels in the export: 3 = 1 written + 1 labeled in an earlier round" in text
    assert "+ 1 not in the dataset version" in text
    assert "`h-agreed`" in text and "`h-dogs`" in text and "Tied (not written): `h-still-tied`" in text
