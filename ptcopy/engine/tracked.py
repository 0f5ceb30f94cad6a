"""The base of the objects an :class:`~ptcopy.engine.owner.Engine` tracks (sets, overflow
volumes): a C handle behind a :class:`~ptcopy.engine.lifetime.Lifetime`, closed with the
engine."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ptcopy.engine.lifetime import Lifetime

if TYPE_CHECKING:
    from ptcopy.engine.owner import Engine


class Tracked:
    """An object the engine tracks (closed with it), behind a Lifetime: calls hold it open."""

    def __init__(self, engine: Engine, handle: Any, what: str) -> None:
        self._engine = engine
        self._life = Lifetime(handle, what)
        engine._track(self)

    def _use(self) -> contextlib.AbstractContextManager[Any]:
        return self._life.use()

    @property
    def closed(self) -> bool:
        """Whether the object was closed (or its engine was)."""
        return self._life.closed

    def close(self) -> None:
        """Release the engine's handle (sets and overflow volumes say how)."""
        raise NotImplementedError
