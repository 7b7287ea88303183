"""The smoke test's verdict: every difference between the served model and its evaluation, at once."""

import numpy as np
import pytest

from loopline.deploy.smoke import SmokeCases, SmokeObservation, infer_body, judge_smoke

pytestmark = pytest.mark.unit

EXPECTED = np.array([[2.0, 1.0], [0.5, 1.5], [3.0, -1.0]], dtype=np.float32)
CASES = SmokeCases(("h1", "h2", "h3"), np.zeros((3, 3, 4, 4), dtype=np.float32), EXPECTED)


def seen(logits: np.ndarray | None = EXPECTED, served: str = "m/2", latency: float = 5.0) -> SmokeObservation:
    return SmokeObservation(True, (served,) * 10, logits, (latency,) * 10)


def test_the_same_logits_fast_enough_from_the_right_version_pass() -> None:
    verdict = judge_smoke("m", "2", CASES, seen(EXPECTED + 5e-5), max_latency_ms=50)
    assert verdict.passed and verdict.gate == "smoke"
    assert verdict.notes == ("median latency 5.0 ms over 10 requests",)


def test_a_flipped_prediction_is_named_by_its_image() -> None:
    flipped = EXPECTED.copy()
    flipped[1] = [1.5, 0.5]
    verdict = judge_smoke("m", "2", CASES, seen(flipped), max_latency_ms=50)
    assert not verdict.passed
    assert any("1 of 3 images predicted differently: ['h2']" in v for v in verdict.violations)


def test_logits_beyond_the_tolerance_fail_even_with_the_same_argmax() -> None:
    verdict = judge_smoke("m", "2", CASES, seen(EXPECTED + 1e-3), max_latency_ms=50)
    assert verdict.violations == ("served logits differ from the evaluation's by 0.001 > 0.0001",)


def test_every_violation_is_reported_at_once() -> None:
    verdict = judge_smoke("m", "2", CASES, seen(EXPECTED[:, :1], served="m/1", latency=80), 50)
    assert len(verdict.violations) == 3
    text = " ".join(verdict.violations)
    assert (
        "['m/1'], not 'm/2'" in text
        and "shape [3, 1]" in text
        and "80.0 ms is over the bound of 50 ms" in text
    )


def test_a_server_that_never_got_ready_fails() -> None:
    verdict = judge_smoke("m", "2", CASES, SmokeObservation(False, (), None, ()), 50)
    assert verdict.violations == (
        "the server never answered ready on /v2/health/ready",
        "no logits were served",
    )


def test_a_failed_request_is_the_violation() -> None:
    broken = SmokeObservation(True, ("m/2",), None, (3.0,), ("/v2/... answered 500: boom",))
    verdict = judge_smoke("m", "2", CASES, broken, 50)
    assert verdict.violations == ("/v2/... answered 500: boom",)


def test_the_infer_request_sends_one_image_and_asks_for_the_logits() -> None:
    body = infer_body(np.arange(48, dtype=np.float32).reshape(3, 4, 4))
    assert body["inputs"] == [
        {"name": "image", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": list(map(float, range(48)))}
    ]
    assert body["outputs"] == [{"name": "logits"}]
