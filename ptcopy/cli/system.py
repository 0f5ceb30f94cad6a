"""The daemon itself and the volumes it knows: ptcopy volumes, version, refresh."""

from __future__ import annotations

from typing import Annotated

import typer

from ptcopy import __version__
from ptcopy.cli import _views as views
from ptcopy.cli._client import Client
from ptcopy.cli._errors import CliError
from ptcopy.cli._params import JsonOpt, QuietOpt
from ptcopy.cli._runner import output, run

app = typer.Typer(rich_markup_mode="markdown")


@app.command(rich_help_panel="The daemon")
def volumes(ctx: typer.Context, *,
            available: Annotated[bool, typer.Option(
                "--available", help="Only the volumes that could serve a new set now.")] = False,
            json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List the host's volumes (block devices udev knows, files in use): size, type, file
    system, which set or overflow uses them, and why a volume could not serve a new set."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        inv = await c.inventory()
        chosen = sorted((v for v in inv.volumes.values() if v.available or not available),
                        key=lambda v: v.volume)
        empty = "no volume is available for a new set" if available else "no volumes"
        human = views.volumes_table(chosen, inv) if chosen else empty
        out.result([views.volume_json(v, inv) for v in chosen], human=human,
                   quiet=[v.volume for v in chosen])

    run(ctx, body)


@app.command(rich_help_panel="The daemon")
def version(ctx: typer.Context, *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show the versions of this CLI and of the ptcopyd it talks to."""
    out = output(ctx, json_, quiet)
    daemon: dict[str, str] = {}
    problem = ""

    async def body(c: Client) -> None:
        props = await c.manager()
        daemon.update(version=str(props["Version"]), data_path=str(props["DataPath"]),
                      bus=c.where)

    try:
        run(ctx, body)
    except CliError as e:
        problem = e.message
    lines = [f"ptcopy {__version__}"]
    if daemon:
        lines.append(f"ptcopyd {daemon['version']} on {daemon['bus']} "
                     f"(data path: {daemon['data_path']})")
    else:
        lines.append(f"ptcopyd: not reachable ({problem})")
    out.result({"cli": __version__, "daemon": daemon.get("version"),
                "data_path": daemon.get("data_path"), "daemon_error": problem or None},
               human="\n".join(lines), quiet=[__version__])


@app.command(rich_help_panel="The daemon")
def refresh(ctx: typer.Context, *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Make ptcopyd reconcile its state from scratch (0 changes after normal operation)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        n = await c.refresh()
        out.result({"changes": n}, human=f"{n} change(s) found", quiet=[str(n)])

    run(ctx, body)
