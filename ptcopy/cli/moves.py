"""Shadows that move between hosts: ``import`` a shadow another host exported and ``release``
it again (``export`` and ``join``, on the exporting host, are in ``sets``)."""

from __future__ import annotations

from typing import Annotated

import typer

from ptcopy.cli._client import Client
from ptcopy.cli._contract import SET
from ptcopy.cli._errors import CliError, UsageProblem
from ptcopy.cli._params import ChunkSizeOpt, JsonOpt, QuietOpt, SetArg
from ptcopy.cli._runner import output, run
from ptcopy.cli.sets import NAME_RE, default_name, volume_path

app = typer.Typer(rich_markup_mode="markdown")


@app.command(name="import", rich_help_panel="Between hosts")
def import_(
    ctx: typer.Context,
    shadow: Annotated[str, typer.Argument(..., metavar="SHADOW", show_default=False,
                                          help="The shadow another host exported (storage "
                                               "both hosts see).")],
    bitmap: Annotated[str, typer.Argument(..., metavar="BITMAP", show_default=False,
                                          help="A volume for the new bitmap of the chunks "
                                               "written here (the exporting host joins it).")],
    *,
    name: Annotated[str | None, typer.Option(
        "--name", "-n", show_default=False,
        help="The imported set's name (default: from the shadow's file name).")] = None,
    chunk_size: ChunkSizeOpt = None,
    no_loop: Annotated[bool, typer.Option(
        "--no-loop", help="Serve the shadow as a file only, without a loop device.")] = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import a shadow another host exported: ptcopy serves it here (use the device it
    shows) and marks every chunk written to it in BITMAP. --chunk-size must be the exporting
    set's (default 32K). When done, `ptcopy release` it, then `ptcopy join` on the exporting
    host."""
    set_name = name if name is not None else default_name(shadow)
    if not NAME_RE.match(set_name):
        raise UsageProblem(f"{set_name!r} is not a valid set name",
                           "use 1 to 64 letters, digits, '.', '_' or '-' (--name NAME)")
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        opts: dict[str, bool | int | str] = {"name": set_name}
        if chunk_size is not None:
            opts["chunk_size"] = chunk_size
        if no_loop:
            opts["loop"] = False
        path = await c.import_shadow(volume_path(c, shadow), volume_path(c, bitmap), opts)
        info = await c.set_info(path)
        out.result({"name": info.name, "object": path, "kind": info.kind,
                    "shadow": info.shadow, "bitmap": info.bitmap,
                    "shadow_device": info.shadow_device, "chunk_size": info.chunk_size},
                   human=f"imported {info.shadow} as set {info.name}; use "
                         f"{info.shadow_device}; every chunk written is marked in "
                         f"{info.bitmap}", quiet=[info.name])

    run(ctx, body)


@app.command(rich_help_panel="Between hosts")
def release(ctx: typer.Context, set_: SetArg, *, json_: JsonOpt = False,
            quiet: QuietOpt = False) -> None:
    """Stop using an imported shadow here: it is no longer served, and its bitmap is left
    for `ptcopy join` on the host that exported it (no host opens it as a set again)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        path = await c.resolve(set_, "set")
        info = await c.set_info(path)
        if info.kind != "imported":
            raise CliError(f"set {info.name} is {info.kind}, not imported: only an imported "
                           "shadow is released", f"ptcopy disable {info.name} ends a set")
        await c.simple(path, SET, "Disable")
        out.result({"name": info.name, "released": True, "bitmap": info.bitmap},
                   human=f"released {info.name}; join its bitmap {info.bitmap} on the host "
                         "that exported the shadow", quiet=[info.bitmap])

    run(ctx, body)
