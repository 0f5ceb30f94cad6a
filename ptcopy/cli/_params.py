"""Parameters shared by the commands, declared once (typer Annotated aliases)."""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, Annotated

import typer

from ptcopy.cli._typer_compat import LEGACY

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_FACTOR = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str) -> int:
    """Bytes from '65536', '32K', '32KiB', '1M' (binary units)."""
    m = _SIZE.match(value)
    if not m:
        raise typer.BadParameter(f"{value!r} is not a size (e.g. 32K, 64KiB, 1M, 65536)")
    return int(m.group(1)) * _FACTOR[m.group(2).lower()]


class Direction(enum.StrEnum):
    shadow = "shadow"
    master = "master"


class Kind(enum.StrEnum):
    independent = "independent"
    dependent = "dependent"


# ---- operands --------------------------------------------------------------------------------

SetArg = Annotated[str, typer.Argument(...,
    metavar="SET", help="A set, by its name or by its shadow volume's path.", show_default=False)]
SetsArg = Annotated[list[str], typer.Argument(...,
    metavar="SET...", help="Sets, by name or by shadow volume path.", show_default=False)]
OptionalSetsArg = Annotated[list[str] | None, typer.Argument(...,
    metavar="[SET]...", help="Sets, by name or shadow volume path (default: every set).",
    show_default=False)]
GroupArg = Annotated[str, typer.Argument(..., metavar="GROUP", help="A group, by name.",
                                         show_default=False)]
OverflowArg = Annotated[str, typer.Argument(...,
    metavar="OVERFLOW", help="An overflow volume, by its path.", show_default=False)]
TargetsArg = Annotated[list[str], typer.Argument(...,
    metavar="TARGET...", help="Sets (by name or shadow path), groups (by name) or jobs "
    "(by the object path --no-wait printed).", show_default=False)]

# ---- options shared by many commands ----------------------------------------------------------

DirectionOpt = Annotated[Direction, typer.Option(
    "--to", "-t", help="Which side is written: 'shadow' (the usual way) or 'master' "
    "(a restore: needs --yes or a yes on the terminal).", show_default=False,
    case_sensitive=False)]
YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help="Write the master without asking (needed when there is no terminal).")]
WaitOpt = Annotated[bool | None, typer.Option(
    "--wait/--no-wait", help="Wait for the copy to end, with a progress bar on a terminal "
    "(the default when run from a terminal); --no-wait prints the job's path at once.",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Print only the essentials (names, job paths), one a line.")]
if TYPE_CHECKING or not LEGACY:
    ChunkSizeOpt = Annotated[int | None, typer.Option(
        "--chunk-size", metavar="SIZE", parser=parse_size, show_default=False,
        help="Bytes per chunk: a power of two from 4K to 1M (default 32K).")]
else:  # typer 0.7 has no parser=: the option is text, its callback turns it into bytes
    def _size(value: str | None) -> int | None:
        return None if value is None else parse_size(value)

    ChunkSizeOpt = Annotated[str | None, typer.Option(
        "--chunk-size", metavar="SIZE", callback=_size, show_default=False,
        help="Bytes per chunk: a power of two from 4K to 1M (default 32K).")]
DelayOpt = Annotated[int | None, typer.Option(
    "--delay", min=0, max=2**32 - 1, metavar="MS", show_default=False,
    help="Copy throttle: milliseconds to pause after every --units chunks (0: no pause).")]
UnitsOpt = Annotated[int | None, typer.Option(
    "--units", min=1, max=2**32 - 1, metavar="CHUNKS", show_default=False,
    help="Copy throttle: chunks copied between pauses.")]

# ---- global options (before the command) -------------------------------------------------------

BusOpt = Annotated[str | None, typer.Option(
    "--bus", metavar="ADDRESS", envvar="PTCOPY_BUS", show_default=False,
    help="D-Bus address of the bus ptcopyd is on (default: the system bus, or "
    "DBUS_SYSTEM_BUS_ADDRESS), e.g. unix:path=/run/ptcopy-demo/bus.sock.")]
HostOpt = Annotated[str | None, typer.Option(
    "--host", "-H", metavar="HOST", envvar="PTCOPY_HOST", show_default=False,
    help="Run the command on another host's ptcopyd, over SSH (as busctl -H): a name from "
    "ptcopy hosts list, or [USER@]HOST[:PORT]. You act there as your SSH login there.")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", metavar="SECONDS", min=0.1,
    help="How long to wait for ptcopyd to answer a call.")]
DebugOpt = Annotated[bool, typer.Option(
    "--debug", envvar="PTCOPY_DEBUG", help="Show tracebacks of failures (for bug reports).")]
