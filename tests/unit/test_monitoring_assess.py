"""``assess``: what the monitor judges, and the faults it must survive (no traffic, no champion, a rollout
in progress, a missing sample file), with the verdict kept for ``loopline status``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from loopline.errors import StoredImageMissing
from loopline.monitoring.accuracy import accuracy_over_time
from loopline.monitoring.features import IMAGE_STATISTICS, image_statistics
from loopline.monitoring.monitor import ServedInputs, assess, measure_served
from loopline.monitoring.reference import Reference
from loopline.monitoring.verdict import DriftThresholds
from loopline.monitoring.verdicts_store import latest_verdict, save_verdict
from loopline.monitoring.window import TrafficWindow
from loopline.rollout.events import ServedSample

pytestmark = pytest.mark.unit
SINCE = datetime(2026, 11, 28, 10, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=1)
LABELS = ("a", "b")


def window(n: int, rng: np.random.Generator, **columns: object) -> TrafficWindow:
    values: dict[str, object] = {
        "request_id": np.array([f"r{i}" for i in range(n)], dtype=object),
        "variant": np.array(["champion"] * n, dtype=object),
        "model_version": np.array(["1"] * n, dtype=object),
        "latency_ms": rng.gamma(2, 5, n),
        "status": np.full(n, 200),
        "fallback": np.zeros(n, bool),
        "predicted_label": np.array(rng.choice(LABELS, n), dtype=object),
        "confidence": rng.beta(8, 2, n),
        "seconds": np.sort(rng.uniform(0, 3600, n)),
        "judged": np.zeros(n, bool),
        "correct": np.zeros(n, bool),
    }
    values.update(columns)
    return TrafficWindow(model="m", since=SINCE, until=UNTIL, **values)  # type: ignore[arg-type]


def reference(rng: np.random.Generator, n: int = 200) -> Reference:
    return Reference(
        version="1",
        labels=LABELS,
        label_counts={"a": n // 2, "b": n // 2},
        predicted_counts={"a": n // 2, "b": n // 2},
        confidences=rng.beta(8, 2, n),
        statistics=rng.normal(100, 10, (n, len(IMAGE_STATISTICS))),
        logits=rng.normal(0, 1, (n, 2)),
        accuracy=0.9,
        onnx=Path("unused.onnx"),
        input_size=4,
        source="labels/x.jsonl",
    )


def served(rng: np.random.Generator, n: int = 200, brightness: float = 0.0) -> ServedInputs:
    statistics = rng.normal(100, 10, (n, len(IMAGE_STATISTICS)))
    statistics[:, 0] += brightness
    return ServedInputs(statistics, rng.normal(0, 1, (n, 2)))


def run(w: TrafficWindow, ref: Reference | None, inputs: ServedInputs | None, version: str | None = "1"):
    return assess(w, version, ref, inputs, DriftThresholds(), timedelta(minutes=10), UNTIL)


def test_unshifted_traffic_is_ok_and_every_test_is_reported() -> None:
    rng = np.random.default_rng(1)
    report = run(window(500, rng), reference(rng), served(rng))
    assert report.verdict.verdict == "ok" and report.verdict.severity == "none", report.verdict
    assert len(report.tests) == 2 + len(IMAGE_STATISTICS) + len(LABELS)
    assert report.champion.requests == 500 and report.verdict.samples == 200


def test_brighter_images_are_input_drift_with_the_numbers() -> None:
    rng = np.random.default_rng(2)
    verdict = run(window(500, rng), reference(rng), served(rng, brightness=8.0)).verdict
    assert verdict.verdict == "drift" and verdict.drifted == ["image:brightness"]
    assert verdict.severity == "warning"
    [finding] = verdict.findings
    assert finding.value < 0.01 and "median" in finding.detail


def test_an_empty_window_is_no_data_not_a_crash() -> None:
    rng = np.random.default_rng(3)
    verdict = run(window(0, rng), reference(rng), None).verdict
    assert verdict.verdict == "no_data" and not verdict.findings
    assert "no requests were routed" in verdict.notes[0]


def test_without_a_champion_there_is_nothing_to_judge() -> None:
    rng = np.random.default_rng(4)
    verdict = run(window(100, rng), None, None, version=None).verdict
    assert verdict.verdict == "no_data" and "no champion" in verdict.notes[0]


def test_during_a_rollout_only_the_champion_answers_are_judged() -> None:
    rng = np.random.default_rng(5)
    n = 600
    challenger = np.arange(n) % 3 == 0  # a third of the users meet the challenger, which says "b" to all
    w = window(
        n,
        rng,
        variant=np.where(challenger, "challenger", "champion").astype(object),
        model_version=np.where(challenger, "2", "1").astype(object),
        predicted_label=np.where(challenger, "b", rng.choice(LABELS, n)).astype(object),
        status=np.where(challenger & (np.arange(n) % 2 == 0), 502, 200),
    )
    report = run(w, reference(rng), served(rng))
    assert report.verdict.verdict == "ok", report.verdict
    assert report.champion.requests == n - challenger.sum() == report.arms["champion"].requests
    assert report.arms["challenger"].errors > 0  # shown in the artifact, not judged here
    everyone = run(window(n, rng, predicted_label=w.predicted_label), reference(rng), served(rng)).verdict
    assert "prediction:class_mix" in everyone.drifted  # the same answers, all from the champion: drift


def test_errors_and_lost_accuracy_are_critical() -> None:
    rng = np.random.default_rng(6)
    n = 400
    judged = np.arange(n) % 2 == 0
    w = window(n, rng, status=np.where(np.arange(n) % 10 == 0, 503, 200), judged=judged,
               correct=judged & (rng.uniform(size=n) < 0.6))  # fmt: skip
    verdict = run(w, reference(rng), served(rng)).verdict
    assert {"errors:error_rate", "accuracy:feedback_accuracy"} <= set(verdict.drifted)
    assert verdict.severity == "critical"


def test_accuracy_buckets_carry_wilson_intervals() -> None:
    seconds = np.array([10.0, 20.0, 30.0, 700.0])
    buckets = accuracy_over_time(
        seconds, np.array([True, True, False, True]), SINCE, UNTIL, timedelta(minutes=10)
    )
    assert len(buckets) == 6 and buckets[0].judged == 3 and buckets[1].judged == 1 and buckets[2].judged == 0
    assert buckets[0].lower < 2 / 3 < buckets[0].upper and 0 < buckets[0].lower
    assert np.isnan(buckets[2].accuracy)


def test_a_missing_sample_file_is_skipped_and_named(tmp_path: Path) -> None:
    picture = tmp_path / "ok.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(picture)

    def read(uri: str) -> bytes:
        if not Path(uri).is_file():
            raise StoredImageMissing(f"The stored image {uri} cannot be read")
        return Path(uri).read_bytes()

    samples = [ServedSample("r1", "h1", str(picture)), ServedSample("r2", "h2", str(tmp_path / "gone.png"))]
    inputs = measure_served(samples, read, None)
    assert len(inputs) == 1 and inputs.unreadable == (f"{tmp_path / 'gone.png'}: StoredImageMissing",)
    rng = np.random.default_rng(7)
    verdict = run(window(100, rng), reference(rng), inputs).verdict
    assert any("could not be read" in note for note in verdict.notes)
    assert any("input drift not judged" in note for note in verdict.notes)


def test_image_statistics_move_with_brightness_and_blur() -> None:
    rng = np.random.default_rng(8)
    picture = Image.fromarray(rng.integers(0, 200, (64, 48, 3), dtype=np.uint8))
    base = image_statistics(picture)
    brighter = image_statistics(Image.eval(picture, lambda v: min(255, v + 40)))
    blurred = image_statistics(picture.filter(ImageFilter.GaussianBlur(2)))
    i = IMAGE_STATISTICS.index
    assert brighter[i("brightness")] > base[i("brightness")] + 30
    assert blurred[i("sharpness")] < base[i("sharpness")] / 4
    assert (base[i("width")], base[i("height")]) == (48, 64)


def test_the_latest_verdict_is_read_back_by_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    assert latest_verdict(url, "m") is None and not (tmp_path / "events.db").exists()
    rng = np.random.default_rng(9)
    first = run(window(0, rng), None, None).verdict
    second = run(window(500, rng), reference(rng), served(rng, brightness=8.0)).verdict
    save_verdict(url, first)
    save_verdict(url, second.model_copy(update={"at": second.at + timedelta(minutes=5)}))
    found = latest_verdict(url, "m")
    assert found is not None and found.verdict == "drift" and found.drifted == ["image:brightness"]
    assert latest_verdict(url, "other") is None
