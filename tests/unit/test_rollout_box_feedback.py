"""The A/B primary metric for detectors: the router keeps a detector answer's boxes, feedback brings the true
boxes (checked, every problem named), and each request counts its IoU-matched F1 in its arm, in memory
(``summarize``) and in the event store (``arm_summaries``, SQLite; an older store gains the columns)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from loopline.data.labeled import PixelBox
from loopline.rollout.box_feedback import box_f1
from loopline.rollout.events import ExperimentState, Feedback, RoutedRequest
from loopline.rollout.feedback import FeedbackInvalid, parse_feedback
from loopline.rollout.router import RouterSettings, create_router
from loopline.rollout.stats import summarize
from loopline.rollout.store import EventStore, sqlite_url
from tests.unit.test_rollout_router import FakeModelServer, MemorySink

pytestmark = pytest.mark.unit

CAT = PixelBox("cat", 10, 10, 20, 20)
DOG = PixelBox("dog", 50, 40, 30, 30)


def test_box_f1_matches_boxes_by_iou_and_label() -> None:
    assert box_f1([CAT, DOG], [CAT, DOG]) == 1.0
    assert box_f1([CAT], [CAT, DOG]) == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert box_f1([PixelBox("dog", 10, 10, 20, 20)], [CAT]) == 0.0  # right place, wrong label
    assert box_f1([PixelBox("cat", 20, 20, 20, 20)], [CAT]) == 0.0  # IoU 1/7 < 0.5
    assert box_f1([], []) == 1.0  # a negative image answered right
    assert box_f1([CAT], []) == 0.0


def test_feedback_with_true_boxes_is_parsed_and_bad_boxes_are_named() -> None:
    body = {"request_id": "r1", "true_boxes": [{"label": "cat", "x": 10, "y": 10, "width": 20, "height": 20}]}
    (row,) = parse_feedback(json.dumps([body, {"request_id": "r2", "true_boxes": []}]).encode())[:1]
    assert row == Feedback("r1", true_boxes=(CAT,), at=row.at)
    assert parse_feedback(json.dumps({"request_id": "r2", "true_boxes": []}).encode())[0].true_boxes == ()
    bad = [
        {"request_id": "a", "true_boxes": {"label": "cat"}},
        {"request_id": "b", "true_boxes": [{"label": "", "x": 0, "y": 0, "width": 1, "height": 1}]},
        {"request_id": "c", "true_boxes": [{"label": "cat", "x": -1, "y": 0, "width": 0, "height": 1}]},
        {"request_id": "d", "true_boxes": [{"label": "cat", "x": 0, "y": 0, "width": "1", "height": 1}]},
        {"request_id": "e", "true_boxes": [], "true_label": "cat"},
    ]
    with pytest.raises(FeedbackInvalid) as caught:
        parse_feedback(json.dumps(bad).encode())
    problems = caught.value.problems
    assert len(problems) == 5
    assert "item 0: true_boxes must be a list" in problems[0]
    assert "item 1: box 0: label must be a non-empty string" in problems[1]
    assert "item 2: box 0: x and y must be >= 0 and width and height > 0" in problems[2]
    assert "item 3: box 0: x, y, width and height must be finite numbers" in problems[3]
    assert "item 4 must have exactly one of" in problems[4]


def request(
    request_id: str, variant: str, boxes: tuple[PixelBox, ...] | None, label: str | None = None
) -> RoutedRequest:
    return RoutedRequest(
        request_id,
        "exp",
        variant,
        "1",
        f"u{request_id}",
        5.0,
        200,
        label,
        None,
        predicted_boxes=boxes,  # type: ignore[arg-type]
    )


ROWS = [
    request("1", "champion", (CAT, DOG)),
    request("2", "champion", (CAT,)),
    request("3", "challenger", ()),
    request("4", "challenger", (DOG,)),
    request("5", "challenger", None, label="cat"),  # a classifier's answer in the same arm
]
FEEDBACK = [
    Feedback("1", true_boxes=(CAT, DOG)),  # F1 1
    Feedback("2", true_boxes=(CAT, DOG)),  # F1 2/3
    Feedback("3", true_boxes=()),  # F1 1: nothing there, nothing answered
    Feedback("4", true_boxes=(CAT,)),  # F1 0
    Feedback("5", true_label="cat"),  # right: 1
]


def test_summaries_count_each_detector_request_by_its_box_f1() -> None:
    arms = summarize(ROWS, FEEDBACK)
    assert (arms["champion"].feedback, arms["champion"].correct) == (2, pytest.approx(1 + 2 / 3))
    assert (arms["challenger"].feedback, arms["challenger"].correct) == (3, pytest.approx(2.0))


def test_the_event_store_keeps_boxes_and_sums_box_f1_per_arm(tmp_path: Path) -> None:
    store = EventStore(sqlite_url(tmp_path / "events.db"))
    store.insert_requests(ROWS)
    store.insert_feedback(FEEDBACK)
    arms = store.arm_summaries("exp")
    assert (arms["champion"].feedback, arms["champion"].correct) == (2, pytest.approx(1 + 2 / 3))
    assert (arms["challenger"].feedback, arms["challenger"].correct) == (3, pytest.approx(2.0))
    stored = store.get_request("1")
    assert stored is not None and stored.predicted_boxes == (CAT, DOG)
    assert store.get_request("5").predicted_boxes is None  # type: ignore[union-attr]
    store.close()


def test_a_store_made_before_box_columns_gains_them(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    EventStore(sqlite_url(path)).close()
    with sqlite3.connect(path) as old:  # the schema as it was: no box columns
        old.execute("ALTER TABLE requests DROP COLUMN predicted_boxes")
        old.execute("ALTER TABLE feedback DROP COLUMN true_boxes")
    store = EventStore(sqlite_url(path))
    store.insert_requests(ROWS[:1])
    store.insert_feedback(FEEDBACK[:1])
    assert store.arm_summaries("exp")["champion"].correct == 1.0
    store.close()


@dataclass
class FakeDetectorServer(FakeModelServer):
    """Answers /v1/predict as the model server does for a detector."""

    def _answer(self) -> bytes:
        box = {"label": "cat", "score": 0.9, "x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0}
        body = json.dumps(
            {"model": "m", "version": self.version, "task_type": "detection", "image": {}, "boxes": [box]}
        ).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-model-version: m/{self.version}\r\n"
        return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


def test_the_router_records_a_detector_answers_boxes() -> None:
    async def body() -> RoutedRequest:
        server = await FakeDetectorServer("1").start()
        state = ExperimentState("exp", "m", "1", "2", server.url, server.url, "seed", 0.0, 0, "running")
        sink = MemorySink()
        router = create_router(RouterSettings(), lambda: state, sink, None)
        try:
            transport = httpx.ASGITransport(app=router)
            async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
                answer = await client.post("/v1/predict", content=b"\x89PNG fake", headers={"X-User-Id": "u"})
            assert answer.status_code == 200
        finally:
            await router.aclose()
            await server.stop()
        (row,) = sink.requests
        return row

    row = asyncio.run(asyncio.wait_for(body(), timeout=30))
    assert row.predicted_boxes == (CAT,) and row.predicted_label is None
