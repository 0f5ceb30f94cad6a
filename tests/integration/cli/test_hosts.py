"""ptcopy hosts add|list|remove and list/status --all-hosts against the session's ptcopyd, with
hosts nobody answers for (the SSH-reachable hosts are in tests/remote/test_registry.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.cli import Cli
from tests.helpers.names import NOBODY

pytestmark = pytest.mark.root

DOWN = "127.0.0.1:1"   # nothing listens on port 1: ssh's connection is refused at once


@pytest.fixture
def hosts(cli: Cli) -> Iterator[list[str]]:
    """Names of hosts the test registers; removed afterwards."""
    made: list[str] = []
    yield made
    for n in made:
        cli.run("hosts", "remove", n)


def test_add_list_remove(cli: Cli, hosts: list[str]) -> None:
    name = cli.name("db")
    hosts.append(name)
    got = cli.json("hosts", "add", name, f"admin@{DOWN}")
    assert got["name"] == name and got["target"] == f"admin@{DOWN}"
    assert got["reachable"] is False and got["last_seen"] is None
    # again: the same; another target under the name: refused, saying which it has
    assert cli.json("hosts", "add", name, f"admin@{DOWN}")["object"] == got["object"]
    r = cli.fails(2, "hosts", "add", name, "other.example")
    assert "already a host" in r.stderr and DOWN in r.stderr
    r = cli.fails(2, "hosts", "add", cli.name("x"), "--", "-oProxyCommand=evil")
    assert "not a host name or address" in r.stderr

    listed = {h["name"]: h for h in cli.json("hosts", "list", "--probe")}
    h = listed[name]
    assert h["reachable"] is False and "cannot be reached" in h["last_error"], h
    table = cli.ok("hosts", "list").stdout
    assert name in table and "REACHABLE" in table and "cannot be reached" in table
    assert name in cli.ok("hosts", "list", "-q").stdout.split()

    r = cli.fails(2, "hosts", "add", cli.name("y"), "y.example", user=NOBODY)
    assert "may not add hosts" in r.stderr
    r = cli.fails(2, "hosts", "remove", name, user=NOBODY)
    assert "may not remove hosts" in r.stderr

    cli.ok("hosts", "remove", name)
    hosts.remove(name)
    assert name not in {h["name"] for h in cli.json("hosts", "list")}
    r = cli.fails(2, "hosts", "remove", name)
    assert "no host named" in r.stderr


def test_host_option_resolves_a_registered_name(cli: Cli, hosts: list[str]) -> None:
    """--host NAME goes to the registered target (here: a refused connection, explained)."""
    name = cli.name("gone")
    hosts.append(name)
    cli.ok("hosts", "add", name, DOWN)
    r = cli.fails(2, "--host", name, "status")
    assert "127.0.0.1" in r.stderr and "cannot be reached" in r.stderr, r


def test_all_hosts_marks_an_unreachable_host(cli: Cli, hosts: list[str]) -> None:
    mine = cli.enable("a")
    name = cli.name("down")
    hosts.append(name)
    cli.ok("hosts", "add", name, DOWN)

    r = cli.ok("list", "--all-hosts")
    assert "HOST" in r.stdout and mine in r.stdout
    lines = r.stdout.splitlines()
    assert any(ln.split()[:2] == ["local", mine] for ln in lines), r.stdout
    assert any(ln.startswith(name) and "unreachable" in ln for ln in lines), r.stdout
    assert f"host {name}: unreachable: host {DOWN}: it cannot be reached" in r.stdout, r.stdout

    got = {h["host"]: h for h in cli.json("list", "--all-hosts")}
    assert got["local"]["reachable"] is True and got["local"]["error"] is None
    assert mine in {s["name"] for s in got["local"]["sets"]}
    assert got[name]["reachable"] is False and got[name]["sets"] is None
    assert "cannot be reached" in got[name]["error"]["message"]
    assert got[name]["target"] == DOWN

    st = {h["host"]: h for h in cli.json("status", "--all-hosts")}
    mine_status = next(s for s in st["local"]["sets"] if s["name"] == mine)
    assert "status" in mine_status and "size" in mine_status   # the full status
    assert st[name]["error"] is not None
    text = cli.ok("status", "--all-hosts").stdout
    assert "== host local" in text and f"== host {name} ({DOWN})" in text
    assert "unreachable" in text
    cli.fails(1, "status", "--all-hosts", mine)
