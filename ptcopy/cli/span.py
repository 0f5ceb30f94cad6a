"""One point in time across hosts: the coordinator of a group that spans them.

Each member is a group on one host's ptcopyd, reached with the user's own rights. Two phases,
as a distributed commit: ``Hold`` on every host in parallel (each freezes writes to its
members and checks they can take part); only when every host holds does ``Release(commit=true)``
go to all of them, so every member is frozen before any point in time is taken. If a hold fails
or does not answer in time, every host that held is released with ``commit=false``: writes
thaw and every member keeps its previous point in time. A host that never hears back thaws by
itself at the hold's timeout (the daemon's watchdog), so the freeze is bounded even if this
process dies.

What no protocol can avoid: a Release(commit=true) that one host took and another never got
(the link cut between the two phases). The result then says exactly which hosts took the new
point in time, which did not, and which cannot be known (no answer), instead of pretending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ptcopy.cli._client import Client
from ptcopy.cli._contract import GROUP, NO_OBJECT
from ptcopy.cli._errors import ERROR_PREFIX, CliError, RemoteError

FREEZE_TIMEOUT_MAX = 30.0   # seconds: what ptcopyd accepts for a hold
GONE = ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner")


@dataclass
class HostOutcome:
    """What one host did. ``committed``: True (took the new point in time), False (did not:
    kept its previous one), None (unknown: its answer never came)."""

    host: str
    held: bool = False
    committed: bool | None = False
    job: str = NO_OBJECT
    frozen_usec: int = 0
    error: str = ""


@dataclass
class SpanResult:
    """The outcome of one point in time across hosts."""

    operation: str
    direction: str
    hosts: list[HostOutcome] = field(default_factory=list)
    window: float = 0.0   # seconds from the first Hold sent to the last Release answered

    @property
    def committed(self) -> list[str]:
        return [h.host for h in self.hosts if h.committed is True]

    @property
    def not_committed(self) -> list[str]:
        return [h.host for h in self.hosts if h.committed is False]

    @property
    def in_doubt(self) -> list[str]:
        return [h.host for h in self.hosts if h.committed is None]

    def as_json(self) -> dict[str, object]:
        return {"operation": self.operation, "direction": self.direction,
                "freeze_window_sec": round(self.window, 6),
                "hosts": [{"host": h.host, "held": h.held, "committed": h.committed,
                           "job": h.job, "frozen_usec": h.frozen_usec, "error": h.error}
                          for h in self.hosts]}


class SpanError(CliError):
    """The point in time was not taken on every host; ``result`` says what each host did."""

    def __init__(self, message: str, result: SpanResult, hint: str = "") -> None:
        super().__init__(message, hint)
        self.result = result


def _reason(e: BaseException) -> str:
    if isinstance(e, RemoteError | CliError):
        return e.message
    if isinstance(e, TimeoutError):
        return "no answer in time"
    return str(e) or type(e).__name__


def _answered(e: BaseException) -> bool:
    """Whether a failed Release says the host did not take the point in time: ptcopyd
    refused or failed it (nothing changes then), or no ptcopyd owns the name any more (a
    daemon that is gone took nothing). Anything else (no reply, a cut link) leaves it
    unknown."""
    if not isinstance(e, RemoteError):
        return False
    return e.error_name.startswith(ERROR_PREFIX) or e.error_name in GONE


async def _hold(client: Client, group: str, operation: str, direction: str, timeout: float,
                confirm: bool, limit: float) -> str:
    return await asyncio.wait_for(
        client.group_hold(group, operation, direction, timeout, confirm=confirm), limit)


async def span_point_in_time(members: Sequence[tuple[str, Client, str]], operation: str,
                             direction: str, freeze_timeout: float, *,
                             confirm: bool = False) -> SpanResult:
    """Take one point in time of the groups ``members`` (host label, a connected Client to
    that host's ptcopyd, the group's object path there): all hosts or none. ``operation``:
    'copy' or 'update'; ``direction``: 'shadow' or 'master' (``confirm`` for the masters);
    ``freeze_timeout``: the longest writers may stay frozen (seconds, at most 30); every host
    must hold within half of it (the other half is the commit's), or none takes the point in
    time. Returns every host's job and frozen time and the whole freeze window; raises
    SpanError (with the result) when not every host took it."""
    if not members:
        raise CliError("a group spanning hosts needs at least one member")
    if len({m[0] for m in members}) != len(members):
        raise CliError("a host is named twice among the members")
    if not 0 < freeze_timeout <= FREEZE_TIMEOUT_MAX:
        raise CliError(f"the freeze timeout is {freeze_timeout:g} s; it must be above 0 and at "
                       f"most {FREEZE_TIMEOUT_MAX:g}")
    result = SpanResult(operation, direction, [HostOutcome(m[0]) for m in members])
    t0 = time.monotonic()
    # Every host's watchdog runs out at t0 + freeze_timeout at the earliest. The commits go out
    # by half of it or not at all, so each has the other half to arrive before any host thaws
    # on its own: a host that held first must not time out while the last one is answering.
    commit_by = t0 + freeze_timeout / 2
    holds = await asyncio.gather(
        *(_hold(c, g, operation, direction, freeze_timeout, confirm, freeze_timeout / 2)
          for _, c, g in members),
        return_exceptions=True)
    tokens: list[str | None] = []
    silent: list[str] = []   # holds without an answer: maybe in place, thawed at the timeout
    for out, h in zip(result.hosts, holds, strict=True):
        if isinstance(h, BaseException):
            if not isinstance(h, Exception):
                raise h   # cancelled, interrupted: not a host's failure
            out.error = _reason(h)
            if not _answered(h):
                silent.append(out.host)
            tokens.append(None)
        else:
            out.held = True
            tokens.append(h)
    if all(t is not None for t in tokens):
        # every host answered its Hold; one that died since (its daemon, or the link) would
        # miss the commit the others take: ask each once more, just before committing. This
        # narrows the in-doubt window to the commit messages themselves.
        left = max(commit_by - time.monotonic(), 0.001)
        alive = await asyncio.gather(
            *(asyncio.wait_for(c.props(g, GROUP), left) for _, c, g in members),
            return_exceptions=True)
        for out, a in zip(result.hosts, alive, strict=True):
            if isinstance(a, BaseException):
                if not isinstance(a, Exception):
                    raise a
                out.held = False
                out.error = f"lost after its hold: {_reason(a)}"
                if not _answered(a):
                    silent.append(out.host)
    failed = [h for h in result.hosts if not h.held]
    late = not failed and time.monotonic() > commit_by
    commit = not failed and not late
    sent = [i for i, t in enumerate(tokens) if t is not None]
    releases = await asyncio.gather(
        *(members[i][1].group_release(members[i][2], str(tokens[i]), commit) for i in sent),
        return_exceptions=True)
    result.window = time.monotonic() - t0
    for i, r in zip(sent, releases, strict=True):
        out = result.hosts[i]
        if isinstance(r, BaseException):
            if not isinstance(r, Exception):
                raise r
            out.error = out.error or _reason(r)
            if not _answered(r) and out.host not in silent:
                silent.append(out.host)
            # a daemon that answered did not take it (nothing changes on a failed commit);
            # no answer: it took it or thawed unchanged at its timeout, nobody here can know
            out.committed = None if commit and not _answered(r) else False
        else:
            out.job, out.frozen_usec = r
            out.committed = commit
    if late:
        raise SpanError(f"no point in time was taken: the hosts took longer than "
                        f"{freeze_timeout / 2:g} s (half the freeze timeout) to hold, and a "
                        "commit sent then could race their timeouts; every host was released "
                        "unchanged", result, "a longer --freeze-timeout gives slow links room")
    if failed:
        why = "; ".join(f"{h.host}: {h.error}" for h in failed)
        raise SpanError(
            f"no point in time was taken: {why}. Every host that held was released unchanged"
            + (f"; a host that did not answer ({', '.join(silent)}) thaws by itself within "
               f"{freeze_timeout:g} s" if silent else ""), result)
    if result.not_committed or result.in_doubt:
        parts = [f"took the new point in time: {', '.join(result.committed) or 'none'}"]
        if result.not_committed:
            parts.append("kept the previous one: " + ", ".join(
                f"{h.host} ({h.error})" for h in result.hosts if h.committed is False))
        if result.in_doubt:
            parts.append("unknown (no answer; check with ptcopy status there): " + ", ".join(
                f"{h.host} ({h.error})" for h in result.hosts if h.committed is None))
        raise SpanError("the point in time is not the same on every host: " + "; ".join(parts),
                        result, "update the group again to bring every host to one point in "
                                "time")
    return result
