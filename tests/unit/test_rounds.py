"""A later round's selection in the core: the champion scores, margin x k-center picks, predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loopline.data.labeled import LabeledRow
from loopline.data.manifest import ManifestRow
from loopline.errors import RegistryError
from loopline.labeling.configs import LabelConfig, parse_label_config, render_label_config
from loopline.labeling.rounds import (
    ChampionModel,
    RoundSelection,
    render_selection_report,
    select_round,
)

pytestmark = pytest.mark.unit

LABELS = ["dark", "bright"]
SIZE = 4


def config() -> LabelConfig:
    return parse_label_config(render_label_config("classification", LABELS), "classification", LABELS)


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory: pytest.TempPathFactory) -> ChampionModel:
    """An ONNX model that says "bright" above mid-grey (123.7 of 255) and is unsure near it."""
    import torch

    from loopline.training.onnx_export import export_onnx

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, : SIZE * SIZE] = 1.0 / (SIZE * SIZE)  # mean of the normalised red channel
        model[1].bias.zero_()
    path = export_onnx(model, SIZE, tmp_path_factory.mktemp("champion") / "m.onnx")
    return ChampionModel.from_mapping(path, {"labels": LABELS, "input_size": SIZE}, "digits v3")


def grey(value: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (value, value, value))


def manifest_row(name: str) -> ManifestRow:
    return ManifestRow(f"h-{name}", f"src/{name}", f"mem://{name}", 8, 8, "PNG", None, None)


def labeled_row(name: str) -> LabeledRow:
    return LabeledRow(f"h-{name}", f"mem://{name}", "dark", "train", "v1", 1, 1, 1, ())


class Reader:
    """In-memory images by URI; counts reads."""

    def __init__(self, images: dict[str, Image.Image]) -> None:
        self.images = images
        self.reads = 0

    def __call__(self, uri: str) -> Image.Image:
        self.reads += 1
        return self.images[uri]


def test_the_round_picks_distinct_unlabeled_images_with_the_champions_answers(
    brightness_model: ChampionModel,
) -> None:
    levels = {"a": 0, "b": 60, "c": 110, "d": 120, "e": 124, "f": 130, "g": 140, "h": 250, "p": 20, "q": 235}
    reader = Reader({f"mem://{k}": grey(v) for k, v in levels.items()})
    candidates = [manifest_row(k) for k in "abcdefghpq"]  # p and q were labeled in round 1
    prior = [labeled_row("p"), labeled_row("q")]

    selection = select_round(candidates, prior, reader, brightness_model, 3, seed=0, config=config())

    hashes = [r.content_hash for r in selection.chosen]
    assert len(hashes) == 3 == len(set(hashes)) and not {"h-p", "h-q"} & set(hashes)
    assert hashes == sorted(hashes) and set(selection.predictions) == set(hashes)
    for row in selection.chosen:
        prediction = selection.predictions[row.content_hash]
        expected = "bright" if levels[row.content_hash[2:]] >= 124 else "dark"  # mid-grey: 123.7
        assert prediction["result"][0]["value"] == {"choices": [expected]}
        assert prediction["model_version"] == "digits v3" and 0.5 <= prediction["score"] <= 1.0
    assert (selection.pool, selection.prior, selection.budget) == (8, 2, 3)
    assert selection.nothing_because is None
    assert selection.mean_uncertainty_chosen is not None and selection.mean_uncertainty_pool is not None
    assert selection.mean_uncertainty_chosen > selection.mean_uncertainty_pool  # the unsure ones go first
    assert reader.reads == 8 + 2  # every pool image scored once, every prior image thumbnailed once


def test_copies_of_one_image_become_distinct_tasks(brightness_model: ChampionModel) -> None:
    # five re-encodings of one picture (different content hashes, same pixels) and a labeled copy of it
    reader = Reader({f"mem://{k}": grey(124) for k in "abcdep"})
    candidates = [manifest_row(k) for k in "abcde"]
    selection = select_round(candidates, [labeled_row("p")], reader, brightness_model, 4, 0, config())
    assert len({r.content_hash for r in selection.chosen}) == len(selection.chosen) == 4


def test_a_pool_smaller_than_the_budget_is_taken_whole(brightness_model: ChampionModel) -> None:
    reader = Reader({f"mem://{k}": grey(v) for k, v in {"a": 10, "b": 200, "p": 100}.items()})
    candidates = [manifest_row("a"), manifest_row("b")]
    selection = select_round(candidates, [labeled_row("p")], reader, brightness_model, 300, 0, config())
    assert [r.content_hash for r in selection.chosen] == ["h-a", "h-b"]
    assert "(the whole pool: smaller than the budget)" in render_selection_report(selection)


class NoReads:
    def __call__(self, uri: str) -> Image.Image:
        raise AssertionError(f"nothing should be read, read {uri}")


NO_MODEL = ChampionModel(Path("/nonexistent/model.onnx"), tuple(LABELS), SIZE, "digits v3")


def test_an_empty_pool_imports_nothing_and_says_why() -> None:
    everything_labeled = [manifest_row("a"), manifest_row("b")]
    prior = [labeled_row("a"), labeled_row("b")]
    for candidates in (everything_labeled, []):
        selection = select_round(candidates, prior, NoReads(), NO_MODEL, 10, 0, config())
        assert selection.chosen == () and dict(selection.predictions) == {}
        assert selection.nothing_because is not None and "labeled already (2 labeled before)" in (
            selection.nothing_because
        )
        report = render_selection_report(selection)
        assert "**nothing imported**" in report and "pool: 0 unlabeled images" in report


def test_a_budget_already_met_imports_nothing_and_says_so() -> None:
    selection = select_round([manifest_row("a")], [], NoReads(), NO_MODEL, 0, 0, config())
    assert selection.chosen == () and selection.nothing_because == "the round's budget is already met"
    assert "budget is already met" in render_selection_report(selection)


def test_the_report_shows_the_model_the_pool_and_the_uncertainty() -> None:
    selection = RoundSelection((manifest_row("a"),), {}, "digits v3", 1, 5, 40, 0.912, 0.401)
    report = render_selection_report(selection)
    assert report.startswith("# Round selection by digits v3\n")
    assert "- pool: 5 unlabeled images; 40 labeled before; budget still open: 1" in report
    assert "- chosen: 1\n" in report and "mean margin uncertainty 0.912 (pool: 0.401)" in report


def test_a_class_mapping_that_does_not_fit_the_model_is_refused(brightness_model: ChampionModel) -> None:
    with pytest.raises(RegistryError, match=r"lacks \['input_size'\]"):
        ChampionModel.from_mapping(Path("m.onnx"), {"labels": LABELS}, "digits v3")
    three = ChampionModel(brightness_model.onnx_path, ("a", "b", "c"), SIZE, "digits v3")
    reader = Reader({"mem://a": grey(10)})
    with pytest.raises(RegistryError, match="outputs 2 classes but its class mapping lists 3"):
        select_round([manifest_row("a")], [], reader, three, 1, 0, config())


def test_scores_are_probabilities_per_image_in_batches(brightness_model: ChampionModel) -> None:
    from loopline.labeling.preannotate import score_stored_images

    reader = Reader({f"mem://{i}": grey(i * 25) for i in range(11)})
    uris = [f"mem://{i}" for i in range(11)]
    whole = score_stored_images(brightness_model.onnx_path, SIZE, uris, reader)
    batched = score_stored_images(brightness_model.onnx_path, SIZE, uris, reader, batch_size=4)
    assert whole.probabilities.shape == (11, 2) and whole.embeddings.shape == (11, 64)
    np.testing.assert_allclose(whole.probabilities, batched.probabilities, atol=1e-6)
    np.testing.assert_allclose(whole.probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert list(whole.probabilities.argmax(axis=1)) == [0] * 5 + [1] * 6  # 125 and up: bright
