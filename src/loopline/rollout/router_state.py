"""The experiment state as the router follows it: read from the provider (in a worker thread, as it may
query a database), again once older than ``refresh_seconds``, the last good one kept when a read fails."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from loopline.rollout.events import ExperimentState
from loopline.rollout.router_metrics import RouterMetrics

logger = logging.getLogger(__name__)

StateProvider = Callable[[], ExperimentState | None]
SHARE_BY_STATUS = {"promoted": 1.0, "rolled_back": 0.0, "halted": 0.0, "stopped": 0.0}
STARTUP_READ_S = 10.0


def challenger_share(state: ExperimentState) -> float:
    """The share of users the challenger gets: its weight while the experiment runs or awaits approval,
    all of them once promoted, none once rolled back, halted or stopped."""
    return SHARE_BY_STATUS.get(state.status, min(max(state.weight, 0.0), 1.0))


class StateFollower:
    """The current ``ExperimentState`` and the challenger's share; ``on_change`` sees each new state."""

    def __init__(
        self,
        provider: StateProvider,
        refresh_seconds: float,
        metrics: RouterMetrics,
        on_change: Callable[[ExperimentState], None],
    ) -> None:
        self._provider, self._refresh_seconds = provider, refresh_seconds
        self._metrics, self._on_change = metrics, on_change
        self.state: ExperimentState | None = None
        self.share = 0.0
        self._attempted = -math.inf  # monotonic time of the last read
        self._task: asyncio.Task[None] | None = None

    async def current(self) -> ExperimentState | None:
        """The state, read again in the background once older than ``refresh_seconds``; while there is
        none yet, each call awaits a read (at most one a second)."""
        age = time.monotonic() - self._attempted
        if self.state is None and age >= min(1.0, self._refresh_seconds):
            await self.refresh()
        elif age >= self._refresh_seconds and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self.refresh())
        return self.state

    async def start(self) -> None:
        """The first read, bounded: a hanging provider must not keep the server from starting."""
        try:
            await asyncio.wait_for(self.refresh(), STARTUP_READ_S)
        except TimeoutError:
            logger.warning(
                "the experiment state did not come within %g s; retrying on requests", STARTUP_READ_S
            )
        if self.state is None:
            logger.warning("no experiment state yet: prediction routes answer 503 until there is one")

    async def refresh(self) -> None:
        self._attempted = time.monotonic()
        try:
            state = await asyncio.to_thread(self._provider)
        except Exception as exc:
            self._metrics.state_failures.inc()
            logger.warning("could not read the experiment state (%s); keeping the last one", exc)
            return
        finally:
            self._attempted = time.monotonic()
        if state is not None:
            self._apply(state)

    def _apply(self, state: ExperimentState) -> None:
        previous, self.state, self.share = self.state, state, challenger_share(state)
        self._metrics.set_state(state.weight, self.share)
        if previous is None or (previous.weight, previous.status) != (state.weight, state.status):
            logger.info(
                "experiment %s: %s, challenger weight %.4g, share %.4g",
                state.name,
                state.status,
                state.weight,
                self.share,
            )
        self._on_change(state)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
