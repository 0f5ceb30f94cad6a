"""The lifetime of a C handle shared between threads: no call may run into its free."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ptcopy.engine.errors import Closed

__all__ = ["Lifetime"]


class Lifetime:
    """The lifetime of one C handle, shared by every thread that holds the Python object.

    The engine frees a set or overflow volume inside close, disable and delete, and its calls
    read the handle's memory: a status() from the daemon's event loop running into a disable on a
    worker thread was a use-after-free. So every call holds the handle through :meth:`use`, and
    :meth:`free` first turns new calls away (they raise :class:`Closed`), wakes the ones that may
    block for long (a wait on a copy), waits for those in flight to return, and only then lets
    the engine free the handle. The engine's own refusals (disable while copying, close of an
    overflow in use) happen before, through :meth:`use`, so :meth:`free` never has to undo.
    """

    def __init__(self, handle: Any, what: str) -> None:
        self._h: Any = handle
        self._what = what
        self._cv = threading.Condition(threading.Lock())
        self._users = 0
        self._closing = False

    @property
    def closed(self) -> bool:
        return self._h is None

    @contextlib.contextmanager
    def use(self) -> Iterator[Any]:
        with self._cv:
            if self._h is None or self._closing:
                raise Closed(f"the {self._what} is closed")
            self._users += 1
            h = self._h
        try:
            yield h
        finally:
            with self._cv:
                self._users -= 1
                if not self._users:
                    self._cv.notify_all()

    def free(self, wake: Callable[[Any], None] | None, fn: Callable[[Any], None]) -> bool:
        """Run ``fn(handle)``, which must free it, once no call is in flight. False (and
        nothing run) when the handle is already freed, or being freed by another thread, which
        this then waits for."""
        with self._cv:
            if self._h is None:
                return False
            if self._closing:
                while self._h is not None:
                    self._cv.wait()
                return False
            self._closing = True
            h = self._h
        if wake is not None:
            wake(h)   # still valid: nothing frees it but us
        with self._cv:
            while self._users:
                self._cv.wait()
        try:
            fn(h)
        finally:
            with self._cv:
                self._h = None
                self._closing = False
                self._cv.notify_all()
        return True
