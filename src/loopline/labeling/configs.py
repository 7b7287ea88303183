"""Label Studio label configs: generated from the task type and label set, and checked before use.

Each task type has one object tag (``Image``, reading ``$image``) and one control tag:

| task type        | control tag       | prediction ``type`` |
|------------------|-------------------|---------------------|
| classification   | ``Choices``       | ``choices``         |
| detection        | ``RectangleLabels`` | ``rectanglelabels`` |
| segmentation     | ``PolygonLabels`` | ``polygonlabels``   |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import Element
from xml.sax.saxutils import quoteattr

from defusedxml import ElementTree

from loopline.errors import LabelConfigMismatch

TaskType = Literal["classification", "detection", "segmentation"]
TASK_TYPES: tuple[TaskType, ...] = ("classification", "detection", "segmentation")
CONTROL_TAGS: dict[TaskType, str] = {
    "classification": "Choices",
    "detection": "RectangleLabels",
    "segmentation": "PolygonLabels",
}
LABEL_TAGS: dict[TaskType, str] = {"classification": "Choice", "detection": "Label", "segmentation": "Label"}
OBJECT_TAG = "Image"
DATA_KEY = "image"


@dataclass(frozen=True)
class LabelConfig:
    """What loopline needs to know of a label config: names, tags and the label set."""

    task_type: TaskType
    control_name: str
    object_name: str
    labels: tuple[str, ...]
    xml: str

    @property
    def result_type(self) -> str:
        return CONTROL_TAGS[self.task_type].lower()


def render_label_config(task_type: TaskType, labels: list[str] | tuple[str, ...]) -> str:
    """The label config XML for a task type and label set (label order is kept)."""
    if task_type not in CONTROL_TAGS:
        raise LabelConfigMismatch(
            f"Unknown task type {task_type!r}. Valid task types: {', '.join(TASK_TYPES)}."
        )
    problems = _label_set_problems(list(labels))
    if problems:
        raise LabelConfigMismatch("The label set is not usable: " + "; ".join(problems))
    control, item = CONTROL_TAGS[task_type], LABEL_TAGS[task_type]
    extra = ' choice="single" showInline="true"' if task_type == "classification" else ""
    items = "\n".join(f"    <{item} value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <Image name="{DATA_KEY}" value="${DATA_KEY}" zoom="true"/>\n'
        f'  <{control} name="label" toName="{DATA_KEY}"{extra}>\n{items}\n  </{control}>\n'
        "</View>\n"
    )


def _label_set_problems(labels: list[str]) -> list[str]:
    problems = []
    if not labels:
        problems.append("no labels (give at least one, e.g. ['cat', 'dog'])")
    if any(not str(label).strip() for label in labels):
        problems.append("an empty label value")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        problems.append(f"duplicate labels {duplicates}")
    return problems


def parse_label_config(
    xml: str, task_type: TaskType, expected_labels: list[str] | None = None
) -> LabelConfig:
    """Check a label config against a task type (and label set); list every problem in one error."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise LabelConfigMismatch(
            f"The label config is not valid XML ({exc}). To fix this, check the tags."
        ) from exc
    problems: list[str] = []
    if root.tag != "View":
        problems.append(f"the root tag is <{root.tag}>, expected <View>")
    objects = {el.get("name", ""): el for el in root.iter() if el.tag == OBJECT_TAG}
    want = CONTROL_TAGS.get(task_type)
    if want is None:
        raise LabelConfigMismatch(
            f"Unknown task type {task_type!r}. Valid task types: {', '.join(TASK_TYPES)}."
        )
    controls = [el for el in root.iter() if el.tag == want]
    others = sorted({el.tag for el in root.iter() if el.tag in CONTROL_TAGS.values() and el.tag != want})
    if not objects:
        problems.append(f'no <Image> tag (add <Image name="{DATA_KEY}" value="${DATA_KEY}"/>)')
    for name, el in objects.items():
        if el.get("value") != f"${DATA_KEY}":
            problems.append(f"<Image name={name!r}> reads {el.get('value')!r}, expected '${DATA_KEY}'")
    if len(controls) != 1:
        found = f"found {len(controls)}" + (f" (and {', '.join(others)})" if others else "")
        problems.append(f"a {task_type} config needs exactly one <{want}> tag, {found}")
    control = controls[0] if controls else Element(want)
    control_name = control.get("name", "")
    to_name = control.get("toName", "")
    if controls and not control_name:
        problems.append(f"<{want}> has no name attribute")
    if controls and to_name not in objects:
        problems.append(f"<{want} toName={to_name!r}> points at no <Image>; image names: {sorted(objects)}")
    labels = [el.get("value", "") for el in control if el.tag == LABEL_TAGS[task_type]]
    if controls:
        problems += [f"<{want}>: {p}" for p in _label_set_problems(labels)]
    if expected_labels is not None and controls and sorted(labels) != sorted(expected_labels):
        missing = sorted(set(expected_labels) - set(labels))
        extra = sorted(set(labels) - set(expected_labels))
        problems.append(f"the labels differ from the label set: missing {missing}, unexpected {extra}")
    if problems:
        raise LabelConfigMismatch(
            f"The label config does not fit a {task_type} task: " + "; ".join(problems) + ". To fix this, "
            "generate it with render_label_config(task_type, labels) or correct the tags above."
        )
    return LabelConfig(task_type, control_name, to_name, tuple(labels), xml)
