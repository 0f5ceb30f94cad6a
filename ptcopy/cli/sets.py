"""Commands on sets (mounted at the top level: ptcopy enable, copy, update, status, ...)."""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated

import typer
from rich.console import RenderableType

from ptcopy.cli import _views as views
from ptcopy.cli import allhosts
from ptcopy.cli._client import Client
from ptcopy.cli._contract import GROUP, JOB, NO_OBJECT, SET
from ptcopy.cli._errors import (
    BUS_ERROR_PREFIX,
    CliError,
    RemoteError,
    UsageProblem,
)
from ptcopy.cli._output import Mode, Output
from ptcopy.cli._output import rate as fmt_rate
from ptcopy.cli._output import size as fmt_size
from ptcopy.cli._params import (
    ChunkSizeOpt,
    DelayOpt,
    Direction,
    DirectionOpt,
    JsonOpt,
    OptionalSetsArg,
    QuietOpt,
    SetArg,
    SetsArg,
    TargetsArg,
    UnitsOpt,
    WaitOpt,
    YesOpt,
)
from ptcopy.cli._runner import (
    Settings,
    confirm_master_write,
    follow,
    output,
    run,
    settings,
    wants_wait,
)
from ptcopy.cli._snapshots import SetInfo
from ptcopy.errnames import ErrorName

app = typer.Typer(rich_markup_mode="markdown")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
AllHostsOpt = Annotated[bool, typer.Option(
    "--all-hosts", help="This host and every host registered here (ptcopy hosts list), asked "
    "in parallel; a host that does not answer is marked, not an error.")]


def default_name(shadow: str) -> str:
    """A set's name from its shadow volume, as iiadm named sets by their shadow:
    /dev/vg/db-snap -> db-snap, /srv/shadow.img -> shadow."""
    base = os.path.basename(shadow.rstrip("/")) or "set"
    for ext in (".img", ".raw", ".bin"):
        base = base.removesuffix(ext)
    base = re.sub(r"[^A-Za-z0-9._-]", "-", base).lstrip("._-")[:64]
    return base or "set"


def volume_path(c: Client, value: str) -> str:
    """Volumes go to the daemon as absolute paths (it runs elsewhere). A relative path means
    nothing on another host: with --host it is refused."""
    if c.host and not os.path.isabs(value):
        raise UsageProblem(f"{value!r} is a relative path: on host {c.host} give volumes by "
                           f"their absolute path there")
    return os.path.abspath(value)


def progress_visible(out: Output) -> bool:
    return out.mode is not Mode.QUIET and sys.stderr.isatty()


async def start_and_follow(c: Client, out: Output, s: Settings, job: str, what: str,
                           wait: bool | None, follow_name: str) -> None:
    """After a copy started: follow it to its end, or print its job path (--no-wait)."""
    if job == NO_OBJECT:
        out.result({"job": None}, human=f"{what}: nothing to do")
        return
    if not wants_wait(wait):
        out.result({"job": job, "state": "running"}, human=job, quiet=[job])
        out.note(f"{what} runs in the background; ptcopy wait {job} follows it")
        return
    s.following = follow_name
    info = await follow(c, out, job, what, show=progress_visible(out))
    s.following = ""
    summary = f"{what}: {info.message or 'done'}"
    if info.bytes:
        summary += f" ({fmt_size(info.bytes)}"
        summary += f" at {fmt_rate(info.rate)})" if info.rate else ")"
    out.result(views.job_json(info), human=summary)


# ---- enable and disable -------------------------------------------------------------------------

# refusals of a volume after which enable names volumes that would do instead
SUGGEST_FOR = {"TooSmall", "InUse", "SameVolume", "NotFound", "NotAuthorized"}


async def _suggest(c: Client, master: str, kind: str) -> str:
    """'volumes that could be the shadow: ...' (empty when the daemon knows none)."""
    parts = []
    for role in ("shadow", "bitmap"):
        try:
            found = await c.candidates(master, role, kind)
        except CliError:   # suggestions are a courtesy: never hide the real error
            continue
        if found:
            parts.append(f"volumes that could be the {role}: {', '.join(found[:5])}")
    return "; ".join(parts)


@app.command(rich_help_panel="Sets")
def enable(
    ctx: typer.Context,
    master: Annotated[str, typer.Argument(..., metavar="MASTER", show_default=False,
                                          help="The volume to take point-in-time copies of.")],
    shadow: Annotated[str, typer.Argument(..., metavar="SHADOW", show_default=False,
                                          help="The volume that holds the point-in-time copy.")],
    bitmap: Annotated[str | None, typer.Argument(...,
        metavar="BITMAP", show_default=False,
        help="The volume for the set's bitmaps (omit with --memory-bitmap).")] = None,
    *,
    independent: Annotated[bool, typer.Option(
        "--independent", help="A full, independent copy: the whole master is copied to the "
        "shadow in the background.")] = False,
    dependent: Annotated[bool, typer.Option(
        "--dependent", help="A dependent copy-on-write shadow: only chunks the master "
        "overwrites are copied; the shadow may be smaller (compact).")] = False,
    name: Annotated[str | None, typer.Option(
        "--name", "-n", show_default=False,
        help="The set's name (default: from the shadow's file name).")] = None,
    overflow: Annotated[str | None, typer.Option(
        "--overflow", metavar="OVERFLOW", show_default=False,
        help="An overflow volume for a compact dependent shadow (ptcopy overflow init).")]
    = None,
    group: Annotated[str | None, typer.Option(
        "--group", "-g", metavar="GROUP", show_default=False,
        help="Put the set in this group at once.")] = None,
    chunk_size: ChunkSizeOpt = None,
    delay: DelayOpt = None,
    units: UnitsOpt = None,
    memory_bitmap: Annotated[bool, typer.Option(
        "--memory-bitmap", help="Keep the bitmaps in memory only (they do not survive a "
        "restart of ptcopyd).")] = False,
    no_loop: Annotated[bool, typer.Option(
        "--no-loop", help="Serve master and shadow as files only, without loop devices.")]
    = False,
    wait: WaitOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Enable a set: MASTER, SHADOW and BITMAP become a point-in-time copy pair.

    From then on use the devices ptcopy serves for master and shadow (shown in the output and
    by ptcopy status), not the volumes themselves.
    """
    if independent == dependent:
        raise UsageProblem("say which kind of set: --independent or --dependent",
                           "--dependent: copy-on-write (fast, may be compact); --independent: "
                           "a full copy in the background")
    if bitmap is None and not memory_bitmap:
        raise UsageProblem("no BITMAP volume given", "give one, or --memory-bitmap")
    if bitmap is not None and memory_bitmap:
        raise UsageProblem("give either a BITMAP volume or --memory-bitmap, not both")
    set_name = name if name is not None else default_name(shadow)
    if not NAME_RE.match(set_name):
        raise UsageProblem(f"{set_name!r} is not a valid set name",
                           "use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                           "letter or digit (--name NAME)")
    kind = "independent" if independent else "dependent"
    out = output(ctx, json_, quiet)
    s = settings(ctx)

    async def body(c: Client) -> None:
        opts: dict[str, bool | int | str] = {}
        if overflow is not None:
            opts["overflow"] = await c.resolve(volume_path(c, overflow), "overflow volume")
        if group is not None:
            opts["group"] = await c.resolve(group, "group")
        if chunk_size is not None:
            opts["chunk_size"] = chunk_size
        if delay is not None:
            opts["copy_delay"] = delay
        if units is not None:
            opts["copy_units"] = units
        if memory_bitmap:
            opts["bitmap_in_memory"] = True
        if no_loop:
            opts["loop"] = False
        try:
            path, job = await c.create_set(set_name, kind, volume_path(c, master),
                                           volume_path(c, shadow),
                                           volume_path(c, bitmap) if bitmap else "", opts)
        except RemoteError as e:
            if e.short_name in SUGGEST_FOR:
                e.hint = " ".join(filter(None, [e.hint, await _suggest(
                    c, volume_path(c, master), kind)]))
            raise
        inv = await c.inventory()
        info = inv.sets.get(path) or await c.set_info(path)
        want_wait = wants_wait(wait) and job != NO_OBJECT
        if not want_wait or out.mode is not Mode.HUMAN:
            data = views.set_json(info, inv)
            out.result(data, human=_enabled_text(info), quiet=[info.name])
        else:
            out.say(_enabled_text(info))
        if job != NO_OBJECT:
            what = f"full copy of set {info.name} to the shadow"
            if want_wait:
                s.following = info.name
                done = await follow(c, out, job, what, show=progress_visible(out))
                s.following = ""
                if out.mode is Mode.HUMAN:
                    out.say(f"{what}: {done.message or 'done'}")
            else:
                out.note(f"the {what} runs in the background (job {job}); "
                         f"ptcopy wait {info.name} follows it")

    run(ctx, body)


def _enabled_text(info: SetInfo) -> str:
    where = []
    if info.master_device:
        where.append(f"master {info.master_device}")
    if info.shadow_device:
        where.append(f"shadow {info.shadow_device}")
    text = f"enabled {info.kind} set {info.name}"
    if "compact" in info.flags:
        text += " (compact shadow)"
    if where:
        text += "; use " + ", ".join(where)
    return text


@app.command(rich_help_panel="Sets")
def disable(ctx: typer.Context, sets: SetsArg, *, json_: JsonOpt = False,
            quiet: QuietOpt = False) -> None:
    """Disable sets: they stop being managed. The volumes keep their data."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        done = []
        for name in sets:
            path = await c.resolve(name, "set")
            info = await c.set_info(path)
            await c.simple(path, SET, "Disable")
            done.append(info.name)
            out.say(f"disabled set {info.name}; its volumes keep their data")
        out.result({"disabled": done}, quiet=done)

    run(ctx, body)


# ---- copies ----------------------------------------------------------------------------------

def run_copy(ctx: typer.Context, kind: str, name: str, to: Direction, yes: bool,
             wait: bool | None, json_: bool, quiet: bool, *, full: bool) -> None:
    """copy/update of a set or a group: confirm a master write, start, follow or print the job."""
    out = output(ctx, json_, quiet)
    s = settings(ctx)

    async def body(c: Client) -> None:
        path = await c.resolve(name, kind)
        info = await (c.set_info(path) if kind == "set" else c.group_info(path))
        what = f"{'full copy' if full else 'update'} of {kind} {info.name} to the {to.value}"
        if to is Direction.master:
            confirm_master_write(out, f"The {what}", yes)
        job = await c.copy(path, SET if kind == "set" else GROUP, to.value, full=full,
                           confirm=to is Direction.master)
        await start_and_follow(c, out, s, job, what, wait, info.name)

    run(ctx, body)


@app.command(rich_help_panel="Copies")
def copy(ctx: typer.Context, set_: SetArg, *, to: DirectionOpt, yes: YesOpt = False,
         wait: WaitOpt = None, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Full copy: make the target side equal to the other, chunk by chunk.

    Both volumes stay usable while it runs. The target must not be mounted.
    """
    run_copy(ctx, "set", set_, to, yes, wait, json_, quiet, full=True)


@app.command(rich_help_panel="Copies")
def update(ctx: typer.Context, set_: SetArg, *, to: DirectionOpt, yes: YesOpt = False,
           wait: WaitOpt = None, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Update: copy only the chunks that differ (--to shadow takes a new point in time,
    --to master restores the master from the shadow).

    Mounted file systems on the source are frozen for the instant the point in time is taken.
    The target must not be mounted.
    """
    run_copy(ctx, "set", set_, to, yes, wait, json_, quiet, full=False)


async def _job_of(c: Client, name: str) -> tuple[str, str]:
    """(what, job path) for a set, group or job name; job '/' when there is none."""
    kind, path = await c.resolve_any(name, ("set", "group", "job"))
    if kind == "set":
        info = await c.set_info(path)
        return f"set {info.name}", info.job
    if kind == "group":
        g = await c.group_info(path)
        return f"group {g.name}", g.job
    return f"job {path}", path


@app.command(rich_help_panel="Copies")
def wait(ctx: typer.Context, targets: TargetsArg, *, json_: JsonOpt = False,
         quiet: QuietOpt = False) -> None:
    """Wait until the copies of sets, groups or jobs end (the last copy's result when none
    runs). Fails (exit 2) when a copy ended badly."""
    out = output(ctx, json_, quiet)
    s = settings(ctx)

    async def body(c: Client) -> None:
        results = []
        for name in targets:
            what, job = await _job_of(c, name)
            if job == NO_OBJECT:
                out.say(f"{what}: no copy to wait for")
                results.append({"target": name, "job": None})
                continue
            s.following = name
            try:
                info = await c.job_info(job)
            except RemoteError as e:
                if e.error_name != BUS_ERROR_PREFIX + "UnknownObject":
                    raise
                out.say(f"{what}: no copy to wait for (its last job is no longer kept)")
                results.append({"target": name, "job": None})
                continue
            label = f"{info.operation} of {what}"
            info = await follow(c, out, job, label, show=progress_visible(out))
            out.say(f"{label}: {info.message or 'done'}")
            results.append({"target": name, **views.job_json(info)})
        out.result(results)

    run(ctx, body)


async def _copying(c: Client, kind: str, path: str) -> bool:
    """Is a copy of this set, group (any member) or job running?"""
    if kind == "job":
        return not (await c.job_info(path)).done
    members = [path] if kind == "set" else list((await c.group_info(path)).sets)
    for member in members:
        if (await c.set_info(member)).copying:
            return True
    return False


@app.command(rich_help_panel="Copies")
def abort(ctx: typer.Context, targets: TargetsArg, *, json_: JsonOpt = False,
          quiet: QuietOpt = False) -> None:
    """Stop running copies of sets, groups or jobs. The target is left consistent but
    incomplete; run the update again to finish it."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        stopped = []
        for name in targets:
            kind, path = await c.resolve_any(name, ("set", "group", "job"))
            iface = {"set": SET, "group": GROUP, "job": JOB}[kind]
            if not await _copying(c, kind, path):
                out.say(f"{name}: no copy running, nothing to abort")
                continue
            try:
                await c.simple(path, iface, "Cancel" if kind == "job" else "Abort")
            except RemoteError as e:
                if e.error_name != ErrorName.NO_COPY.dbus:
                    raise
                out.say(f"{name}: no copy running, nothing to abort")
                continue
            stopped.append(name)
            out.say(f"{name}: copy stopped; the target is incomplete until the next update")
        out.result({"aborted": stopped}, quiet=stopped)

    run(ctx, body)


# ---- state -----------------------------------------------------------------------------------

@app.command(rich_help_panel="Sets")
def status(ctx: typer.Context, sets: OptionalSetsArg = None, *,
           all_: Annotated[bool, typer.Option("--all", "-a",
                                              help="Every set (the default).")] = False,
           group: Annotated[str | None, typer.Option(
               "--group", "-g", metavar="GROUP", help="The sets of this group.")] = None,
           all_hosts: AllHostsOpt = False,
           json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show sets as iiadm -i did: volumes and served devices, kind, copy state and
    direction, offline volumes, out of space, exported, how much differs, size, chunks,
    last write, and the overall state (normal, degraded, error)."""
    if (sets or group is not None) and all_:
        raise UsageProblem("give sets or --all, not both (--group names sets too)")
    out = output(ctx, json_, quiet)
    if all_hosts:
        if sets or group is not None:
            raise UsageProblem("--all-hosts shows every set of every host: give no sets")
        allhosts.run_all(settings(ctx), out, full=True)
        return

    async def body(c: Client) -> None:
        if sets or group is not None:
            paths = [await c.resolve(n, "set") for n in sets or []]
            if group is not None:   # iiadm -g GROUP -i
                paths += (await c.group_info(await c.resolve(group, "group"))).sets
            inv = await c.inventory()
            chosen = [inv.sets[p] if p in inv.sets else await c.set_info(p) for p in paths]
        else:
            inv = await c.inventory()
            chosen = sorted(inv.sets.values(), key=lambda x: x.name)
        human: list[RenderableType] = []
        for i, info in enumerate(chosen):
            if i:
                human.append("")
            human.append(views.set_panel(info, inv))
        if not chosen:
            human = ["no sets (ptcopy enable makes one)"]
        out.result([views.set_json(i, inv) for i in chosen], human=human,
                   quiet=[f"{i.name} {i.status}" for i in chosen])

    run(ctx, body)


@app.command(name="list", rich_help_panel="Sets")
def list_(ctx: typer.Context, *, all_hosts: AllHostsOpt = False, json_: JsonOpt = False,
          quiet: QuietOpt = False) -> None:
    """List the sets, one a line."""
    out = output(ctx, json_, quiet)
    if all_hosts:
        allhosts.run_all(settings(ctx), out, full=False)
        return

    async def body(c: Client) -> None:
        inv = await c.inventory()
        chosen = sorted(inv.sets.values(), key=lambda x: x.name)
        data = [{k: v for k, v in views.set_json(i, inv).items()
                 if k in ("name", "object", "kind", "compact", "status", "copying",
                          "direction", "difference_percent", "master", "master_device",
                          "shadow", "shadow_device", "bitmap", "group", "overflow")}
                for i in chosen]
        human = views.sets_table(chosen, inv) if chosen else "no sets (ptcopy enable makes one)"
        out.result(data, human=human, quiet=[i.name for i in chosen])

    run(ctx, body)


@app.command(rich_help_panel="Sets")
def reset(ctx: typer.Context, set_: SetArg, *, wait: WaitOpt = None, json_: JsonOpt = False,
          quiet: QuietOpt = False) -> None:
    """Bring a set's offline volumes back and start the resync they need."""
    out = output(ctx, json_, quiet)
    s = settings(ctx)

    async def body(c: Client) -> None:
        path = await c.resolve(set_, "set")
        (job,) = await c.simple(path, SET, "Reset")
        info = await c.set_info(path)
        if job == NO_OBJECT:
            out.result({"job": None, "status": info.status},
                       human=f"set {info.name} is {info.status}; no resync needed")
            return
        await start_and_follow(c, out, s, str(job), f"resync of set {info.name}", wait,
                               info.name)

    run(ctx, body)


@app.command(rich_help_panel="Sets")
def param(ctx: typer.Context, set_: SetArg, *, delay: DelayOpt = None, units: UnitsOpt = None,
          json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show or change a set's copy throttle: pause --delay ms after every --units chunks.
    Applies at once, also to a running copy."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        path = await c.resolve(set_, "set")
        info = await c.set_info(path)
        if delay is not None or units is not None:
            new_delay = info.copy_delay if delay is None else delay
            new_units = info.copy_units if units is None else units
            await c.simple(path, SET, "SetCopyParameters", new_delay, new_units)
            info = await c.set_info(path)
        text = (f"set {info.name}: no pause between chunks" if not info.copy_delay else
                f"set {info.name}: pause {info.copy_delay} ms every {info.copy_units} chunks")
        out.result({"name": info.name, "copy_delay_ms": info.copy_delay,
                    "copy_units": info.copy_units}, human=text,
                   quiet=[f"{info.copy_delay} {info.copy_units}"])

    run(ctx, body)


@app.command(rich_help_panel="Sets")
def rename(ctx: typer.Context, set_: SetArg,
           new_name: Annotated[str, typer.Argument(..., metavar="NEW", show_default=False,
                                                   help="The new name.")],
           *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Give a set another name."""
    if not NAME_RE.match(new_name):
        raise UsageProblem(f"{new_name!r} is not a valid set name",
                           "use 1 to 64 letters, digits, '.', '_' or '-'")
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        path = await c.resolve(set_, "set")
        await c.simple(path, SET, "Rename", new_name)
        out.result({"name": new_name, "object": path}, human=f"set {set_} is now {new_name}",
                   quiet=[new_name])

    run(ctx, body)


# ---- between hosts ---------------------------------------------------------------------------

@app.command(name="export", rich_help_panel="Between hosts")
def export_(ctx: typer.Context, set_: SetArg, *, json_: JsonOpt = False,
            quiet: QuietOpt = False) -> None:
    """Hand an independent set's shadow to another host (it is no longer updated here)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        path = await c.resolve(set_, "set")
        await c.simple(path, SET, "Export")
        info = await c.set_info(path)
        out.result({"name": info.name, "exported": "exported" in info.flags},
                   human=f"the shadow of set {info.name} is exported", quiet=[info.name])

    run(ctx, body)


@app.command(rich_help_panel="Between hosts")
def join(
    ctx: typer.Context,
    set_: SetArg,
    bitmap: Annotated[str, typer.Argument(..., metavar="BITMAP", show_default=False,
                                          help="The bitmap volume the other host kept while "
                                               "it used the shadow.")],
    *,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Take an exported shadow back: the chunks the other host wrote (its BITMAP) are marked,
    so the next update makes the shadow the master's point in time again."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        path = await c.resolve(set_, "set")
        await c.simple(path, SET, "Join", volume_path(c, bitmap))
        info = await c.set_info(path)
        out.result({"name": info.name, "exported": "exported" in info.flags},
                   human=f"the shadow of set {info.name} is back; ptcopy update {info.name} "
                         "--to shadow resyncs what the other host changed",
                   quiet=[info.name])

    run(ctx, body)
