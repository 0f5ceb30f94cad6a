"""ptcopy schedule ...: rotating points in time that ptcopyd takes on a schedule."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ptcopy.cli._client import Client
from ptcopy.cli._contract import NO_OBJECT, SCHEDULE
from ptcopy.cli._errors import UsageProblem
from ptcopy.cli._params import JsonOpt, QuietOpt, WaitOpt
from ptcopy.cli._runner import output, run, settings
from ptcopy.cli._snapshots import Inventory, ScheduleInfo, when
from ptcopy.cli.sets import NAME_RE, start_and_follow

app = typer.Typer(help="Schedules: a new point in time onto the least recent of several "
                       "shadows of a master (or onto one set, or a group), when a systemd "
                       "calendar expression or an interval elapses.",
                  no_args_is_help=True, rich_markup_mode="markdown")

ScheduleArg = Annotated[str, typer.Argument(..., metavar="SCHEDULE", show_default=False,
                                            help="The schedule, by name.")]
SchedulesArg = Annotated[list[str], typer.Argument(..., metavar="SCHEDULE...",
                                                   show_default=False,
                                                   help="Schedules, by name.")]
SPEC_HELP = ("When it runs: a systemd calendar expression (systemd.time(7)), e.g. 'hourly', "
             "'daily', 'Mon..Fri 02:00', '*:0/15'; or 'every' and a time span, e.g. "
             "'every 15min', 'every 2h 30min'.")
NEXT_SHOWN = 5


def _local(usec: int) -> str:
    if not usec:
        return "-"
    return datetime.fromtimestamp(usec / 1e6).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def schedule_json(x: ScheduleInfo, inv: Inventory, next_runs: list[int] | None = None
                  ) -> dict[str, Any]:
    """A schedule as plain JSON (times ISO 8601, UTC; None for never)."""
    out: dict[str, Any] = {
        "name": x.name, "object": x.path, "spec": x.spec,
        "targets": [inv.name_of(p) for p in x.targets], "enabled": x.enabled,
        "next_run": when(x.next_run), "last_run": when(x.last_run),
        "last_job": None if x.last_job == NO_OBJECT else x.last_job,
        "last_result": x.last_result or None,
    }
    if next_runs is not None:
        out["next_runs"] = [when(t) for t in next_runs]
    return out


def _state(x: ScheduleInfo) -> Text:
    return Text("enabled", style="green") if x.enabled else Text("paused", style="yellow")


def schedules_table(items: list[ScheduleInfo], inv: Inventory) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("SCHEDULE", "STATE", "SPEC", "TARGETS", "NEXT RUN", "LAST RESULT"):
        t.add_column(col, overflow="fold")
    for x in items:
        t.add_row(x.name, _state(x), x.spec, ", ".join(str(inv.name_of(p)) for p in x.targets),
                  _local(x.next_run), x.last_result or "-")
    return t


def schedule_panel(x: ScheduleInfo, inv: Inventory, next_runs: list[int]) -> Table:
    t = Table(box=None, pad_edge=False, show_header=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("schedule", x.name)
    t.add_row("state", _state(x))
    t.add_row("spec", x.spec)
    t.add_row("targets", ", ".join(str(inv.name_of(p)) for p in x.targets))
    t.add_row("next runs", "\n".join(_local(n) for n in next_runs) or "-")
    t.add_row("last run", _local(x.last_run))
    t.add_row("last job", "-" if x.last_job == NO_OBJECT else x.last_job)
    t.add_row("last result", x.last_result or "-")
    return t


@app.command()
def create(ctx: typer.Context,
           name: Annotated[str, typer.Argument(..., metavar="NAME", show_default=False,
                                               help="The schedule's name.")],
           spec: Annotated[str, typer.Argument(..., metavar="SPEC", show_default=False,
                                               help=SPEC_HELP)],
           targets: Annotated[list[str], typer.Argument(..., metavar="TARGET...",
               show_default=False,
               help="Sets of one master to rotate over (each run updates the one whose point "
                    "in time is the oldest), one set, or one group; by name.")],
           *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Create a schedule: ptcopyd takes a new point in time onto its targets when SPEC
    elapses, keeping the last N points in time over N shadows. A run missed while ptcopyd was
    down runs once when it starts; a run is skipped while a copy of its targets runs."""
    if not NAME_RE.match(name):
        raise UsageProblem(f"{name!r} is not a valid schedule name",
                           "use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                           "letter or digit")
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        paths = [(await c.resolve_any(t, ("set", "group")))[1] for t in targets]
        path = await c.create_schedule(name, spec, paths)
        inv = await c.inventory()
        x = inv.schedules.get(path) or await c.schedule_info(path)
        out.result(schedule_json(x, inv), human=f"created schedule {name}: next run "
                   f"{_local(x.next_run)}", quiet=[name])

    run(ctx, body)


@app.command(name="list")
def list_(ctx: typer.Context,
          names: Annotated[list[str] | None, typer.Argument(...,
              metavar="[SCHEDULE]...", show_default=False,
              help="Schedules to show (default: all).")] = None,
          *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List schedules: state, spec, targets, next run and how the last run went."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        wanted = [(await c.find_schedule(n)).path for n in names or []]
        inv = await c.inventory()
        items = [inv.schedules[p] for p in wanted if p in inv.schedules] if wanted else \
            sorted(inv.schedules.values(), key=lambda x: x.name)
        human = schedules_table(items, inv) if items else \
            "no schedules (ptcopy schedule create makes one)"
        out.result([schedule_json(x, inv) for x in items], human=human,
                   quiet=[x.name for x in items])

    run(ctx, body)


@app.command()
def show(ctx: typer.Context, schedule: ScheduleArg, *,
         count: Annotated[int, typer.Option("--next", "-n", min=1, max=100, metavar="N",
                                            help="How many next runs to show.")] = NEXT_SHOWN,
         json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show a schedule with its next runs."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        x = await c.find_schedule(schedule)
        (runs,) = await c.call(x.path, SCHEDULE, "NextRuns", count)
        nexts = [int(t) for t in runs]
        inv = await c.inventory()
        x = inv.schedules.get(x.path, x)
        out.result(schedule_json(x, inv, nexts), human=schedule_panel(x, inv, nexts),
                   quiet=[str(when(t)) for t in nexts])

    run(ctx, body)


def _each(ctx: typer.Context, names: list[str], member: str, done: str, json_: bool,
          quiet: bool) -> None:
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        for name in names:
            x = await c.find_schedule(name)
            await c.simple(x.path, SCHEDULE, member)
            out.say(f"schedule {x.name} {done}")
        out.result({done.split()[0]: names}, quiet=names)

    run(ctx, body)


@app.command()
def pause(ctx: typer.Context, schedules: SchedulesArg, *, json_: JsonOpt = False,
          quiet: QuietOpt = False) -> None:
    """Pause schedules (a run in progress goes on)."""
    _each(ctx, schedules, "Pause", "paused", json_, quiet)


@app.command()
def resume(ctx: typer.Context, schedules: SchedulesArg, *, json_: JsonOpt = False,
           quiet: QuietOpt = False) -> None:
    """Resume schedules; the next run counts from now (runs missed while paused are not
    made up)."""
    _each(ctx, schedules, "Resume", "resumed", json_, quiet)


@app.command()
def delete(ctx: typer.Context, schedules: SchedulesArg, *, json_: JsonOpt = False,
           quiet: QuietOpt = False) -> None:
    """Delete schedules (their sets stay; a run in progress goes on)."""
    _each(ctx, schedules, "Delete", "deleted", json_, quiet)


@app.command(name="run-now")
def run_now(ctx: typer.Context, schedule: ScheduleArg, *, wait: WaitOpt = None,
            json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Run a schedule now (paused or not): a new point in time onto its least recent
    target. Refused while a copy of its targets runs."""
    out = output(ctx, json_, quiet)
    s = settings(ctx)

    async def body(c: Client) -> None:
        x = await c.find_schedule(schedule)
        (job,) = await c.simple(x.path, SCHEDULE, "RunNow")
        await start_and_follow(c, out, s, str(job), f"run of schedule {x.name}", wait, x.name)

    run(ctx, body)
