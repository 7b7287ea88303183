"""The DEMO ANNOTATOR: a stand-in for people, for demos and tests only.

It answers Label Studio tasks through the real API as one or more demo users, from the demo ground truth
(``ground_truth.json`` written by ``loopline demo-data``), with a configurable error rate. Nothing in the
pipeline reads the ground truth; only this module does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from loopline.labeling.configs import LabelConfig
from loopline.labeling.studio import LabelStudio

logger = logging.getLogger(__name__)


def load_ground_truth(path: str | Path) -> dict[str, str]:
    return {k: str(v) for k, v in json.loads(Path(path).read_text()).items()}


def _draw(seed: int, content_hash: str, annotator: int) -> float:
    digest = hashlib.sha256(f"{seed}:{content_hash}:{annotator}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def demo_label(
    truth: str, labels: tuple[str, ...], error_rate: float, seed: int, content_hash: str, who: int
) -> str:
    """The true label, or (with probability ``error_rate``) a deterministic wrong one."""
    if _draw(seed, content_hash, who) >= error_rate or len(labels) < 2:
        return truth
    wrong = [label for label in labels if label != truth]
    return wrong[int(_draw(seed + 1, content_hash, who) * len(wrong))]


def annotate_project(
    studio: LabelStudio,
    project_id: int,
    config: LabelConfig,
    ground_truth: dict[str, str],
    annotators: int = 2,
    error_rate: float = 0.05,
    seed: int = 0,
) -> int:
    """Give every task ``annotators`` demo annotations, or as many as the task's own ``overlap`` asks for
    when that is more (a tied task asked for one more annotator); returns how many were created."""
    tasks = studio.tasks_with_annotations(project_id)
    wanted = max([annotators, *(int(t.get("overlap") or 0) for t in tasks)])
    users = [
        studio.ensure_user(f"demo-annotator-{k + 1}@loopline.local", "Demo annotator", str(k + 1))
        for k in range(wanted)
    ]
    created = 0
    for task in tasks:
        content_hash = (task.get("data") or {}).get("content_hash", "")
        truth = ground_truth.get(content_hash)
        if truth is None:
            logger.warning("task %s: no ground truth for %s, left for people", task["id"], content_hash[:12])
            continue
        done_by = {a.get("completed_by") for a in task.get("annotations", [])}
        missing = max(annotators, int(task.get("overlap") or 0)) - len(task.get("annotations", []))
        for k, user in enumerate(users):
            if missing <= 0:
                break
            if user in done_by:
                continue
            missing -= 1
            label = demo_label(truth, config.labels, error_rate, seed, content_hash, k)
            result = [
                {
                    "from_name": config.control_name,
                    "to_name": config.object_name,
                    "type": config.result_type,
                    "value": {"choices": [label]},
                }
            ]
            studio.annotate(int(task["id"]), result, completed_by=user)
            created += 1
    return created
