"""Deterministic, stratified train/val/test splits.

Within each label, images are ordered by a seeded hash of their content hash and cut by the fractions,
so the same images always land in the same split, each split keeps the label proportions (within one
image per label), and adding images moves few existing ones: an image's place in the order never changes.

Training data comes first: every label keeps at least one image in train (a label with one or two images
goes wholly to train; nothing can be held out of it), and fractions that leave no room for train
(``val + test >= 1``) are refused when ``SplitFractions`` is built.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "val", "test"]

MIN_TO_HOLD_OUT = 3  # a label needs this many images before any goes to val or test


class SplitFractionsError(ValueError):
    """Split fractions that are negative or leave nothing for train (a ValueError, so pydantic
    validators built on ``check_split_fractions`` report it as a field error)."""


def check_split_fractions(val: float, test: float) -> None:
    """Raise ``SplitFractionsError`` unless ``val`` and ``test`` are >= 0 and leave room for train."""
    if val < 0 or test < 0 or val + test >= 1:
        raise SplitFractionsError(
            f"Split fractions val={val}, test={test} must each be >= 0 and leave room for train "
            f"(val + test < 1; here {val + test:g}). To fix this, lower one of them. "
            "Example: val=0.15, test=0.15."
        )


@dataclass(frozen=True)
class SplitFractions:
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        check_split_fractions(self.val, self.test)


def _order_key(seed: int, content_hash: str) -> str:
    return hashlib.sha256(f"{seed}:{content_hash}".encode()).hexdigest()


def held_out_counts(n: int, fractions: SplitFractions) -> tuple[int, int]:
    """How many of a label's ``n`` images go to (val, test): the rounded fractions, at least one each
    when the fraction is positive and the label has ``MIN_TO_HOLD_OUT`` images, never all of them (val
    gives way first, then test, until train keeps one)."""
    if n < MIN_TO_HOLD_OUT:
        return 0, 0
    n_val = max(round(n * fractions.val), 1 if fractions.val > 0 else 0)
    n_test = max(round(n * fractions.test), 1 if fractions.test > 0 else 0)
    excess = n_val + n_test - (n - 1)
    if excess > 0:
        cut = min(excess, n_val)
        n_val, excess = n_val - cut, excess - cut
        n_test -= excess
    return n_val, n_test


def stratified_split(
    items: Iterable[tuple[str, str]], fractions: SplitFractions, seed: int = 0
) -> dict[str, Split]:
    """Assign each ``(content_hash, label)`` to a split; returns ``{content_hash: split}``.

    Every label keeps at least one image in train; see ``held_out_counts``.
    """
    by_label: dict[str, list[str]] = defaultdict(list)
    for content_hash, label in items:
        by_label[label].append(content_hash)
    assignment: dict[str, Split] = {}
    for hashes in by_label.values():
        ordered = sorted(hashes, key=lambda h: _order_key(seed, h))
        n_val, n_test = held_out_counts(len(ordered), fractions)
        for i, content_hash in enumerate(ordered):
            assignment[content_hash] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment
