"""The host registry without D-Bus (ptcopy.daemon.service.hosts on a real state store): what it
accepts and refuses, what a probe's finding changes, and that it all survives a reopen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.service.hosts import Hosts, ProbeResult, probe
from ptcopy.daemon.state import Store
from ptcopy.errnames import ErrorName


def test_add_refuse_record_remove_and_reopen(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    hosts = Hosts(store)
    assert hosts.add("db1", "admin@db1.example:2222") is True
    assert hosts.add("db1", "admin@db1.example:2222") is False   # the same again: nothing new
    with pytest.raises(ServiceError) as e:
        hosts.add("db1", "db2.example")
    assert e.value.name is ErrorName.EXISTS and "admin@db1.example:2222" in e.value.message
    for name, target in [("-db", "x"), ("db/2", "x"), ("ok", "-oProxyCommand=x"),
                         ("ok", "h:0"), ("ok", "")]:
        with pytest.raises(ServiceError) as e:
            hosts.add(name, target)
        assert e.value.name is ErrorName.INVALID_ARGUMENT, (name, target)
    assert set(hosts.rows) == {"db1"}

    row = hosts.rows["db1"]
    assert row.added > 0 and row.last_seen == 0 and hosts.reachable.get("db1") is None
    assert hosts.record("db1", row.target, ProbeResult(True, "1.2", 7))
    seen = hosts.rows["db1"]
    assert hosts.reachable["db1"] is True and seen.version == "1.2" and seen.sets == 7
    assert seen.last_seen >= row.added and seen.last_error == ""
    # a failed probe keeps what was last seen, and says why
    assert hosts.record("db1", row.target, ProbeResult(False, error="host db1: gone"))
    failed = hosts.rows["db1"]
    assert hosts.reachable["db1"] is False and failed.last_error == "host db1: gone"
    assert (failed.last_seen, failed.version, failed.sets) == (seen.last_seen, "1.2", 7)
    # a finding about another target (re-registered meanwhile) is dropped
    assert not hosts.record("db1", "elsewhere", ProbeResult(True, "9", 1))
    assert not hosts.record("gone", "x", ProbeResult(True, "9", 1))
    store.close()

    store = Store(str(tmp_path))
    again = Hosts(store)
    assert again.rows == {"db1": failed} and again.reachable == {}
    again.remove("db1")
    with pytest.raises(ServiceError) as e:
        again.remove("db1")
    assert e.value.name is ErrorName.NOT_FOUND
    store.close()
    assert Hosts(Store(str(tmp_path))).rows == {}


def test_a_probe_never_raises() -> None:
    """A target that cannot be parsed, and one that does not answer: a finding each."""
    bad = asyncio.run(probe("-x"))
    assert not bad.reachable and "not a host name" in bad.error
    down = asyncio.run(probe("127.0.0.1:1"))
    assert not down.reachable and "127.0.0.1" in down.error, down
