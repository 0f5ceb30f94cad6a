"""The steps every set, group and overflow method takes: refuse unknown options, check the
caller may act, then hand the work to the Service in a worker thread (so the bus loop never
waits on the engine)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ptcopy.daemon import options as opt
from ptcopy.daemon.dbus.args import CONFIRM, NO_OPTS, Options
from ptcopy.daemon.dbus.bus import caller
from ptcopy.daemon.dbus.context import Context
from ptcopy.daemon.errors import invalid
from ptcopy.daemon.service import Service

T = TypeVar("T")


async def authorized(ctx: Context, options: Options, action: str,
                     work: Callable[..., T], *args: Any) -> T:
    """Refuse any option, check the caller may `action`, run work(*args) in a worker thread."""
    opt.parse(options, NO_OPTS)
    await ctx.auth.check(action)
    return await asyncio.to_thread(work, *args)


async def copy(ctx: Context, service: Service, ids: Sequence[str], direction: str,
               options: Options, full: bool, action: str,
               empty: Callable[[], str] = str) -> int:
    """Validate and start a copy or update of the sets ids (all or nothing); returns the
    caller's uid for the job. An empty ids is refused with the message empty() builds."""
    o = opt.parse(options, CONFIRM)
    opt.direction(direction)
    if not ids:
        raise invalid(empty())
    uid = await ctx.auth.check(action)
    await asyncio.to_thread(service.copy, ids, direction, full,
                            bool(o.get("confirm", False)), caller.get())
    return uid
