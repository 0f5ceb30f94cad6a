"""ptcopy overflow ...: volumes that compact dependent shadows spill into."""

from __future__ import annotations

from typing import Annotated

import typer

from ptcopy.cli import _views as views
from ptcopy.cli._client import Client
from ptcopy.cli._contract import NO_OBJECT, OVERFLOW, SET
from ptcopy.cli._errors import CliError
from ptcopy.cli._params import ChunkSizeOpt, JsonOpt, OverflowArg, QuietOpt, SetArg
from ptcopy.cli._runner import output, run
from ptcopy.cli.sets import volume_path

app = typer.Typer(help="Overflow volumes: where compact dependent shadows spill when they are "
                       "full.", no_args_is_help=True, rich_markup_mode="markdown")

OverflowsArg = Annotated[list[str] | None, typer.Argument(...,
    metavar="[OVERFLOW]...", show_default=False,
    help="Overflow volumes by path (default: all).")]


@app.command()
def init(ctx: typer.Context,
         volume: Annotated[str, typer.Argument(..., metavar="VOLUME", show_default=False,
                                               help="The volume to initialise.")],
         *, chunk_size: ChunkSizeOpt = None, json_: JsonOpt = False,
         quiet: QuietOpt = False) -> None:
    """Initialise a volume as an overflow volume (its data is overwritten)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        path = await c.create_overflow(volume_path(c, volume), chunk_size or 0)
        inv = await c.inventory()
        o = inv.overflows.get(path) or await c.overflow_info(path)
        out.result(views.overflow_json(o, inv),
                   human=f"initialised overflow volume {o.volume} ({o.chunks_total} chunks)",
                   quiet=[o.volume])

    run(ctx, body)


@app.command()
def attach(ctx: typer.Context, overflow: OverflowArg, set_: SetArg, *, json_: JsonOpt = False,
           quiet: QuietOpt = False) -> None:
    """Attach an overflow volume to a compact dependent set."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        opath = await c.resolve(volume_path(c, overflow), "overflow volume")
        spath = await c.resolve(set_, "set")
        await c.simple(spath, SET, "AttachOverflow", opath)
        info = await c.set_info(spath)
        o = await c.overflow_info(opath)
        out.result({"set": info.name, "overflow": o.volume},
                   human=f"set {info.name} spills into {o.volume}", quiet=[info.name])

    run(ctx, body)


@app.command()
def detach(ctx: typer.Context, set_: SetArg, *, json_: JsonOpt = False,
           quiet: QuietOpt = False) -> None:
    """Detach a set's overflow volume (refused while chunks of the set live there)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        spath = await c.resolve(set_, "set")
        info = await c.set_info(spath)
        if info.overflow == NO_OBJECT:
            raise CliError(f"set {info.name} has no overflow volume")
        await c.simple(spath, SET, "DetachOverflow")
        out.result({"set": info.name, "overflow": None},
                   human=f"set {info.name} has no overflow volume now", quiet=[info.name])

    run(ctx, body)


@app.command(name="list")
def list_(ctx: typer.Context, *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List overflow volumes with their use."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        inv = await c.inventory()
        chosen = views.chosen(inv.overflows, [], lambda o: o.volume)
        human = views.overflows_table(chosen, inv) if chosen else \
            "no overflow volumes (ptcopy overflow init makes one)"
        out.result([views.overflow_json(o, inv) for o in chosen], human=human,
                   quiet=[o.volume for o in chosen])

    run(ctx, body)


@app.command()
def status(ctx: typer.Context, overflows: OverflowsArg = None, *, json_: JsonOpt = False,
           quiet: QuietOpt = False) -> None:
    """Show overflow volumes as iiadm -Q did: attached sets, chunks used and free, and a
    warning when the counters are not valid after an unclean stop."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        paths = [await c.resolve(volume_path(c, o), "overflow volume") for o in overflows or []]
        inv = await c.inventory()
        chosen = views.chosen(inv.overflows, paths, lambda o: o.volume)
        human: list[object] = []
        for i, o in enumerate(chosen):
            if i:
                human.append("")
            human.append(views.overflow_panel(o, inv))
        out.result([views.overflow_json(o, inv) for o in chosen],
                   human=human or "no overflow volumes",  # type: ignore[arg-type]
                   quiet=[f"{o.volume} {o.chunks_used} {o.chunks_total}" for o in chosen])

    run(ctx, body)


@app.command()
def delete(ctx: typer.Context,
           overflows: Annotated[list[str], typer.Argument(...,
               metavar="OVERFLOW...", show_default=False, help="Overflow volumes by path.")],
           *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Wipe overflow volumes' headers (refused while sets are attached)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        done = []
        for name in overflows:
            opath = await c.resolve(volume_path(c, name), "overflow volume")
            o = await c.overflow_info(opath)
            await c.simple(opath, OVERFLOW, "Delete")
            done.append(o.volume)
            out.say(f"{o.volume} is no longer an overflow volume")
        out.result({"deleted": done}, quiet=done)

    run(ctx, body)
