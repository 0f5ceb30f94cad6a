"""Work the event loop runs beside the calls it answers: every task is kept (so none is
collected half way), a failure is logged (never lost silently), and all are cancelled at stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)


class Background:
    """The daemon's background tasks."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run work off the loop's path; a failure is logged."""
        fut = asyncio.ensure_future(work)
        self._tasks.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self._tasks.discard(f)
            if not f.cancelled() and f.exception() is not None:
                log.error("background work failed: %s", f.exception(),
                          exc_info=f.exception())
        fut.add_done_callback(done)

    def cancel_all(self) -> None:
        """At stop: cancel what still runs (jobs: the copies themselves suspend when the sets
        close)."""
        for task in list(self._tasks):
            task.cancel()
