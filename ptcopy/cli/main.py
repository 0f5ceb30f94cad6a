"""ptcopy: the command line of ptcopyd. One typer app per noun, mounted here; ``main`` is the
edge where every failure becomes a sentence and an exit code (ptcopy.cli._errors)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import typer

# typer ships click inside itself (typer._click); its exceptions are what a bad command line
# raises when the app runs with standalone_mode=False.
from typer._click import exceptions as click_exceptions

from ptcopy.cli import groups, overflow, sets, system
from ptcopy.cli._errors import CliError, ExitCode, NotAvailable, explain
from ptcopy.cli._output import print_error
from ptcopy.cli._params import BusOpt, DebugOpt, HostOpt, JsonOpt, QuietOpt, TimeoutOpt
from ptcopy.cli._runner import DEFAULT_TIMEOUT, Settings

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
app.add_typer(groups.app, name="group", rich_help_panel="Groups and overflow volumes")
app.add_typer(overflow.app, name="overflow", rich_help_panel="Groups and overflow volumes")
app.add_typer(system.app)


@app.callback()
def _root(ctx: typer.Context, *, bus: BusOpt = None, host: HostOpt = None,
          timeout: TimeoutOpt = DEFAULT_TIMEOUT, debug: DebugOpt = False,
          json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    ctx.obj = Settings(bus=bus, timeout=timeout, debug=debug, json=json_, quiet=quiet)
    if host is not None:
        raise NotAvailable(f"--host {host}: remote hosts come with the federation release",
                           "run ptcopy on that host for now")


def _debug_wanted(args: Sequence[str]) -> bool:
    return "--debug" in args or os.environ.get("PTCOPY_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None, prog: str = "ptcopy") -> int:
    """Run one command line; returns the exit status (an ExitCode)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
        return int(result) if isinstance(result, int) else ExitCode.OK
    except click_exceptions.NoArgsIsHelpError as e:
        e.show()
        return ExitCode.OK
    except click_exceptions.UsageError as e:
        if e.ctx is not None and e.message == "Missing command.":   # a bare noun: its help
            typer.echo(e.ctx.get_help(), nl=False)
            return ExitCode.OK
        from typer import rich_utils
        rich_utils.rich_format_error(e)
        return ExitCode.USAGE
    except click_exceptions.ClickException as e:
        from typer import rich_utils
        rich_utils.rich_format_error(e)
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
