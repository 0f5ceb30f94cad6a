"""ptcopy group create|add|remove|rename|delete|list|copy|update, and wait/abort on a group."""

from __future__ import annotations

import pytest

from tests.helpers.cli import Cli

pytestmark = pytest.mark.root


def test_group_lifecycle(cli: Cli) -> None:
    a, b = cli.enable("ga"), cli.enable("gb")
    g = cli.name("grp")
    made = cli.json("group", "create", g, a)
    assert made["name"] == g and made["sets"] == [a] and made["status"] == "normal"
    assert made["job"] is None
    added = cli.json("group", "add", g, b)
    assert sorted(added["sets"]) == sorted([a, b])
    assert cli.status(a)["group"] == g
    listed = {x["name"]: x for x in cli.json("group", "list")}
    assert sorted(listed[g]["sets"]) == sorted([a, b])
    assert g in cli.ok("group", "list", "-q").stdout.split()
    assert g in cli.ok("group", "list", g).stdout

    done = cli.json("group", "update", g, "--to", "shadow", "--wait")
    assert done["operation"] == "group-update-to-shadow" and done["success"] is True
    r = cli.fails(1, "group", "copy", g, "--to", "master")
    assert "--yes" in r.stderr
    done = cli.json("group", "copy", g, "--to", "master", "--yes", "--wait")
    assert done["operation"] == "group-copy-to-master" and done["success"] is True
    job = cli.ok("group", "update", g, "--to", "shadow").stdout.strip()
    (waited,) = cli.json("wait", g)
    assert waited["job"] == job and waited["success"] is True
    assert "nothing to abort" in cli.ok("abort", g).stdout

    g2 = cli.name("grp2")
    assert cli.json("group", "rename", g, g2)["name"] == g2
    assert cli.json("group", "remove", g2, a) == {"removed": [a]}
    assert cli.json("group", "remove", "", b) == {"removed": [b]}   # iiadm's -g ""
    r = cli.fails(2, "group", "remove", "", b)
    assert "not in a group" in r.stderr

    g3 = cli.name("grp3")
    assert cli.json("group", "add", "--create", g3, a)["sets"] == [a]
    c = cli.enable("gc", extra=["--group", g3])
    assert cli.status(c)["group"] == g3
    assert cli.json("group", "delete", g2, g3) == {"deleted": [g2, g3]}
    assert cli.status(c)["group"] is None
    r = cli.fails(2, "group", "list", g2)
    assert f"there is no group named {g2!r}" in r.stderr


def test_group_refusals(cli: Cli) -> None:
    a = cli.enable("ra")
    g = cli.name("rg")
    cli.ok("group", "create", g, a)
    r = cli.fails(2, "group", "create", cli.name("rg2"), a)
    assert "already in group" in r.stderr
    r = cli.fails(2, "group", "create", a)    # the name of a set
    assert "already used" in r.stderr
    r = cli.fails(1, "group", "create", "bad/name")
    assert "not a valid group name" in r.stderr
    r = cli.fails(2, "group", "update", cli.name("nosuch"), "--to", "shadow")
    assert "no group named" in r.stderr
