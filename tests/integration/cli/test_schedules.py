"""ptcopy schedule create|list|show|pause|resume|run-now|delete against the session's ptcopyd
(the real clock: runs are started with run-now; the clock-driven runs, restart and catch-up are
in tests/integration/daemon/test_daemon_schedules.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.helpers.cli import Cli
from tests.helpers.names import KIB, MIB

pytestmark = pytest.mark.root


def _rotation(cli: Cli, what: str, n: int) -> list[str]:
    """n dependent sets on one master; their names."""
    m = cli.vol(f"{what}-m", 4 * MIB)
    names = []
    for i in range(n):
        name = cli.name(f"{what}{i}")
        cli.ok("enable", "--dependent", m, cli.vol(f"{what}{i}-s", 4 * MIB),
               cli.vol(f"{what}{i}-b", 256 * KIB), "--name", name, "--no-loop", "--quiet")
        names.append(name)
    return names


def _t(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_schedule_lifecycle(cli: Cli) -> None:
    sets = _rotation(cli, "rot", 3)
    hourly = cli.name("hourly")
    made = cli.json("schedule", "create", hourly, "every 1h", *sets)
    assert made["name"] == hourly and made["targets"] == sets and made["enabled"] is True
    assert made["spec"] == "every 1h" and made["last_run"] is None and made["last_job"] is None
    shown = cli.json("schedule", "show", hourly, "--next", "3")
    runs = [_t(t) for t in shown["next_runs"]]
    assert len(runs) == 3 and runs[0] == _t(shown["next_run"])
    assert runs[1] - runs[0] == runs[2] - runs[1] == timedelta(hours=1)

    weekdays = cli.name("weekdays")
    assert "created schedule" in cli.ok("schedule", "create", weekdays, "Mon..Fri 02:00",
                                        sets[0]).stdout
    for t in cli.json("schedule", "show", weekdays, "-n", "7")["next_runs"]:
        local = _t(t).astimezone()
        assert local.weekday() < 5 and (local.hour, local.minute) == (2, 0), local
    text = cli.ok("schedule", "show", weekdays).stdout
    assert "next runs" in text and "Mon..Fri 02:00" in text
    listed = {x["name"]: x for x in cli.json("schedule", "list")}
    assert {hourly, weekdays} <= set(listed) and listed[weekdays]["targets"] == [sets[0]]
    assert hourly in cli.ok("schedule", "list", "-q").stdout.split()

    # run-now: each run onto the least recent shadow of the rotation, as a job
    for expected in sets[:2]:
        done = cli.json("schedule", "run-now", hourly, "--wait")
        assert done["success"] is True and done["operation"] == "update-to-shadow", done
        cli.until(lambda e=expected: str(cli.json("schedule", "show", hourly)["last_result"])
                  .startswith(f"done: set {e} "))
    x = cli.json("schedule", "show", hourly)
    assert x["last_run"] is not None and x["last_job"] == done["job"], (x, done)

    assert cli.json("schedule", "pause", hourly) == {"paused": [hourly]}
    x = cli.json("schedule", "show", hourly)
    assert x["enabled"] is False and x["next_run"] is None and x["next_runs"] == []
    assert "paused" in cli.ok("schedule", "list", hourly).stdout
    assert cli.json("schedule", "resume", hourly) == {"resumed": [hourly]}
    assert cli.json("schedule", "show", hourly)["enabled"] is True

    # a group: every member updated at one point in time
    g = cli.name("grp")
    cli.ok("group", "create", g, *sets[1:])
    grouped = cli.name("grouped")
    assert cli.json("schedule", "create", grouped, "daily", g)["targets"] == [g]
    done = cli.json("schedule", "run-now", grouped, "--wait")
    assert done["success"] is True and done["operation"] == "group-update-to-shadow", done
    cli.until(lambda: str(cli.json("schedule", "show", grouped)["last_result"])
              .startswith(f"done: group {g} "))

    assert cli.json("schedule", "delete", hourly, weekdays, grouped) == \
        {"deleted": [hourly, weekdays, grouped]}
    r = cli.fails(2, "schedule", "show", hourly)
    assert f"there is no schedule named {hourly!r}" in r.stderr
    assert "ptcopy schedule list" in r.stderr


def test_schedule_refusals(cli: Cli) -> None:
    sets = _rotation(cli, "ref", 2)
    other = cli.enable("other")
    g = cli.name("emptygroup")
    cli.ok("group", "create", g)
    cases = [
        (["bogus spec"], "not a systemd calendar expression"),
        (["every soon"], "not a time span"),
        (["2001-01-01"], "never elapses"),
    ]
    for n, (spec, words) in enumerate(cases):
        r = cli.fails(2, "schedule", "create", cli.name(f"bad{n}"), *spec, *sets)
        assert words in r.stderr, r.stderr
    r = cli.fails(2, "schedule", "create", cli.name("mix"), "hourly", sets[0], other)
    assert "different masters" in r.stderr, r.stderr
    r = cli.fails(2, "schedule", "create", cli.name("nosuch"), "hourly", cli.name("nosuch"))
    assert "there is no set or group named" in r.stderr, r.stderr
    r = cli.fails(2, "schedule", "create", cli.name("empty"), "hourly", g)
    assert "has no sets" in r.stderr, r.stderr
    r = cli.fails(1, "schedule", "create", "bad name", "hourly", sets[0])
    assert "not a valid schedule name" in r.stderr, r.stderr
    assert not [x for x in cli.json("schedule", "list") if x["name"].startswith(cli.prefix)]


def test_schedule_runs_on_the_system_clock(cli: Cli) -> None:
    """The real clock: a schedule every second runs by itself, onto each shadow in turn."""
    sets = _rotation(cli, "clk", 2)
    fast = cli.name("fast")
    cli.ok("schedule", "create", fast, "every 1s", *sets)
    for name in sets:
        cli.until(lambda n=name: str(cli.json("schedule", "show", fast)["last_result"])
                  .startswith(f"done: set {n} "), timeout=30)
    assert cli.json("schedule", "pause", fast) == {"paused": [fast]}
    x = cli.json("schedule", "show", fast)
    assert x["last_run"] is not None and x["last_job"] is not None and x["next_run"] is None
    cli.ok("schedule", "delete", fast)
