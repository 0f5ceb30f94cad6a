"""--all-hosts: this host's sets and those of every registered host, asked in parallel, each
over its own connection (SSH for the remote ones) and each bounded, so one slow or unreachable
host is marked in the result instead of failing or holding up the command."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ptcopy.cli import _output as fmt
from ptcopy.cli import _views as views
from ptcopy.cli._errors import CliError, UsageProblem
from ptcopy.cli._output import Output
from ptcopy.cli._runner import CONNECT_TIMEOUT, Settings, open_client
from ptcopy.cli._snapshots import Inventory, SetInfo
from ptcopy.remote.targets import BadTarget, parse_target

LOCAL = "local"
CALL_TIMEOUT = 15.0   # seconds per call to a remote host (at most --timeout)
# the columns of `ptcopy list --json`, for each host's sets
LIST_KEYS = ("name", "object", "kind", "compact", "status", "copying", "direction",
             "difference_percent", "master", "master_device", "shadow", "shadow_device",
             "bitmap", "group", "overflow")


@dataclass
class HostView:
    """One host's answer: its inventory, or why it could not be had."""

    host: str                    # LOCAL or a registered name
    target: str                  # the SSH destination ('' for the local host)
    inventory: Inventory | None = None
    error: CliError | None = None

    @property
    def sets(self) -> list[SetInfo]:
        inv = self.inventory
        return sorted(inv.sets.values(), key=lambda x: x.name) if inv else []


async def _remote(s: Settings, name: str, target: str) -> HostView:
    bounded = dataclasses.replace(s, timeout=min(s.timeout, CALL_TIMEOUT))
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT + 5 + 2 * bounded.timeout):
            async with open_client(bounded, name, parse_target(target)) as c:
                return HostView(name, target, await c.inventory())
    except CliError as e:
        return HostView(name, target, error=e)
    except BadTarget as e:
        return HostView(name, target, error=CliError(f"host {name}: {e}"))
    except TimeoutError:
        return HostView(name, target, error=CliError(f"host {name} did not answer in time"))


async def every_host(s: Settings) -> list[HostView]:
    """The local host (its failure fails the command), then every registered host at once."""
    if s.host is not None:
        raise UsageProblem("--all-hosts asks this host and every host registered here; "
                           "it does not go with --host")
    async with open_client(s, None) as c:
        local = HostView(LOCAL, "", await c.inventory())
    assert local.inventory is not None
    hosts = sorted(local.inventory.hosts.values(), key=lambda h: h.name)
    remote = await asyncio.gather(*(_remote(s, h.name, h.target) for h in hosts))
    return [local, *remote]


def _error_json(e: CliError | None) -> dict[str, str] | None:
    return None if e is None else {"message": e.message, "hint": e.hint or ""}


def hosts_json(found: list[HostView], full: bool) -> list[dict[str, Any]]:
    """Per host: its sets (as `list --json`, or `status --json` when ``full``), or the
    error."""
    out = []
    for v in found:
        sets = None
        if v.inventory is not None:
            inv = v.inventory
            sets = [views.set_json(i, inv) if full else
                    {k: x for k, x in views.set_json(i, inv).items() if k in LIST_KEYS}
                    for i in v.sets]
        out.append({"host": v.host, "local": v.host == LOCAL, "target": v.target or None,
                    "reachable": v.error is None, "error": _error_json(v.error),
                    "sets": sets})
    return out


def _unreachable(v: HostView) -> Text:
    assert v.error is not None
    return Text(f"host {v.host}: unreachable: {v.error.message}", style="red")


def list_table(found: list[HostView]) -> Table:
    """One table of every host's sets, with a HOST column; a row marks a host that did not
    answer (the reasons follow the table)."""
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("HOST", "NAME", "KIND", "STATE", "COPY", "DIFFERS", "MASTER", "SHADOW"):
        t.add_column(col, overflow="fold")
    for v in found:
        if v.error is not None:
            t.add_row(v.host, "-", "-", Text("unreachable", style="red"), "-", "-", "-", "-")
            continue
        assert v.inventory is not None
        if not v.sets:
            t.add_row(v.host, "-", "-", Text("no sets", style="dim"), "-", "-", "-", "-")
        for s in v.sets:
            copy = f"to {s.direction} {fmt.percent(s.copy_percent)}" if s.copying else "-"
            kind = s.kind + ("/compact" if "compact" in s.flags else "")
            t.add_row(v.host, s.name, kind,
                      Text(s.status, style=views.STATUS_STYLE.get(s.status, "")), copy,
                      fmt.percent(s.difference_percent), s.master_device or s.master,
                      s.shadow_device or s.shadow)
    return t


def render_list(out: Output, found: list[HostView]) -> None:
    """`ptcopy list --all-hosts`."""
    human: list[RenderableType] = [list_table(found)]
    human += [_unreachable(v) for v in found if v.error is not None]
    out.result(hosts_json(found, full=False), human=human,
               quiet=[f"{v.host} {s.name}" for v in found for s in v.sets])


def render_status(out: Output, found: list[HostView]) -> None:
    """`ptcopy status --all-hosts`: each host's set panels under its name."""
    human: list[RenderableType] = []
    for v in found:
        if human:
            human.append("")
        human.append(Text(f"== host {v.host}" + (f" ({v.target})" if v.target else ""),
                          style="bold"))
        if v.error is not None:
            human.append(_unreachable(v))
            continue
        assert v.inventory is not None
        for i, info in enumerate(v.sets):
            if i:
                human.append("")
            human.append(views.set_panel(info, v.inventory))
        if not v.sets:
            human.append("no sets")
    out.result(hosts_json(found, full=True), human=human,
               quiet=[f"{v.host} {s.name} {s.status}" for v in found for s in v.sets]
               + [f"{v.host} unreachable" for v in found if v.error is not None])


def run_all(s: Settings, out: Output, full: bool) -> None:
    """Ask every host and render the answers (``full``: as status, else as list)."""
    found = asyncio.run(every_host(s))
    (render_status if full else render_list)(out, found)
