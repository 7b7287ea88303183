"""The DEMO ANNOTATOR: a stand-in for people, for demos and tests only.

It answers Label Studio tasks through the real API as one or more demo users, from the demo ground truth
(``ground_truth.json`` written by ``loopline demo-data``), with deliberate, deterministic mistakes.
Nothing in the pipeline reads the ground truth; only this module does.

- Classification (``Choices``): the true label, or with probability ``error_rate`` a wrong one.
- Detection (``RectangleLabels``): the true boxes (``loopline.data.demo_boxes``), each jittered
  by a few % of its size, sometimes missed, rarely mislabeled; every draw is a function of (seed, image,
  annotator, box), so a rerun gives the same answers. A task with a pre-annotation is edited from it, like
  a person would, and the edit's actions are counted against drawing from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.data.demo_boxes import DemoScene
from loopline.data.labeled import PixelBox
from loopline.labeling.agreement import Box, match_boxes
from loopline.labeling.configs import LabelConfig
from loopline.labeling.studio import LabelStudio

logger = logging.getLogger(__name__)

KEEP_IOU = 0.75  # a predicted box this close to a true box (same label) is kept unchanged
REDRAW_IOU = 0.3  # a predicted box this close to a true box (but not KEEP_IOU) is about it: redrawn

Truth = str | DemoScene


def load_ground_truth(path: str | Path) -> dict[str, Truth]:
    """The demo ground truth: content hash → label (classification demo) or → ``DemoScene`` (detection
    demo: ``{"width", "height", "boxes": [{"label", "x", "y", "width", "height"}, ...]}``)."""
    truth: dict[str, Truth] = {}
    for key, value in json.loads(Path(path).read_text()).items():
        if isinstance(value, dict):
            truth[key] = DemoScene.from_dict(value)
        elif isinstance(value, list):
            raise ValueError(
                f"{path}: image {key[:12]} holds a bare list of boxes; the demo annotator needs the image "
                "size too. To fix this, write the demo again with `loopline demo-data OUT --task-type "
                "detection` (its ground truth maps each image to width, height and boxes)."
            )
        else:
            truth[key] = str(value)
    return truth


@dataclass(frozen=True)
class DemoRun:
    created: int  # annotations made
    edits: tuple[PreannotationEdit, ...]  # detection tasks answered from a pre-annotation: what it took


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


@dataclass(frozen=True)
class BoxErrors:
    """The demo annotator's mistakes, as rates: deterministic per (seed, image, annotator, box)."""

    error_rate: float = 0.05  # a wrong label (classification: a wrong choice)
    jitter: float = 0.04  # each side of a drawn box moves by up to this share of the box's size
    miss_rate: float = 0.05  # a true box left undrawn


def drawn_box(
    scene: DemoScene, index: int, labels: tuple[str, ...], errors: BoxErrors, seed: int, key: str, who: int
) -> PixelBox:
    """The annotator ``who``'s drawing of true box ``index``: jittered, clipped to the image, its label
    wrong with probability ``errors.error_rate``."""
    box = scene.boxes[index]
    at = f"{key}:box{index}"
    shift = [(2 * _draw(seed, f"{at}:side{s}", who) - 1) * errors.jitter for s in range(4)]
    x0 = min(max(0.0, box.x + shift[0] * box.width), scene.width)
    y0 = min(max(0.0, box.y + shift[1] * box.height), scene.height)
    x1 = min(max(x0, box.x + box.width * (1 + shift[2])), scene.width)
    y1 = min(max(y0, box.y + box.height * (1 + shift[3])), scene.height)
    label = demo_label(box.label, labels, errors.error_rate, seed, at, who)
    return PixelBox(label, x0, y0, x1 - x0, y1 - y0)


def _missed(index: int, errors: BoxErrors, seed: int, key: str, who: int) -> bool:
    return _draw(seed, f"{key}:box{index}:miss", who) < errors.miss_rate


@dataclass(frozen=True)
class PreannotationEdit:
    """What correcting one pre-annotated image took, against drawing its boxes from scratch."""

    predicted: int  # boxes in the pre-annotation
    kept: int  # left unchanged: no action
    relabeled: int  # right place, wrong label: one action
    redrawn: int  # about a true box but placed poorly: one action (the box is redrawn)
    deleted: int  # about no true box: one action
    drawn: int  # true boxes the model missed, drawn by hand: one action each
    scratch: int  # actions from scratch: one per box this annotator would draw

    @property
    def actions(self) -> int:
        return self.relabeled + self.redrawn + self.deleted + self.drawn


@dataclass(frozen=True)
class BoxAnswer:
    boxes: tuple[PixelBox, ...]  # in pixels
    edit: PreannotationEdit | None  # None: drawn from scratch (no pre-annotation)


def _as_box(box: PixelBox) -> Box:
    return Box(box.label, box.x, box.y, box.width, box.height)


def answer_boxes(
    scene: DemoScene,
    labels: tuple[str, ...],
    errors: BoxErrors,
    seed: int,
    key: str,
    who: int,
    predicted: Sequence[PixelBox] | None = None,
) -> BoxAnswer:
    """The annotator ``who``'s boxes for one image (``key``: its content hash). From scratch: every true
    box not missed, as ``drawn_box``. From a pre-annotation (``predicted``, in pixels): a predicted box
    matching a true box (same label, IoU >= ``KEEP_IOU``) is kept unchanged; one that matches only in
    place gets its label fixed; one about a true box (IoU >= ``REDRAW_IOU``) is redrawn; the others are
    deleted; the true boxes left are drawn (or missed). Matching is ``match_boxes`` (IoU is the same in
    pixels and in percent)."""
    drawable = [j for j in range(len(scene.boxes)) if not _missed(j, errors, seed, key, who)]
    if predicted is None:
        return BoxAnswer(tuple(drawn_box(scene, j, labels, errors, seed, key, who) for j in drawable), None)
    truth, guess = [_as_box(b) for b in scene.boxes], [_as_box(b) for b in predicted]
    left_t, left_p = list(range(len(truth))), list(range(len(guess)))
    steps: list[list[tuple[int, int]]] = []
    for threshold, same_label in ((KEEP_IOU, True), (KEEP_IOU, False), (REDRAW_IOU, False)):
        pairs = match_boxes([truth[t] for t in left_t], [guess[p] for p in left_p], threshold, same_label)
        steps.append([(left_t[a], left_p[b]) for a, b in pairs])
        left_t = [t for t in left_t if t not in {t for t, _ in steps[-1]}]
        left_p = [p for p in left_p if p not in {p for _, p in steps[-1]}]
    boxes: dict[int, PixelBox] = {t: predicted[p] for t, p in steps[0]}
    kept = len(steps[0])
    for t, p in steps[1]:
        label = drawn_box(scene, t, labels, errors, seed, key, who).label
        kept += label == predicted[p].label  # the annotator would have given the model's wrong label
        boxes[t] = PixelBox(label, predicted[p].x, predicted[p].y, predicted[p].width, predicted[p].height)
    for t, _ in steps[2]:
        boxes[t] = drawn_box(scene, t, labels, errors, seed, key, who)
    drawn = [t for t in left_t if t in drawable]
    for t in drawn:
        boxes[t] = drawn_box(scene, t, labels, errors, seed, key, who)
    edit = PreannotationEdit(
        predicted=len(predicted),
        kept=kept,
        relabeled=len(steps[0]) + len(steps[1]) - kept,
        redrawn=len(steps[2]),
        deleted=len(left_p),
        drawn=len(drawn),
        scratch=len(drawable),
    )
    return BoxAnswer(tuple(boxes[t] for t in sorted(boxes)), edit)


@dataclass(frozen=True)
class PreannotationSavings:
    """What pre-annotation saved over a set of images (the benchmark's figures)."""

    images: int
    predicted: int  # pre-annotated boxes
    kept: int  # of them, left unchanged
    share_kept: float | None  # kept / predicted (None without pre-annotated boxes)
    actions_per_image: float  # editing the pre-annotation
    scratch_per_image: float  # drawing from scratch
    saved_per_image: float  # scratch - actions


def preannotation_savings(edits: Sequence[PreannotationEdit]) -> PreannotationSavings:
    images = len(edits)
    predicted, kept = sum(e.predicted for e in edits), sum(e.kept for e in edits)
    actions, scratch = sum(e.actions for e in edits), sum(e.scratch for e in edits)
    per = (lambda total: total / images) if images else (lambda total: 0.0)
    return PreannotationSavings(
        images,
        predicted,
        kept,
        kept / predicted if predicted else None,
        per(actions),
        per(scratch),
        per(scratch - actions),
    )


def predicted_boxes(prediction: Mapping[str, Any], config: LabelConfig, scene: DemoScene) -> list[PixelBox]:
    """A Label Studio prediction's boxes (percent) in pixels of the image the annotator sees."""
    boxes = []
    for region in prediction.get("result") or []:
        if region.get("from_name") != config.control_name or region.get("type") != config.result_type:
            continue
        value = region.get("value") or {}
        for label in value.get(config.result_type, []):
            boxes.append(
                PixelBox(
                    str(label),
                    float(value["x"]) * scene.width / 100,
                    float(value["y"]) * scene.height / 100,
                    float(value["width"]) * scene.width / 100,
                    float(value["height"]) * scene.height / 100,
                )
            )
    return boxes


def rectangle_results(
    boxes: Sequence[PixelBox], scene: DemoScene, config: LabelConfig
) -> list[dict[str, Any]]:
    """Boxes in pixels as Label Studio ``rectanglelabels`` results (percent of the image)."""
    return [
        {
            "id": f"demo{i}",
            "from_name": config.control_name,
            "to_name": config.object_name,
            "type": config.result_type,
            "original_width": scene.width,
            "original_height": scene.height,
            "image_rotation": 0,
            "value": {
                "x": 100 * box.x / scene.width,
                "y": 100 * box.y / scene.height,
                "width": 100 * box.width / scene.width,
                "height": 100 * box.height / scene.height,
                "rotation": 0,
                "rectanglelabels": [box.label],
            },
        }
        for i, box in enumerate(boxes)
    ]


def _answer(
    task: dict[str, Any], truth: Truth, config: LabelConfig, k: int, errors: BoxErrors, seed: int
) -> tuple[list[dict[str, Any]], PreannotationEdit | None]:
    content_hash = task["data"]["content_hash"]
    if config.task_type == "classification" and isinstance(truth, str):
        label = demo_label(truth, config.labels, errors.error_rate, seed, content_hash, k)
        region = {"from_name": config.control_name, "to_name": config.object_name, "type": config.result_type}
        return [{**region, "value": {"choices": [label]}}], None
    if config.task_type == "detection" and isinstance(truth, DemoScene):
        predictions = task.get("predictions") or []
        predicted = predicted_boxes(predictions[0], config, truth) if predictions else None
        answer = answer_boxes(truth, config.labels, errors, seed, content_hash, k, predicted)
        return rectangle_results(answer.boxes, truth, config), answer.edit
    kind = "a label" if isinstance(truth, str) else "boxes"
    raise ValueError(
        f"the ground truth of image {content_hash[:12]} holds {kind}, but project tasks are "
        f"{config.task_type}. To fix this, give the demo annotator the ground truth of the "
        f"{config.task_type} demo (`loopline demo-data OUT --task-type {config.task_type}`)."
    )


def listed_projects(studio: LabelStudio) -> list[dict[str, Any]]:
    """Label Studio's projects with only the fields the demo annotator reads: ``include`` also spares Label
    Studio six of its eight counters, each a query over every task, and the demo annotator asks every
    second."""
    fields = "id,description,label_config,maximum_annotations,task_number,finished_task_number"
    params = {"page_size": 100, "include": fields}
    return list(studio.request("GET", "/api/projects", params=params)["results"])


def has_open_tasks(project: Mapping[str, Any], annotators: int) -> bool:
    """Whether a project (as Label Studio lists it) may have a task the demo annotator should answer. Label
    Studio counts the tasks whose annotations reach their overlap (``finished_task_number``; asking a task
    for one more annotator unfinishes it), so a project whose every task is finished is skipped without
    reading its tasks, unless the demo gives more annotations than the project asks for."""
    tasks = int(project.get("task_number") or 0)
    finished = int(project.get("finished_task_number") or 0)
    asks_for = int(project.get("maximum_annotations") or 1)
    return tasks > 0 and (finished < tasks or annotators > asks_for)


def annotate_tasks(
    studio: LabelStudio,
    project_id: int,
    config: LabelConfig,
    ground_truth: Mapping[str, Truth],
    annotators: int = 2,
    errors: BoxErrors | None = None,
    seed: int = 0,
) -> DemoRun:
    """Give every task ``annotators`` demo annotations, or as many as the task's own ``overlap`` asks for
    when that is more (a tied task asked for one more annotator); returns what was made, and for
    detection tasks with a pre-annotation what editing it took (``preannotation_savings`` sums them)."""
    errors = errors or BoxErrors()
    tasks = studio.tasks_with_annotations(project_id)
    wanted = max([annotators, *(int(t.get("overlap") or 0) for t in tasks)])
    users = [
        studio.ensure_user(f"demo-annotator-{k + 1}@loopline.local", "Demo annotator", str(k + 1))
        for k in range(wanted)
    ]
    created, edits = 0, []
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
            result, edit = _answer(task, truth, config, k, errors, seed)
            studio.annotate(int(task["id"]), result, completed_by=user)
            created += 1
            if edit is not None:
                edits.append(edit)
    return DemoRun(created, tuple(edits))


def annotate_project(
    studio: LabelStudio,
    project_id: int,
    config: LabelConfig,
    ground_truth: Mapping[str, Truth],
    annotators: int = 2,
    error_rate: float = 0.05,
    seed: int = 0,
) -> int:
    """``annotate_tasks`` with a wrong-label rate of ``error_rate`` (boxes: the default jitter and miss
    rate as well); returns how many annotations were created."""
    errors = BoxErrors(error_rate=error_rate)
    return annotate_tasks(studio, project_id, config, ground_truth, annotators, errors, seed).created
