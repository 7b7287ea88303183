"""Evaluating the challenger and the champion on the test split (tiny real ONNX models, images on disk read
through ImageReader) and the report a reviewer reads."""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loopline.data.pixels import ImageReader
from loopline.errors import RegistryError
from loopline.registry.artifacts import ModelFiles
from loopline.registry.evaluation import Evaluation, Prediction
from loopline.registry.gate import GateRules, IncomparableModels, compare, model_gate
from loopline.registry.report import render_evaluation, render_model_card
from loopline.settings import Settings
from loopline.verdict import GateVerdict

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Row:
    content_hash: str
    stored_uri: str
    label: str
    split: str


def bright_corner_model(folder: Path, labels: tuple[str, ...] = ("off", "on")) -> ModelFiles:
    """Says ``on`` when the top-left pixel is bright, else ``off``."""
    import torch

    from loopline.training.onnx_export import export_onnx

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, len(labels)))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, 0] = 10.0
        model[1].bias.zero_()
    folder.mkdir(parents=True, exist_ok=True)
    return ModelFiles(export_onnx(model, 4, folder / "m.onnx"), labels, 4, {"train": [], "val": []})


def picture(path: Path, bright: tuple[int, int] | None, orientation: int = 1) -> str:
    """A dark 4x4 PNG, one bright pixel at ``bright`` (x, y), with an EXIF orientation tag."""
    image = Image.new("RGB", (4, 4), (0, 0, 0))
    if bright:
        image.putpixel(bright, (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format="PNG", exif=exif)
    return str(path)


@pytest.fixture
def rows(tmp_path: Path) -> list[Row]:
    made = [
        Row("h-dark", picture(tmp_path / "dark.png", None), "off", "test"),
        Row("h-lit", picture(tmp_path / "lit.png", (0, 0)), "on", "test"),
        # Stored upside down (EXIF orientation 3: rotate 180°): upright, the bright pixel is top-left.
        Row("h-phone", picture(tmp_path / "phone.png", (3, 3), orientation=3), "on", "test"),
        Row("h-miss", picture(tmp_path / "miss.png", (2, 2)), "on", "test"),  # a mistake
        Row("h-train", picture(tmp_path / "train.png", None), "off", "train"),
    ]
    return made


def test_both_models_are_evaluated_image_by_image_with_exif_applied(tmp_path: Path, rows: list[Row]) -> None:
    from loopline.registry.evaluate import evaluate_models

    reader = ImageReader(Settings(home=tmp_path / "home"))
    challenger = bright_corner_model(tmp_path / "challenger")
    champion = bright_corner_model(tmp_path / "champion")
    result = evaluate_models(rows, challenger, champion, "3", reader.open)
    assert result.champion is not None and result.champion_version == "3"
    assert set(result.challenger.predictions) == {"h-dark", "h-lit", "h-phone", "h-miss"}  # the test split
    assert result.challenger.predictions["h-phone"].predicted == "on"  # read upright, as annotators saw it
    assert result.challenger.correct() == {"h-dark": True, "h-lit": True, "h-miss": False, "h-phone": True}
    assert result.challenger.test_set == result.champion.test_set
    assert list(result.thumbnails) == ["h-miss"]
    with Image.open(io.BytesIO(result.thumbnails["h-miss"])) as thumb:
        assert thumb.format == "PNG" and thumb.size == (96, 96)
    alone = evaluate_models(list(reversed(rows)), challenger, None, None, reader.open)
    assert alone.champion is None and alone.challenger.predictions == result.challenger.predictions


def test_a_champion_that_cannot_be_compared_is_refused(tmp_path: Path, rows: list[Row]) -> None:
    from loopline.registry.evaluate import evaluate_models

    reader = ImageReader(Settings(home=tmp_path / "home"))
    challenger = bright_corner_model(tmp_path / "challenger")
    leaky = ModelFiles(challenger.onnx, challenger.labels, 4, {"train": ["h-lit"], "val": []})
    with pytest.raises(
        IncomparableModels, match=r"\(v3\) was trained or validated on 1 of the 4 test images"
    ):
        evaluate_models(rows, challenger, leaky, "3", reader.open)
    other = ModelFiles(challenger.onnx, ("cat", "dog"), 4, {})
    with pytest.raises(IncomparableModels, match=r"champion v3 predicts \['cat', 'dog'\]"):
        evaluate_models(rows, challenger, other, "3", reader.open)
    with pytest.raises(RegistryError, match="no test split"):
        evaluate_models([r for r in rows if r.split != "test"], challenger, None, None, reader.open)


def evaluation(wrong: set[str]) -> Evaluation:
    labels = ("cat", "dog")
    outcomes = {
        f"{label}{i:02d}": Prediction(label, "dog" if label == "cat" else "cat", 0.97)
        if f"{label}{i:02d}" in wrong
        else Prediction(label, label, 0.8)
        for label in labels
        for i in range(10)
    }
    return Evaluation.from_predictions(labels, outcomes, "t1", ece=0.03, latency_ms=0.8)


def test_the_evaluation_report_shows_intervals_paired_tests_the_verdict_and_pictures() -> None:
    champion, challenger = evaluation(set()), evaluation({"cat03"})
    comparison = compare(challenger, champion)
    verdict = model_gate(challenger, comparison, GateRules())
    report = render_evaluation(
        "m", "2", challenger, champion, "1", comparison, verdict, thumbnail={"cat03": b"png"}.get
    )
    assert "against champion v1" in report
    assert "| accuracy | 0.950 [0.764, 0.991] | 1.000 [0.839, 1.000] | -0.050 |" in report
    assert "gets 0 right that the champion gets wrong and 1 wrong" in report and "p = 1)" in report
    assert "| cat | 1.000 | 0.900 [0.596, 0.982] | 0.947 | 10 | -0.100 | 1 (1) |" in report
    assert "- passed: every rule holds" in report and report.count("- note: ") == 2
    assert "too small to tell" in report
    assert "| ![cat03](data:image/png;base64,cG5n) `cat03` | cat | dog | 0.97 |" in report
    failed = render_evaluation(
        "m", "2", challenger, None, None, compare(challenger, None), GateVerdict("model", ("rule x",))
    )
    assert "no champion yet" in failed and "- FAILED: rule x" in failed and "| accuracy | 0.950" in failed


def test_the_model_card_lists_lineage() -> None:
    card = render_model_card("m", "2", {"dataset_version": "abc"}, ("cat", "dog"))
    assert card.startswith("# m v2") and "| dataset_version | `abc` |" in card


def test_arrays_for_each_input_size_are_made_once(tmp_path: Path, rows: list[Row]) -> None:
    from loopline.registry import evaluate

    reads: list[str] = []
    reader = ImageReader(Settings(home=tmp_path / "home"))

    def counting_open(uri: str) -> Image.Image:
        reads.append(uri)
        return reader.open(uri)

    challenger = bright_corner_model(tmp_path / "challenger")
    evaluate.evaluate_models(rows, challenger, bright_corner_model(tmp_path / "champion"), "1", counting_open)
    assert sorted(reads) == sorted(r.stored_uri for r in rows if r.split == "test")  # each image read once
    assert np.asarray(evaluate._model_inputs([reader.open(rows[1].stored_uri)], 4)).shape == (1, 3, 4, 4)
