"""The one place where failures become named D-Bus errors, and the count of calls in flight
that lets a stopping daemon answer them before it leaves the bus."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from dbus_fast import DBusError

from ptcopy.daemon.errors import ServiceError
from ptcopy.datapath import blockdev as loopdev
from ptcopy.engine import PtcopyError
from ptcopy.errnames import PREFIX, ErrorName

log = logging.getLogger(__name__)


def to_dbus(e: BaseException) -> DBusError:
    """Translate any failure into a named D-Bus error a person can act on."""
    if isinstance(e, DBusError):
        return e
    if isinstance(e, ServiceError | PtcopyError):
        return DBusError(PREFIX + e.name, e.message)
    if isinstance(e, loopdev.LoopError):
        return DBusError(ErrorName.DATA_PATH.dbus, str(e))
    if isinstance(e, OSError):
        what = f"{e.filename}: " if e.filename else ""
        return DBusError(ErrorName.FAILED.dbus, f"{what}{e.strerror or e}")
    log.exception("unexpected failure", exc_info=e)
    return DBusError(ErrorName.FAILED.dbus,
                     f"internal error ({type(e).__name__}); the daemon log has the details")


P = ParamSpec("P")
R = TypeVar("R")


class Calls:
    """Method calls in flight, so a stopping daemon answers them before it leaves the bus."""

    def __init__(self) -> None:
        self.active = 0
        self.stopping = asyncio.Event()

    def check_open(self) -> None:
        """Refuse a call (Busy) once the daemon is stopping."""
        if self.stopping.is_set():
            raise DBusError(ErrorName.BUSY.dbus,
                            "ptcopyd is stopping; call again once it is back")

    async def drain(self, timeout: float) -> None:
        """Refuse new calls and wait (at most timeout seconds) for those in flight."""
        self.stopping.set()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.active and loop.time() < end:
            await asyncio.sleep(0.05)


CALLS = Calls()


def translated(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Method decorator: every failure leaves as a named D-Bus error; the daemon keeps going."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        CALLS.check_open()
        CALLS.active += 1
        try:
            return await fn(*args, **kwargs)
        except Exception as e:  # the boundary: nothing escapes unnamed
            raise to_dbus(e) from e
        finally:
            CALLS.active -= 1

    return wrapper

