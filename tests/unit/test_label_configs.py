import pytest

from loopline.errors import LabelConfigMismatch
from loopline.labeling.configs import TASK_TYPES, parse_label_config, render_label_config

pytestmark = pytest.mark.unit

LABELS = ["cat", "dog", "bird & fish"]


@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_rendered_configs_parse_back(task_type) -> None:  # type: ignore[no-untyped-def]
    config = parse_label_config(render_label_config(task_type, LABELS), task_type, LABELS)
    assert config.labels == tuple(LABELS)
    assert (config.control_name, config.object_name) == ("label", "image")


IMAGE = '<Image name="img" value="$image"/>'
VALID_CHOICES = f'<View>{IMAGE}<Choices name="c" toName="img"><Choice value="a"/></Choices></View>'

BROKEN = [
    ("<View><Image", "not valid XML"),
    ("<Root/>", "root tag is <Root>"),
    ('<View><Choices name="c" toName="img"><Choice value="a"/></Choices></View>', "no <Image> tag"),
    (
        '<View><Image name="img" value="$url"/>'
        '<Choices name="c" toName="img"><Choice value="a"/></Choices></View>',
        "reads '$url'",
    ),
    (
        f'<View>{IMAGE}<Choices name="c" toName="pic"><Choice value="a"/></Choices></View>',
        "points at no <Image>",
    ),
    (f'<View>{IMAGE}<Choices name="c" toName="img"></Choices></View>', "no labels"),
    (
        f'<View>{IMAGE}<Choices name="c" toName="img"><Choice value="a"/>'
        '<Choice value="a"/></Choices></View>',
        "duplicate labels ['a']",
    ),
    (
        f'<View>{IMAGE}<RectangleLabels name="r" toName="img"><Label value="a"/></RectangleLabels></View>',
        "needs exactly one <Choices> tag, found 0 (and RectangleLabels)",
    ),
]


@pytest.mark.parametrize(("xml", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_broken_configs_are_explained(xml: str, message: str) -> None:
    with pytest.raises(LabelConfigMismatch, match="(?s)" + __import__("re").escape(message)):
        parse_label_config(xml, "classification")


def test_every_problem_is_listed_at_once() -> None:
    xml = '<View><Image name="img" value="$url"/><Choices name="c" toName="pic"></Choices></View>'
    with pytest.raises(LabelConfigMismatch) as info:
        parse_label_config(xml, "classification")
    assert all(part in str(info.value) for part in ("reads '$url'", "points at no <Image>", "no labels"))


def test_label_set_must_match() -> None:
    with pytest.raises(LabelConfigMismatch, match=r"missing \['b'\], unexpected \[\]"):
        parse_label_config(VALID_CHOICES, "classification", ["a", "b"])


def test_unknown_task_type_and_bad_label_sets() -> None:
    with pytest.raises(
        LabelConfigMismatch, match="Valid task types: classification, detection, segmentation"
    ):
        render_label_config("keypoints", ["a"])  # type: ignore[arg-type]
    with pytest.raises(LabelConfigMismatch, match="no labels"):
        render_label_config("classification", [])
