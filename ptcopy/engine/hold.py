"""A group point in time held across calls (``pt_group_hold`` / ``pt_group_release``).

A coordinator that spans several hosts freezes every member first and only then takes the point
in time on each: :func:`group_hold` freezes writes to the sets' masters and returns a
:class:`Hold`; :meth:`Hold.release` takes the point in time (``commit``) or not, and thaws. The
engine thaws a hold nobody releases within its timeout by itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ptcopy.engine._ffi import ffi, lib, new_error
from ptcopy.engine.errors import InvalidArgument, check
from ptcopy.engine.types import Direction

if TYPE_CHECKING:
    from ptcopy.engine.sets import Set

__all__ = ["Hold", "group_hold"]

TIMEOUT_MAX = 600.0   # seconds: the engine's bound (600000 ms)


class Hold:
    """Writes to every member's master are frozen until :meth:`release` (or the timeout)."""

    def __init__(self, handle: Any, timeout: float) -> None:
        self._h: Any = handle
        self._lock = threading.Lock()
        self.timeout = timeout

    @property
    def released(self) -> bool:
        """Whether :meth:`release` ran (the handle is gone)."""
        return self._h is None

    def release(self, commit: bool) -> float:
        """Take the point in time (``commit``: the instant of the hold; copies start) or not
        (nothing changes), thaw, and end the hold. Returns how long writes were frozen, in
        seconds. Raises :class:`~ptcopy.engine.Timeout` when the engine had thawed the hold at
        its timeout already (nothing changed then), :class:`~ptcopy.engine.Closed` when a member
        was closed meanwhile, and what a failed commit failed with (nothing changed either)."""
        with self._lock:
            h, self._h = self._h, None
        if h is None:
            raise InvalidArgument("the hold was released already")
        frozen = ffi.new("uint64_t *")
        err = new_error()
        rc = lib.pt_group_release(h, int(commit), frozen, err)
        check(rc, err)
        return int(frozen[0]) / 1e9

    def __del__(self) -> None:
        # a hold dropped unreleased: thawed unchanged now rather than at its timeout
        if getattr(self, "_h", None) is not None:
            with contextlib.suppress(Exception):
                self.release(False)


def group_hold(sets: Sequence[Set], direction: Direction, *, full: bool = False,
               owner: int = 0, timeout: float = 10.0) -> Hold:
    """Freeze writes to every set's master, check that every set can take part (all or
    nothing, as ``Engine.group_copy``) and return with writes still frozen. ``timeout``
    (seconds, up to 600): the engine thaws the hold unchanged if it is not released by then."""
    if not sets:
        raise InvalidArgument("a group hold needs at least one set")
    if not 0 < timeout <= TIMEOUT_MAX:
        raise InvalidArgument(f"a hold's timeout is {timeout} s; it must be above 0 and at "
                              f"most {TIMEOUT_MAX:g}")
    out = ffi.new("pt_hold **")
    err = new_error()
    ms = max(1, int(timeout * 1000))
    with contextlib.ExitStack() as stack:
        arr = ffi.new("pt_set *[]", [stack.enter_context(s._use()) for s in sets])
        rc = lib.pt_group_hold(arr, len(sets), int(direction), int(full), owner, ms, out, err)
    check(rc, err)
    return Hold(out[0], timeout)
