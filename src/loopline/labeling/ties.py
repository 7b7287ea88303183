"""Tied images: who voted what, and whether one more annotator may break the tie (pure functions).

A tied task gets one more annotator in the same round, until ``cap`` annotators have looked at it
(skips count: a person who skipped has looked). What is still tied at the cap goes to a person.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TiedTask:
    content_hash: str
    task_id: int
    annotations: int  # every annotation on the task, skipped and empty ones included
    votes: dict[str, int]  # label → valid annotations giving it


def more_annotators(ties: Sequence[TiedTask], cap: int, asked: Mapping[int, int]) -> dict[int, int]:
    """Task id → the number of annotations to ask for: one more than each tied task has, up to ``cap``.

    ``asked`` holds what was asked before in this round: a task is never asked for the same number
    twice, so an ask nobody answered (a timeout) ends the tie-breaking instead of repeating it.
    """
    wanted = {}
    for tie in ties:
        more = tie.annotations + 1
        if more <= cap and more > asked.get(tie.task_id, 0):
            wanted[tie.task_id] = more
    return dict(sorted(wanted.items()))
