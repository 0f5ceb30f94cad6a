"""ptcopy: the command line of ptcopyd. One typer app per noun, mounted here; ``main`` is the
edge where every failure becomes a sentence and an exit code (ptcopy.cli._errors)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import typer

from ptcopy.cli import (
    _typer_compat,
    groups,
    hosts,
    moves,
    overflow,
    schedules,
    sets,
    suspend,
    system,
)
from ptcopy.cli._errors import CliError, ExitCode, explain
from ptcopy.cli._output import print_error
from ptcopy.cli._params import BusOpt, DebugOpt, HostOpt, JsonOpt, QuietOpt, TimeoutOpt
from ptcopy.cli._runner import DEFAULT_TIMEOUT, Settings


def _click_exception(name: str) -> type[Exception]:
    """click's exception class ``name``, found among the bases of ``typer.BadParameter``.

    A bad command line raises click's exceptions when the app runs with standalone_mode=False.
    typer up to 0.15 (Debian 12 ships 0.7) uses the click package, newer typer a copy of click
    in its private module typer._click: both re-export BadParameter, a UsageError and so a
    ClickException, so the classes are reached through that public name on either."""
    for cls in typer.BadParameter.__mro__:
        if cls.__name__ == name and issubclass(cls, Exception):
            return cls
    raise ImportError(f"typer.BadParameter has no base class {name} (typer {typer.__version__})")


_UsageError = _click_exception("UsageError")
_ClickException = _click_exception("ClickException")

HELP = """Point-in-time copies of volumes, managed by ptcopyd.

A set ties a MASTER volume to a SHADOW volume and a BITMAP volume. Enable one, use the
devices ptcopy serves for master and shadow, and take a new point in time with
ptcopy update SET --to shadow. A set is named by its name or by its shadow's path.

Exit status: 0 ok, 1 the command line is wrong (nothing was done), 2 the operation failed.
"""

app = typer.Typer(
    name="ptcopy", help=HELP, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
app.add_typer(sets.app)
app.add_typer(moves.app)
app.add_typer(suspend.app)
app.add_typer(groups.app, name="group", rich_help_panel="Groups and overflow volumes")
app.add_typer(overflow.app, name="overflow", rich_help_panel="Groups and overflow volumes")
app.add_typer(schedules.app, name="schedule", rich_help_panel="Schedules")
app.add_typer(hosts.app, name="hosts", rich_help_panel="Between hosts")
app.add_typer(system.app)


@app.callback()
def _root(ctx: typer.Context, *, bus: BusOpt = None, host: HostOpt = None,
          timeout: TimeoutOpt = DEFAULT_TIMEOUT, debug: DebugOpt = False,
          json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    ctx.obj = Settings(bus=bus, host=host, timeout=timeout, debug=debug, json=json_,
                       quiet=quiet)


if _typer_compat.LEGACY:   # typer 0.7 (Debian 12): parameters declared the older way
    _typer_compat.adapt(app)


def _debug_wanted(args: Sequence[str]) -> bool:
    return "--debug" in args or os.environ.get("PTCOPY_DEBUG", "") not in ("", "0")


def _format_error(e: Exception) -> None:
    from typer import rich_utils
    rich_utils.rich_format_error(e)  # type: ignore[arg-type]  # a click.ClickException


def main(argv: Sequence[str] | None = None, prog: str = "ptcopy") -> int:
    """Run one command line; returns the exit status (an ExitCode)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
        return int(result) if isinstance(result, int) else ExitCode.OK
    except _UsageError as e:
        # click >= 8.2 raises NoArgsIsHelpError (a UsageError) for a bare `ptcopy`; older click
        # prints the help and exits 0 by itself.
        if type(e).__name__ == "NoArgsIsHelpError":
            getattr(e, "show")()  # noqa: B009 (not in click 8.1's UsageError type)
            return ExitCode.OK
        ctx = getattr(e, "ctx", None)
        if ctx is not None and getattr(e, "message", None) == "Missing command.":
            typer.echo(ctx.get_help(), nl=False)   # a bare noun: its help
            return ExitCode.OK
        _format_error(e)
        return ExitCode.USAGE
    except _ClickException as e:
        _format_error(e)
        return ExitCode.USAGE
    except typer.Abort:
        print_error(CliError("aborted; nothing more was done"), prog)
        return ExitCode.USAGE
    except BaseException as e:  # the edge: every failure leaves as a sentence
        if isinstance(e, SystemExit):
            raise
        err = explain(e)
        if _debug_wanted(args):
            traceback.print_exception(e)
        print_error(err, prog)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
