"""Deterministic, stratified train/val/test splits.

Within each label, images are ordered by a seeded hash of their content hash and cut by the fractions,
so the same images always land in the same split, each split keeps the label proportions (within one
image per label), and adding images moves few existing ones: an image's place in the order never changes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class SplitFractions:
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        if self.val < 0 or self.test < 0 or self.val + self.test >= 1:
            raise ValueError(
                f"Split fractions val={self.val}, test={self.test} must be >= 0 and leave room for train "
                "(val + test < 1). Example: val=0.15, test=0.15."
            )


def _order_key(seed: int, content_hash: str) -> str:
    return hashlib.sha256(f"{seed}:{content_hash}".encode()).hexdigest()


def stratified_split(
    items: Iterable[tuple[str, str]], fractions: SplitFractions, seed: int = 0
) -> dict[str, Split]:
    """Assign each ``(content_hash, label)`` to a split; returns ``{content_hash: split}``.

    A label with fewer than three images goes wholly to train (nothing can be held out of it).
    """
    by_label: dict[str, list[str]] = defaultdict(list)
    for content_hash, label in items:
        by_label[label].append(content_hash)
    assignment: dict[str, Split] = {}
    for hashes in by_label.values():
        ordered = sorted(hashes, key=lambda h: _order_key(seed, h))
        n = len(ordered)
        n_test = round(n * fractions.test) if n >= 3 else 0
        n_val = round(n * fractions.val) if n >= 3 else 0
        if fractions.test > 0 and n >= 3:
            n_test = max(n_test, 1)
        if fractions.val > 0 and n >= 3:
            n_val = max(n_val, 1)
        n_val = min(n_val, n - n_test - 1)
        for i, content_hash in enumerate(ordered):
            assignment[content_hash] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment
