"""Retry conditions shared by the I/O tasks."""

from __future__ import annotations

from typing import Any

from loopline.data.s3 import is_transient
from loopline.errors import LabelStudioUnavailable


def retry_on_transient_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only when the failure was transient I/O (connection, throttling, 5xx), never a bad input."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc) or isinstance(exc, LabelStudioUnavailable)
    return False


# Every I/O task retries the same way: three more tries with back-off, only on transient failures.
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": retry_on_transient_io,
}
