"""``POST /v1/feedback``: outcomes known later, for requests the router answered. The body is one
object or a list of them, each ``{"request_id": ..., "true_label": ...}``,
``{"request_id": ..., "correct": true|false}`` or, for a detector's request, ``{"request_id": ...,
"true_boxes": [{"label", "x", "y", "width", "height"}, ...]}`` (pixels of the original image), checked
whole before anything is stored: 422 naming every problem, 404 naming unknown request ids, else 202 and
every row to the event sink."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Send

from loopline.rollout.asgi import json_bytes, read_body, respond, respond_error
from loopline.rollout.box_feedback import parse_boxes
from loopline.rollout.events import EventSink, Feedback
from loopline.rollout.router_metrics import RouterMetrics

logger = logging.getLogger(__name__)

KnownRequest = Callable[[str], bool]
MAX_BODY_BYTES = 1024 * 1024

MAX_ITEMS = 1000
MAX_ID_CHARS = 128
EXAMPLE = (
    'Send {"request_id": "<X-Request-Id of the answer>", "true_label": "cat"} or '
    '{"request_id": "...", "correct": true}, or for a detector {"request_id": "...", "true_boxes": '
    '[{"label": "cat", "x": 10, "y": 20, "width": 30, "height": 40}]}, or a list of those.'
)
OUTCOMES = ("true_label", "correct", "true_boxes")


class FeedbackInvalid(ValueError):
    """The body cannot be stored; ``problems`` names every one found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("Invalid feedback: " + "; ".join(problems) + ". " + EXAMPLE)
        self.problems = problems


def parse_feedback(body: bytes) -> list[Feedback]:
    """The feedback rows in ``body``.

    Raises:
        FeedbackInvalid: not JSON, not an object or a list of objects, or any item lacks a request id, has
            neither or both of ``true_label`` and ``correct``, a value of the wrong type, or unknown keys.
    """
    try:
        parsed: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedbackInvalid([f"the body is not JSON ({exc})"]) from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise FeedbackInvalid(["the list is empty"])
    if len(items) > MAX_ITEMS:
        raise FeedbackInvalid([f"{len(items)} items in one request; send at most {MAX_ITEMS}"])
    problems: list[str] = []
    rows: list[Feedback] = []
    for index, item in enumerate(items):
        where = f"item {index}" if isinstance(parsed, list) else "the body"
        row = _item(item, where, problems)
        if row is not None:
            rows.append(row)
    if problems:
        raise FeedbackInvalid(problems)
    return rows


def _item(item: Any, where: str, problems: list[str]) -> Feedback | None:
    if not isinstance(item, dict):
        problems.append(f"{where} is {type(item).__name__}, not an object")
        return None
    found = len(problems)
    unknown = sorted(set(item) - {"request_id", *OUTCOMES})
    if unknown:
        problems.append(f"{where} has unknown keys {unknown} (valid: request_id, {', '.join(OUTCOMES)})")
    request_id = item.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > MAX_ID_CHARS:
        problems.append(
            f"{where}: request_id must be a non-empty string of at most {MAX_ID_CHARS} characters, "
            f"not {request_id!r}"
        )
    true_label, correct = item.get("true_label"), item.get("correct")
    true_boxes = parse_boxes(item["true_boxes"], where, problems) if "true_boxes" in item else None
    if sum(key in item for key in OUTCOMES) != 1:
        problems.append(
            f"{where} must have exactly one of true_label and correct (or true_boxes, for a detector)"
        )
    elif "true_label" in item and (not isinstance(true_label, str) or not true_label.strip()):
        problems.append(f"{where}: true_label must be a non-empty string, not {true_label!r}")
    elif "correct" in item and not isinstance(correct, bool):
        problems.append(f"{where}: correct must be true or false, not {correct!r}")
    if len(problems) > found or not isinstance(request_id, str):
        return None
    return Feedback(request_id=request_id, true_label=true_label, correct=correct, true_boxes=true_boxes)


async def accept_feedback(
    receive: Receive, send: Send, known: KnownRequest | None, sink: EventSink, metrics: RouterMetrics
) -> None:
    """Answer one ``POST /v1/feedback``; ``known`` runs in a worker thread (it may query the event store)."""
    if known is None:
        await respond_error(
            send, 503, "Feedback is not accepted here: this router runs without an event store."
        )
        return
    body = await read_body(receive, MAX_BODY_BYTES)
    if body is None:
        await respond_error(send, 413, f"Feedback bodies are limited to {MAX_BODY_BYTES} bytes.")
        return
    try:
        rows = parse_feedback(body)
    except FeedbackInvalid as exc:
        metrics.feedback("invalid")
        await respond_error(send, 422, str(exc))
        return
    ids = list(dict.fromkeys(row.request_id for row in rows))
    try:
        unknown = await asyncio.to_thread(lambda: [i for i in ids if not known(i)])
    except Exception as exc:
        await respond_error(send, 503, f"Cannot check the request ids now ({exc}); retry later.")
        return
    if unknown:
        metrics.feedback("unknown")
        message = (
            f"Unknown request id(s) {unknown[:10]}: feedback is accepted for requests this router answered "
            "(their X-Request-Id); nothing was stored."
        )
        await respond(send, 404, json_bytes({"error": message, "unknown": unknown}))
        return
    for row in rows:
        try:
            sink.record_feedback(row)
        except Exception:  # the event store's trouble: counted, logged, not the client's
            metrics.events_dropped.inc()
            logger.exception("the event sink refused feedback for %s", row.request_id)
    metrics.feedback("accepted", len(rows))
    await respond(send, 202, json_bytes({"accepted": len(rows)}))
