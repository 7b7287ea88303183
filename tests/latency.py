"""A check for the one latency fault a test can tell from a busy machine: the delayed-ACK stall."""

from __future__ import annotations

DELAYED_ACK_MS = 40.0  # Linux's delayed ACK: what each request waits when a side sends with Nagle on


def assert_no_delayed_ack_stall(timings_s: list[float]) -> None:
    """A response written in two segments with TCP_NODELAY off waits for the peer's delayed ACK on every
    request of a keep-alive connection, so even the fastest of them takes 40 ms. A loaded machine slows
    most requests but not all of them: the fastest stays well under it (a median does not)."""
    fastest_ms = min(timings_s) * 1000
    assert fastest_ms < DELAYED_ACK_MS * 0.75, (
        f"the fastest of {len(timings_s)} keep-alive requests took {fastest_ms:.1f} ms: "
        "a delayed-ACK stall (TCP_NODELAY off on a side)?"
    )
