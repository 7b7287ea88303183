"""The demo traffic client: fresh images of known digits, a steady open-loop rate, user ids from a fixed
population, and feedback with the true label for a share of the answers, after a delay."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loopline.data.demo import png_bytes, render_digit
from loopline.rollout.demo_traffic import DemoImages, DemoScenes, send_traffic

pytestmark = pytest.mark.unit


def test_demo_images_are_new_known_digits_and_reproducible() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rendered = {hashlib.sha256(png_bytes(render_digit(img, 32))).hexdigest() for img in digits.images}
    first, again = DemoImages(seed=3), DemoImages(seed=3)
    pairs = [first.next() for _ in range(50)]
    assert pairs == [again.next() for _ in range(50)]  # the same seed, the same stream
    assert not {hashlib.sha256(body).hexdigest() for body, _ in pairs} & rendered  # never the demo's files
    assert {label for _, label in pairs} <= {str(d) for d in range(10)}
    image = Image.open(io.BytesIO(pairs[0][0]))
    assert image.size == (32, 32) and np.asarray(image).min() < 128  # ink on it


@pytest.fixture
def router() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for the router's API: answers /v1/predict with a request id and variant, takes
    feedback (the router itself is tested elsewhere)."""
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                if self.path == "/v1/predict":
                    seen.append({"kind": "predict", "user": self.headers["X-User-Id"], "bytes": len(body)})
                    number = len([s for s in seen if s["kind"] == "predict"])
                else:
                    seen.append({"kind": "feedback", **json.loads(body)})
            answer = b"{}"
            self.send_response(200)
            if self.path == "/v1/predict":
                self.send_header("X-Request-Id", f"r{number}")
                self.send_header("X-Variant", "champion" if number % 2 else "challenger")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()


def test_traffic_keeps_its_rate_users_and_feedback_share(router: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = router
    stats = asyncio.run(
        send_traffic(url, seconds=2.0, rate=40, users=5, feedback_share=0.5, feedback_delay=0.2)
    )
    predicts = [s for s in seen if s["kind"] == "predict"]
    feedback = [s for s in seen if s["kind"] == "feedback"]
    assert 70 <= stats.sent == len(predicts) <= 81  # 40 a second for 2 s (open loop)
    assert {p["user"] for p in predicts} <= {f"user-{i}" for i in range(5)}
    assert stats.answered[200] == len(predicts) and set(stats.variants) == {"champion", "challenger"}
    assert stats.feedback_sent == len(feedback) and 0.3 * len(predicts) < len(feedback) < 0.7 * len(predicts)
    assert all(f["request_id"].startswith("r") and f["true_label"] in "0123456789" for f in feedback)
    assert "feedback rows" in stats.summary()


def test_detector_traffic_sends_new_scenes_and_their_true_boxes(
    router: tuple[str, list[dict[str, Any]]],
) -> None:
    scenes = [DemoScenes(seed=3).next() for _ in range(1)] + [DemoScenes(seed=4).next()]
    assert scenes[0][0] != scenes[1][0]
    for body, boxes in scenes:
        width, height = Image.open(io.BytesIO(body)).size
        for box in boxes:
            assert 0 <= box["x"] and box["x"] + box["width"] <= width
            assert 0 <= box["y"] and box["y"] + box["height"] <= height
            assert box["label"] in {str(d) for d in range(10)}
    url, seen = router
    stats = asyncio.run(
        send_traffic(
            url, seconds=1.0, rate=20, feedback_share=1.0, feedback_delay=0.1, images=DemoScenes(seed=5)
        )
    )
    feedback = [s for s in seen if s["kind"] == "feedback"]
    assert stats.feedback_sent == len(feedback) > 0
    assert all("true_boxes" in f and "true_label" not in f for f in feedback)
    assert any(f["true_boxes"] for f in feedback)  # scenes with digits, and their boxes
