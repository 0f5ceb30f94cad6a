"""The host registry over D-Bus: Manager.AddHost exports a Host object at the path its name
gives, idempotent for the same target, Exists for another; bad names and targets are refused
with nothing added; Remove forgets it; the registry survives a restart; a probe of a host
nobody answers for says why (the SSH-reachable hosts are in tests/remote/test_registry.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ptcopy.remote.targets import host_object_id
from tests.helpers.client import Client, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import IHOST, MANAGER, OM, ROOT

pytestmark = pytest.mark.root


DOWN = "127.0.0.1:1"   # nothing listens on port 1: ssh's connection is refused at once


def hosts_of(objects: dict[str, dict[str, dict[str, object]]]) -> dict[str, dict[str, object]]:
    return {p: ifs[IHOST] for p, ifs in objects.items() if IHOST in ifs}


async def add(client: Client, name: str, target: str) -> str:
    (path,) = await client.ok(ROOT, MANAGER, "AddHost", "ssa{sv}", [name, target, {}])
    return str(path)


@pytest.fixture
def quiet(daemon_factory: Callable[..., Ptcopyd]) -> Ptcopyd:
    """A ptcopyd that probes only when asked."""
    return daemon_factory("--host-probe-interval", "0")


async def test_add_list_remove_and_restart(quiet: Ptcopyd, client: Client) -> None:
    sig = await client.signals(interface=OM, member="InterfacesAdded")
    path = await add(client, "db-1", "admin@db1.example:2222")
    assert path == f"{ROOT}/hosts/{host_object_id('db-1')}" == f"{ROOT}/hosts/db_2d1"
    msg = await sig.wait_for(lambda m: m.body[0] == path)
    assert IHOST in msg.body[1]
    p = await client.props(path, IHOST)
    assert p == {"Name": "db-1", "Target": "admin@db1.example:2222", "Reachable": False,
                 "LastSeen": 0, "Version": "", "Sets": 0, "LastError": ""}
    # the same again: the same object; another target under the name: Exists
    assert await add(client, "db-1", "admin@db1.example:2222") == path
    await client.refused("Exists", ROOT, MANAGER, "AddHost", "ssa{sv}",
                         ["db-1", "db2.example", {}])
    other = await add(client, "web", "web.example")
    assert set(hosts_of(await client.objects())) == {path, other}

    quiet.stop_and_check()
    quiet.start()
    client2 = await Client.connect(quiet.bus.address)
    try:
        got = hosts_of(await client2.objects())
        assert set(got) == {path, other}
        assert got[path]["Target"] == "admin@db1.example:2222" and got[path]["Name"] == "db-1"
        removed = await client2.signals(interface=OM, member="InterfacesRemoved")
        await client2.ok(path, IHOST, "Remove", "a{sv}", [{}])
        await removed.wait_for(lambda m: m.body[0] == path)
        assert set(hosts_of(await client2.objects())) == {other}
        name, _ = await client2.fails(path, IHOST, "Remove", "a{sv}", [{}])
        assert name.startswith("org.freedesktop.DBus.Error.Unknown"), name
    finally:
        client2.disconnect()
    quiet.stop_and_check()
    quiet.start()
    client3 = await Client.connect(quiet.bus.address)
    try:
        assert set(hosts_of(await client3.objects())) == {other}   # the removal stuck
    finally:
        client3.disconnect()


async def test_bad_names_and_targets_add_nothing(quiet: Ptcopyd, client: Client) -> None:
    for name, target, says in [("-x", "h.example", "not a host name"),
                               ("a/b", "h.example", "not a host name"),
                               ("ok", "-oProxyCommand=x", "not a host name or address"),
                               ("ok", "user@", "not a host name or address"),
                               ("ok", "h.example:99999", "not a port"),
                               ("ok", "", "empty")]:
        text = await client.refused("InvalidArgument", ROOT, MANAGER, "AddHost",
                                    "ssa{sv}", [name, target, {}])
        assert says in text, (name, target, text)
    await client.refused("InvalidArgument", ROOT, MANAGER, "AddHost", "ssa{sv}",
                         ["ok", "h.example", {"bogus": u(1)}])
    assert hosts_of(await client.objects()) == {}


async def test_probe_of_an_unreachable_host(quiet: Ptcopyd, client: Client) -> None:
    """Probe returns false and LastError says why, at once and in words; nothing else
    changes (it was never seen)."""
    path = await add(client, "down", DOWN)
    changed = await client.signals(interface="org.freedesktop.DBus.Properties",
                                   member="PropertiesChanged", path=path)
    (ok,) = await client.ok(path, IHOST, "Probe", "a{sv}", [{}], timeout=30)
    assert ok is False
    p = await client.props(path, IHOST)
    assert p["Reachable"] is False and p["LastSeen"] == 0 and p["Version"] == ""
    assert "cannot be reached" in p["LastError"] and "Connection refused" in p["LastError"]
    msg = await changed.wait_for(lambda m: "LastError" in m.body[1])
    assert set(msg.body[1]) == {"LastError"}
    # the same finding again announces nothing
    (ok,) = await client.ok(path, IHOST, "Probe", "a{sv}", [{}], timeout=30)
    assert ok is False
    await client.ping()
    assert len(changed.for_path(path)) == 1


async def test_background_probe_at_add(daemon_factory: Callable[..., Ptcopyd],
                                       client: Client) -> None:
    """With probing on, a new host is probed at once (no Probe call)."""
    daemon_factory("--host-probe-interval", "3600")
    path = await add(client, "down", DOWN)
    err = await client.wait_prop(path, IHOST, "LastError", bool)
    assert "cannot be reached" in err
