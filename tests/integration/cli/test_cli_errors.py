"""Bad input: exit codes (1 for the command line, 2 for a failed operation), plain-language
messages, and never a traceback (conftest checks stderr of every run)."""

from __future__ import annotations

import pytest

from tests.helpers.cli import Cli
from tests.helpers.names import KIB, MIB, NOBODY

pytestmark = pytest.mark.root


def test_wrong_kind(cli: Cli) -> None:
    m, s, b = cli.vol("m", 4 * MIB), cli.vol("s", 2 * MIB), cli.vol("b", 256 * KIB)
    r = cli.fails(1, "enable", m, s, b)
    assert "--independent or --dependent" in r.stderr
    r = cli.fails(1, "enable", "--independent", "--dependent", m, s, b)
    assert "--independent or --dependent" in r.stderr
    # only a dependent shadow may be smaller than its master
    r = cli.fails(2, "enable", "--independent", m, s, b, "--name", cli.name("small"))
    assert "hint:" in r.stderr
    name = cli.enable("k")
    g = cli.name("kg")
    cli.ok("group", "create", g)
    r = cli.fails(2, "status", g)
    assert f"{g!r} is a group, not a set" in r.stderr and "ptcopy group" in r.stderr
    r = cli.fails(2, "group", "update", name, "--to", "shadow")
    assert f"{name!r} is a set, not a group" in r.stderr


def test_missing_or_forbidden_volume(cli: Cli) -> None:
    s, b = cli.vol("s", 4 * MIB), cli.vol("b", 256 * KIB)
    missing = str(cli.dir / "nothing-here.img")
    r = cli.fails(2, "enable", "--dependent", missing, s, b, "--name", cli.name("miss"))
    assert f"master volume {missing} does not exist" in r.stderr
    r = cli.fails(2, "enable", "--dependent", "/etc/hostname", s, b, "--name", cli.name("etc"))
    assert "not authorized" in r.stderr and "outside the directories" in r.stderr
    r = cli.fails(2, "enable", "--dependent", s, s, b, "--name", cli.name("same"))
    assert "same volume" in r.stderr
    r = cli.fails(2, "overflow", "attach", missing, cli.enable("x"))
    assert "no overflow volume named" in r.stderr


def test_unknown_set_with_near_matches(cli: Cli) -> None:
    name = cli.enable("near-match")
    r = cli.fails(2, "status", name[:-1] + "x")
    assert f"there is no set named {name[:-1] + 'x'!r}" in r.stderr
    assert f"did you mean {name!r}" in r.stderr
    r = cli.fails(2, "update", "zzzzzzzzzz", "--to", "shadow")
    assert "ptcopy list shows what there is" in r.stderr
    r = cli.fails(2, "wait", "zzzzzzzzzz")
    assert "no set or group named" in r.stderr


def test_bad_command_lines(cli: Cli) -> None:
    name = cli.enable("bad")
    for args in (["nosuchcommand"], ["update", name], ["update", name, "--to", "sideways"],
                 ["enable", "--dependent", "a", "b", "c", "--chunk-size", "3Q"],
                 ["param", name, "--units", "0"], ["status", name, "--all"],
                 ["enable", "--dependent", "a", "b", "c", "--name", "../x"],
                 ["enable", "--dependent", "a", "b"],
                 ["disable"]):
        r = cli.run(*args)
        assert r.returncode == 1, str(r)
        assert r.stdout == "" and r.stderr, str(r)
    r = cli.ok()   # no command: the help, exit 0
    assert "Usage: ptcopy" in r.stdout


def test_unauthorized_user(cli: Cli) -> None:
    name = cli.enable("auth")
    (st,) = cli.json("status", name, user=NOBODY)    # reading needs no rights
    assert st["name"] == name
    r = cli.fails(2, "update", name, "--to", "shadow", user=NOBODY)
    assert "not authorized" in r.stderr and "uid 65534" in r.stderr
    assert "sudo" in r.stderr and "org.ptcopy.imaging.manage" in r.stderr
    m, s, b = cli.vol("nm", MIB), cli.vol("ns", MIB), cli.vol("nb", 256 * KIB)
    r = cli.fails(2, "enable", "--dependent", m, s, b, user=NOBODY)
    assert "not authorized" in r.stderr
    assert cli.status(name)["job"] is None     # nothing happened
