"""ptcopy suspend and resume: a set's copy stops and keeps its place, and goes on where it left
off (iiadm -s/-r). The daemon keeps a suspended copy suspended across its restarts."""

from __future__ import annotations

from typing import Annotated

import typer

from ptcopy.cli import _views as views
from ptcopy.cli._client import Client
from ptcopy.cli._contract import SET
from ptcopy.cli._errors import UsageProblem
from ptcopy.cli._params import JsonOpt, OptionalSetsArg, QuietOpt, WaitOpt
from ptcopy.cli._runner import follow, output, run, settings, wants_wait
from ptcopy.cli.sets import progress_visible, start_and_follow

app = typer.Typer(rich_markup_mode="markdown")

AllSetsOpt = Annotated[bool, typer.Option("--all", "-a", help="Every set it applies to.")]


async def _chosen(c: Client, sets: list[str] | None, all_: bool, flag: str,
                  present: bool) -> list[str]:
    """The set paths named, or with --all every set whose flags have (or lack) ``flag``."""
    if bool(sets) == all_:
        raise UsageProblem("give sets or --all (one of them)")
    if sets:
        return [await c.resolve(n, "set") for n in sets]
    inv = await c.inventory()
    return [p for p, i in sorted(inv.sets.items(), key=lambda x: x[1].name)
            if i.copying and (flag in i.flags) == present]


@app.command(rich_help_panel="Copies")
def suspend(ctx: typer.Context, sets: OptionalSetsArg = None, *, all_: AllSetsOpt = False,
            json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Suspend running copies (--all: every one): each keeps its place (nothing copied is
    copied again) and its set stays copying, both sides usable, until ptcopy resume, also
    across a restart of ptcopyd. On the kernel data path the target stays read-only meanwhile
    and a restart starts the copy again from a new point in time (docs/kernel-path.md)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        done: list[dict[str, object]] = []
        names: list[str] = []
        for path in await _chosen(c, sets, all_, "suspended", False):
            await c.simple(path, SET, "Suspend")
            info = await c.set_info(path)
            names.append(info.name)
            done.append({"name": info.name, "suspended": "suspended" in info.flags,
                         "copy_percent": info.copy_percent})
            out.say(f"set {info.name}: copy to the {info.direction} suspended at "
                    f"{info.copy_percent:.1f}%; ptcopy resume {info.name} continues it")
        if not done:
            out.say("no copy running, nothing to suspend")
        out.result(done, quiet=names)

    run(ctx, body)


@app.command(rich_help_panel="Copies")
def resume(ctx: typer.Context, sets: OptionalSetsArg = None, *, all_: AllSetsOpt = False,
           wait: WaitOpt = None, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Resume suspended copies (--all: every one) where they stopped."""
    out = output(ctx, json_, quiet)
    s = settings(ctx)

    async def body(c: Client) -> None:
        paths = await _chosen(c, sets, all_, "suspended", True)
        if not paths:
            out.result([], human="no suspended copy, nothing to resume")
            return
        if len(paths) > 1 and wants_wait(wait):   # start them all, then follow each
            jobs = [(str((await c.simple(p, SET, "Resume"))[0]), p) for p in paths]
            results = []
            for job, p in jobs:
                info = await c.set_info(p)
                label = f"resumed copy of set {info.name} to the {info.direction}"
                s.following = info.name
                done = await follow(c, out, job, label, show=progress_visible(out))
                out.say(f"{label}: {done.message or 'done'}")
                results.append(views.job_json(done))
            out.result(results)
            return
        for p in paths:
            (job,) = await c.simple(p, SET, "Resume")
            info = await c.set_info(p)
            await start_and_follow(c, out, s, str(job),
                                   f"resumed copy of set {info.name} to the {info.direction}",
                                   wait, info.name)

    run(ctx, body)
