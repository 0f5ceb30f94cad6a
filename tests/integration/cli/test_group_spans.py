"""ptcopy group create --spans, group spans: the hosts a group spans, as ptcopyd records them
(the point in time across hosts itself: tests/integration/daemon/test_daemon_group_span.py)."""

from __future__ import annotations

import pytest

from tests.helpers.cli import Cli

pytestmark = pytest.mark.root


def test_the_hosts_a_group_spans(cli: Cli) -> None:
    a = cli.enable("sa")
    g = cli.name("spg")
    made = cli.json("group", "create", g, a, "--spans", "db2", "--spans", "admin@db3:2222")
    assert made["hosts"] == ["db2", "admin@db3:2222"]
    table = cli.ok("group", "list", g).stdout
    assert "ALSO ON" in table and "admin@db3:2222" in table
    assert cli.json("group", "spans", g, "db4") == {"group": g, "hosts": ["db4"]}
    r = cli.fails(2, "group", "spans", g, "db 4")
    assert "is not a host" in r.stderr
    r = cli.fails(2, "group", "spans", g, "db4", "db4")
    assert "named twice" in r.stderr
    assert "this host only" in cli.ok("group", "spans", g).stdout
    done = cli.json("group", "update", g, "--to", "shadow", "--wait")   # local again
    assert done["operation"] == "group-update-to-shadow" and done["success"] is True
