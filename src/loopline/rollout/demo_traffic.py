"""DEMO TRAFFIC CLIENT: stands in for an application's users in front of the A/B router (not for real data).

It sends digit images the models never trained on — scikit-learn's digits rendered as the demo renders
them, then shifted and rotated a little at random, so every image is new (its own content hash) while its
true digit is known — from a fixed population of user ids (``X-User-Id``), at a steady request rate, to
``POST /v1/predict``. For a share of the answers it posts the true label to ``POST /v1/feedback`` after a
delay, as an application would once the user confirmed or corrected the answer. For a detector
(``DemoScenes``): new scenes of digits drawn like the detection demo's, and their true boxes as feedback.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
from PIL import Image

from loopline.data.demo import png_bytes, render_digit


@dataclass
class TrafficStats:
    """What the demo client saw."""

    sent: int = 0
    answered: Counter[int] = field(default_factory=Counter)  # HTTP status → count
    variants: Counter[str] = field(default_factory=Counter)  # X-Variant → count
    feedback_sent: int = 0
    feedback_refused: int = 0
    transport_errors: int = 0

    def summary(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.answered.items()))
        arms = ", ".join(f"{v}: {n}" for v, n in sorted(self.variants.items()))
        return (
            f"{self.sent} requests ({statuses or 'none answered'}; {arms or 'no variant header'}), "
            f"{self.feedback_sent} feedback rows ({self.feedback_refused} refused), "
            f"{self.transport_errors} transport errors"
        )


class TrafficImages(Protocol):
    def next(self) -> tuple[bytes, Any]:
        """(PNG bytes, the truth: a label, or a detector's list of box dicts)."""
        ...


class DemoImages:
    """Fresh images of known digits: a digit rendered at ``size``, shifted by up to ``shift`` pixels and
    rotated by up to ``degrees``, from a seeded generator (the same seed, the same stream)."""

    def __init__(self, size: int = 32, shift: int = 1, degrees: float = 6.0, seed: int = 7) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images, self.targets = digits.images, digits.target
        self.size, self.shift, self.degrees = size, shift, degrees
        self.rng = np.random.default_rng(seed)

    def next(self) -> tuple[bytes, str]:
        """(PNG bytes, true label)."""
        index = int(self.rng.integers(len(self.targets)))
        picture = render_digit(self.images[index], self.size)
        angle = float(self.rng.uniform(-self.degrees, self.degrees))
        dx, dy = (int(v) for v in self.rng.integers(-self.shift, self.shift + 1, size=2))
        moved = picture.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy), fillcolor=255)
        return png_bytes(moved), str(int(self.targets[index]))


class DemoScenes:
    """Fresh scenes of known digits for a detector, drawn as ``loopline demo-data --task-type detection``
    draws them (from another seed: new images): PNG bytes and the true boxes in pixels."""

    def __init__(self, seed: int = 7) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.images, self.targets = digits.images, digits.target
        self.rng = np.random.default_rng(seed)

    def next(self) -> tuple[bytes, list[dict[str, Any]]]:
        from loopline.data.demo_boxes import CANVAS, DIGIT, render_scene

        picture, scene = render_scene(self.rng, self.images, self.targets, CANVAS, DIGIT)
        return png_bytes(picture), [asdict(box) for box in scene.boxes]


async def send_traffic(
    url: str,
    seconds: float,
    rate: float = 20.0,
    users: int = 200,
    feedback_share: float = 0.6,
    feedback_delay: float = 2.0,
    seed: int = 7,
    images: TrafficImages | None = None,
    stop: threading.Event | None = None,
) -> TrafficStats:
    """Send ``rate`` requests a second for ``seconds`` (or until ``stop`` is set) to the router at ``url``
    (open loop: a slow answer does not slow the sender), with feedback for ``feedback_share`` of the
    answers."""
    source = images or DemoImages(seed=seed)
    chooser = random.Random(seed)
    stats = TrafficStats()
    pending: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=10.0, limits=limits) as client:

        async def feedback(request_id: str, truth: Any) -> None:
            await asyncio.sleep(feedback_delay)
            outcome = {"true_boxes": truth} if isinstance(truth, list) else {"true_label": truth}
            try:
                answer = await client.post("/v1/feedback", json={"request_id": request_id, **outcome})
            except httpx.HTTPError:
                stats.transport_errors += 1
                return
            if answer.status_code < 300:
                stats.feedback_sent += 1
            else:
                stats.feedback_refused += 1

        async def one(body: bytes, label: Any, user: str) -> None:
            try:
                answer = await client.post(
                    "/v1/predict", content=body, headers={"Content-Type": "image/png", "X-User-Id": user}
                )
            except httpx.HTTPError:
                stats.transport_errors += 1
                return
            stats.answered[answer.status_code] += 1
            stats.variants[answer.headers.get("X-Variant", "?")] += 1
            request_id = answer.headers.get("X-Request-Id")
            if answer.status_code == 200 and request_id and chooser.random() < feedback_share:
                spawn(feedback(request_id, label))

        def spawn(coroutine: Coroutine[None, None, None]) -> None:
            task = asyncio.ensure_future(coroutine)
            pending.add(task)
            task.add_done_callback(pending.discard)

        start = time.monotonic()
        while time.monotonic() - start < seconds and not (stop is not None and stop.is_set()):
            due = start + stats.sent / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            body, label = source.next()
            spawn(one(body, label, f"user-{chooser.randrange(users)}"))
            stats.sent += 1
        if pending:
            await asyncio.wait(pending, timeout=feedback_delay + 15)
    return stats
