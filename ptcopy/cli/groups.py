"""ptcopy group ...: sets that copy and update at one point in time, on this host or on
several (a group that spans hosts has the same name on each; see ptcopy/cli/span.py)."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from ptcopy.cli import _views as views
from ptcopy.cli._client import Client
from ptcopy.cli._contract import GROUP, NO_OBJECT
from ptcopy.cli._errors import CliError, NotFoundError, UsageProblem
from ptcopy.cli._output import Output
from ptcopy.cli._params import (
    Direction,
    DirectionOpt,
    GroupArg,
    JsonOpt,
    QuietOpt,
    SetsArg,
    WaitOpt,
    YesOpt,
)
from ptcopy.cli._runner import (
    confirm_master_write,
    follow,
    open_client,
    output,
    run,
    settings,
    wants_wait,
)
from ptcopy.cli._snapshots import GroupInfo
from ptcopy.cli.sets import NAME_RE, progress_visible, start_and_follow
from ptcopy.cli.span import FREEZE_TIMEOUT_MAX, span_point_in_time

app = typer.Typer(help="Groups: sets that copy and update at one point in time, all or "
                       "nothing.", no_args_is_help=True, rich_markup_mode="markdown")

NewNameArg = Annotated[str, typer.Argument(..., metavar="NAME", show_default=False,
                                           help="The group's name.")]


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UsageProblem(f"{name!r} is not a valid group name",
                           "use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                           "letter or digit")


SpansOpt = Annotated[list[str] | None, typer.Option(
    "--spans", metavar="HOST", show_default=False,
    help="Another host the group spans (repeat for each): a group of the same name there is "
         "taken at the same point in time.")]
FreezeOpt = Annotated[float, typer.Option(
    "--freeze-timeout", metavar="SECONDS", min=0.1, max=FREEZE_TIMEOUT_MAX,
    help="For a group that spans hosts: the longest writes may stay frozen waiting for every "
         "host; past it every host thaws unchanged.")]


@app.command()
def create(ctx: typer.Context, name: NewNameArg,
           sets: Annotated[list[str] | None, typer.Argument(...,
               metavar="[SET]...", show_default=False,
               help="Sets to put in it (by name or shadow path).")] = None,
           *, spans: SpansOpt = None, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Create a group, optionally with sets in it (and spanning other hosts)."""
    _check_name(name)
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        paths = [await c.resolve(n, "set") for n in sets or []]
        path = await c.create_group(name, paths, spans or [])
        inv = await c.inventory()
        g = inv.groups.get(path) or await c.group_info(path)
        out.result(views.group_json(g, inv), human=f"created group {name} with "
                   f"{len(g.sets)} set(s)", quiet=[name])

    run(ctx, body)


@app.command()
def add(ctx: typer.Context, group: GroupArg, sets: SetsArg, *,
        create: Annotated[bool, typer.Option(
            "--create", help="Create the group if there is none of that name (as iiadm -g).")]
        = False,
        json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Add sets to a group (a set is in one group at most)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        paths = [await c.resolve(n, "set") for n in sets]
        try:
            gpath = await c.resolve(group, "group")
        except NotFoundError:
            if not create:
                raise
            _check_name(group)
            gpath = await c.create_group(group, [])
            out.say(f"created group {group}")
        for p in paths:
            await c.simple(gpath, GROUP, "AddSet", p)
        inv = await c.inventory()
        g = inv.groups[gpath] if gpath in inv.groups else await c.group_info(gpath)
        out.result(views.group_json(g, inv),
                   human=f"group {g.name}: " + ", ".join(str(inv.name_of(p)) for p in g.sets),
                   quiet=[g.name])

    run(ctx, body)


@app.command()
def remove(ctx: typer.Context,
           group: Annotated[str, typer.Argument(...,
               metavar="GROUP", show_default=False,
               help="The group; '' takes each set out of whatever group it is in "
                    "(as iiadm -g \"\" -m).")],
           sets: SetsArg, *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Take sets out of a group (the sets stay)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        gpath = await c.resolve(group, "group") if group else ""
        removed = []
        for name in sets:
            spath = await c.resolve(name, "set")
            info = await c.set_info(spath)
            target = gpath or info.group
            if target == NO_OBJECT:
                raise CliError(f"set {info.name} is not in a group")
            await c.simple(target, GROUP, "RemoveSet", spath)
            removed.append(info.name)
            out.say(f"set {info.name} left its group")
        out.result({"removed": removed}, quiet=removed)

    run(ctx, body)


@app.command()
def rename(ctx: typer.Context, group: GroupArg, new_name: NewNameArg, *,
           json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Give a group another name."""
    _check_name(new_name)
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        gpath = await c.resolve(group, "group")
        await c.simple(gpath, GROUP, "Rename", new_name)
        out.result({"name": new_name, "object": gpath},
                   human=f"group {group} is now {new_name}", quiet=[new_name])

    run(ctx, body)


@app.command()
def delete(ctx: typer.Context,
           groups: Annotated[list[str], typer.Argument(..., metavar="GROUP...", show_default=False,
                                                       help="Groups, by name.")],
           *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Delete groups; their sets stay, without a group."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        for name in groups:
            gpath = await c.resolve(name, "group")
            await c.simple(gpath, GROUP, "Delete")
            out.say(f"deleted group {name}; its sets stay")
        out.result({"deleted": groups}, quiet=groups)

    run(ctx, body)


@app.command(name="list")
def list_(ctx: typer.Context,
          groups: Annotated[list[str] | None, typer.Argument(...,
              metavar="[GROUP]...", show_default=False,
              help="Groups to show (default: all).")] = None,
          *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List groups and their sets."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        paths = [await c.resolve(n, "group") for n in groups or []]
        inv = await c.inventory()
        chosen = views.chosen(inv.groups, paths, lambda g: g.name)
        human = views.groups_table(chosen, inv) if chosen else \
            "no groups (ptcopy group create makes one)"
        out.result([views.group_json(g, inv) for g in chosen], human=human,
                   quiet=[g.name for g in chosen])

    run(ctx, body)


@app.command()
def spans(ctx: typer.Context, group: GroupArg,
          hosts: Annotated[list[str] | None, typer.Argument(
              ..., metavar="[HOST]...", show_default=False,
              help="The other hosts the group spans (none: this host only).")] = None,
          *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Set the other hosts a group spans (each needs a group of the same name)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        gpath = await c.resolve(group, "group")
        await c.group_set_hosts(gpath, hosts or [])
        out.result({"group": group, "hosts": hosts or []},
                   human=f"group {group} spans " + (", ".join(hosts) if hosts else
                                                     "this host only"), quiet=hosts or [])

    run(ctx, body)


async def _span(ctx: typer.Context, c: Client, out: Output, g: GroupInfo, to: Direction,
                wait: bool | None, freeze: float, *, full: bool) -> None:
    """One point in time of the group on this host and on every host it spans."""
    what = f"{'full copy' if full else 'update'} of group {g.name} to the {to.value}"
    s = settings(ctx)
    async with contextlib.AsyncExitStack() as stack:
        members = [(c.host or "this host", c, g.path)]
        for host in g.hosts:
            remote = await stack.enter_async_context(open_client(s, host))
            members.append((host, remote, await remote.resolve(g.name, "group")))
        res = await span_point_in_time(members, "copy" if full else "update", to.value,
                                       freeze, confirm=to is Direction.master)
        out.say(f"{what}: one point in time on {len(members)} hosts; writes frozen "
                f"{res.window * 1000:.1f} ms end to end")
        for o in res.hosts:
            out.say(f"  {o.host}: frozen {o.frozen_usec / 1000:.1f} ms, job {o.job}")
        data = res.as_json()
        if wants_wait(wait):
            ended = []
            for (label, client, _), o in zip(members, res.hosts, strict=True):
                if o.job != NO_OBJECT:
                    info = await follow(client, out, o.job, f"{what} on {label}",
                                        show=progress_visible(out))
                    ended.append({"host": label, **views.job_json(info)})
                    out.say(f"  {label}: {info.message or 'done'}")
            data["jobs"] = ended
        out.result(data, quiet=[o.job for o in res.hosts])


def _copy(ctx: typer.Context, group: str, to: Direction, yes: bool, wait: bool | None,
          freeze: float, json_: bool, quiet: bool, *, full: bool) -> None:
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        path = await c.resolve(group, "group")
        g = await c.group_info(path)
        what = f"{'full copy' if full else 'update'} of group {g.name} to the {to.value}"
        if to is Direction.master:
            confirm_master_write(out, f"The {what}", yes)
        if g.hosts:
            await _span(ctx, c, out, g, to, wait, freeze, full=full)
            return
        job = await c.copy(path, GROUP, to.value, full=full, confirm=to is Direction.master)
        await start_and_follow(c, out, settings(ctx), job, what, wait, g.name)

    run(ctx, body)


@app.command()
def copy(ctx: typer.Context, group: GroupArg, *, to: DirectionOpt, yes: YesOpt = False,
         wait: WaitOpt = None, freeze_timeout: FreezeOpt = 10.0, json_: JsonOpt = False,
         quiet: QuietOpt = False) -> None:
    """Full copy of every set in the group, at one point in time, all or nothing (on every
    host the group spans)."""
    _copy(ctx, group, to, yes, wait, freeze_timeout, json_, quiet, full=True)


@app.command()
def update(ctx: typer.Context, group: GroupArg, *, to: DirectionOpt, yes: YesOpt = False,
           wait: WaitOpt = None, freeze_timeout: FreezeOpt = 10.0, json_: JsonOpt = False,
           quiet: QuietOpt = False) -> None:
    """Update every set in the group at one point in time, all or nothing (on every host the
    group spans)."""
    _copy(ctx, group, to, yes, wait, freeze_timeout, json_, quiet, full=False)
