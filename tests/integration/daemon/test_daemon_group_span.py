"""A group that spans hosts, with several local ptcopyd (each on its own private bus, as each
host has its own): IIGroup.Hold/Release and the coordinator ptcopy.cli.span. Writers on every
master; after the point in time the shadows together hold exactly a prefix of what was written,
so nothing written after the cut is in any shadow and nothing acknowledged before it is missing.
A member that cannot take part, or a daemon killed between hold and release, leaves every
other member thawed at its previous point in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ptcopy.cli._client import Client as CliClient
from ptcopy.cli.span import SpanError, span_point_in_time
from ptcopy.engine import Kind, bitmap_size
from tests.helpers.blockio import write_dev
from tests.helpers.bus import PrivateBus
from tests.helpers.chain import ChainWriter, chain_seqs
from tests.helpers.client import Client, Runner
from tests.helpers.daemon import Ptcopyd, finish
from tests.helpers.names import IGROUP, ISET, MIB, ROOT
from tests.integration.daemon import unpriv_client

pytestmark = pytest.mark.root

SIZE = 4 * MIB
SLOT = 4096


@dataclass
class Host:
    label: str
    bus: PrivateBus
    daemon: Ptcopyd
    client: Client           # tests' raw client (root)
    cli: CliClient           # the coordinator's client
    set: str = ""
    group: str = ""
    shadow: str = ""         # the shadow volume's file
    master: str = ""         # the master volume's file
    master_dev: str = ""


@pytest.fixture
def buses() -> Iterator[list[PrivateBus]]:
    made: list[PrivateBus] = []
    yield made
    for b in made:
        b.stop()


@pytest.fixture
def daemons(request: pytest.FixtureRequest) -> Iterator[list[Ptcopyd]]:
    made: list[Ptcopyd] = []
    yield made
    rep = getattr(request.node, "rep_call", None)
    finish(made, check_log=rep is None or rep.passed)


async def _hosts(n: int, tmp_path: Path, buses: list[PrivateBus],
                 daemons: list[Ptcopyd]) -> AsyncIterator[list[Host]]:
    hosts = []
    for i in range(n):
        bus = PrivateBus.start()
        buses.append(bus)
        d = Ptcopyd(bus, tmp_path / f"host{i}")
        daemons.append(d)
        d.start()
        cli = CliClient(bus.address, 20)
        await cli.__aenter__()
        h = Host(f"host{i}", bus, d, await Client.connect(bus.address), cli)
        m, s, b = d.set_volumes(SIZE, kind="independent")
        h.set, job = await h.client.create_set(f"vol{i}", "independent", m, s, b)
        if job != "/":
            await h.client.wait_job(job)
        h.group = await h.client.create_group(f"span{i}", [h.set])
        h.shadow = s
        h.master = m
        h.master_dev = (await h.client.props(h.set, ISET))["MasterDevice"]
        assert h.master_dev.startswith("/dev/loop")
        hosts.append(h)
    try:
        yield hosts
    finally:
        for h in hosts:
            await h.cli.__aexit__(None, None, None)
            h.client.disconnect()


def _members(hosts: list[Host]) -> list[tuple[str, CliClient, str]]:
    return [(h.label, h.cli, h.group) for h in hosts]


def _digest(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_a_point_in_time_across_three_daemons_is_one_cut(
        tmp_path: Path, buses: list[PrivateBus], daemons: list[Ptcopyd], aio: Runner) -> None:
    async for hosts in _hosts(3, tmp_path, buses, daemons):
        w = ChainWriter([h.master_dev for h in hosts], SIZE)
        while w.acked < 20:
            await asyncio.sleep(0.01)
        before = w.acked
        res = await span_point_in_time(_members(hosts), "update", "shadow", 10)
        after = w.started
        assert res.committed == ["host0", "host1", "host2"] and not res.in_doubt
        assert res.window > 0 and all(o.frozen_usec > 0 for o in res.hosts)
        while w.acked < after + 6:   # writers go on after the cut
            await asyncio.sleep(0.01)
        for h, o in zip(hosts, res.hosts, strict=True):
            assert o.job != "/"
            await h.client.wait_job(o.job)
        w.end()
        got = sorted(k for i, h in enumerate(hosts) for k in chain_seqs(h.shadow, i, 3, SIZE))
        cut = len(got)
        assert got == list(range(1, cut + 1)), f"not one cut: {got}"
        assert before <= cut <= after, (before, cut, after)


async def test_a_member_that_cannot_take_part_thaws_every_other(
        tmp_path: Path, buses: list[PrivateBus], daemons: list[Ptcopyd], aio: Runner) -> None:
    async for hosts in _hosts(3, tmp_path, buses, daemons):
        w = ChainWriter([h.master_dev for h in hosts], SIZE)
        while w.acked < 9:
            await asyncio.sleep(0.01)
        shadows = [_digest(h.shadow) for h in hosts]
        locker = await Client.connect(hosts[2].bus.address)   # the lock keeps host2 out
        await locker.set_call(hosts[2].set, "Lock")
        with pytest.raises(SpanError) as e:
            await span_point_in_time(_members(hosts), "update", "shadow", 10)
        assert "host2" in e.value.message and "locked" in e.value.message, e.value.message
        res = e.value.result
        assert not res.committed and [o.held for o in res.hosts] == [True, True, False]
        mark = w.acked
        while w.acked < mark + 6:   # every master writable again
            await asyncio.sleep(0.01)
        w.end()
        for h, before in zip(hosts, shadows, strict=True):
            assert _digest(h.shadow) == before
            assert (await h.client.props(h.set, ISET))["Job"] == "/"
        locker.disconnect()


class KillsAfterHold(CliClient):
    """A coordinator's client whose host dies right after answering its Hold."""

    daemon: Ptcopyd

    async def group_hold(self, path: str, operation: str, direction: str, timeout: float, *,
                         confirm: bool = False) -> str:
        token = await super().group_hold(path, operation, direction, timeout, confirm=confirm)
        self.daemon.kill()
        return token


async def test_a_daemon_killed_between_hold_and_release(
        tmp_path: Path, buses: list[PrivateBus], daemons: list[Ptcopyd], aio: Runner) -> None:
    async for hosts in _hosts(2, tmp_path, buses, daemons):
        for h in hosts:
            write_dev(h.master_dev, 0, b"\x01" * SLOT)
        shadows = [_digest(h.shadow) for h in hosts]
        dying = KillsAfterHold(hosts[1].bus.address, 20)
        dying.daemon = hosts[1].daemon
        await dying.__aenter__()
        members = [(hosts[0].label, hosts[0].cli, hosts[0].group),
                   (hosts[1].label, dying, hosts[1].group)]
        with pytest.raises(SpanError) as e:
            await span_point_in_time(members, "update", "shadow", 10)
        await dying.__aexit__(None, None, None)
        res = e.value.result
        assert "host1" in e.value.message
        assert res.hosts[0].committed is False and res.hosts[1].committed is not True
        write_dev(hosts[0].master_dev, SLOT, b"\x02" * SLOT)   # thawed
        assert _digest(hosts[0].shadow) == shadows[0]
        assert _digest(hosts[1].shadow) == shadows[1]
        daemons.remove(hosts[1].daemon)
        hosts[1].daemon.cleanup()


async def test_hold_refusals_timeout_and_a_client_that_leaves(
        tmp_path: Path, buses: list[PrivateBus], daemons: list[Ptcopyd], aio: Runner) -> None:
    async for hosts in _hosts(1, tmp_path, buses, daemons):
        h = hosts[0]
        shadow = _digest(h.shadow)
        token = await h.cli.group_hold(h.group, "update", "shadow", 30)
        await h.client.refused("Busy", h.group, IGROUP, "Hold", "ssda{sv}",
                               ["update", "shadow", 5.0, {}])
        await h.client.refused("Busy", h.set, ISET, "Update", "sa{sv}", ["shadow", {}])
        await h.client.refused("Busy", h.group, IGROUP, "RemoveSet", "oa{sv}", [h.set, {}])
        await h.client.refused("NotAuthorized", h.group, IGROUP, "Release", "sba{sv}",
                               [token, True, {}])
        job, frozen = await h.cli.group_release(h.group, token, False)
        assert job == "/" and frozen > 0
        await h.client.refused("NotFound", h.group, IGROUP, "Release", "sba{sv}",
                               [token, False, {}])

        token = await h.cli.group_hold(h.group, "update", "shadow", 0.5)
        await asyncio.to_thread(write_dev, h.master_dev, 0, b"\x03" * SLOT)  # thaws at 0.5 s
        await asyncio.sleep(1)   # the daemon's record expires too
        with pytest.raises(Exception, match="not released within") as e:
            await h.cli.group_release(h.group, token, True)
        assert "Timeout" in str(getattr(e.value, "error_name", "")), e.value
        assert _digest(h.shadow) == shadow
        await h.client.refused("InvalidArgument", h.group, IGROUP, "Hold", "ssda{sv}",
                               ["update", "shadow", 31.0, {}])
        await h.client.refused("InvalidArgument", h.group, IGROUP, "Hold", "ssda{sv}",
                               ["snapshot", "shadow", 5.0, {}])

        # a coordinator that leaves the bus: thawed at once, long before the 30 s timeout
        other = await Client.connect(h.bus.address)
        await other.ok(h.group, IGROUP, "Hold", "ssda{sv}", ["update", "shadow", 30.0, {}])
        writer = asyncio.create_task(asyncio.to_thread(write_dev, h.master_dev, 0,
                                                       b"\x04" * SLOT))
        await asyncio.sleep(0.3)
        assert not writer.done()
        other.disconnect()
        await asyncio.wait_for(writer, 10)
        assert _digest(h.shadow) == shadow

        # commit over D-Bus: a job, the freeze reported
        token = await h.cli.group_hold(h.group, "update", "shadow", 10)
        job, frozen = await h.cli.group_release(h.group, token, True)
        assert job != "/" and frozen > 0
        await h.client.wait_job(job)
        with open(h.shadow, "rb") as f:
            assert f.read(SLOT) == b"\x04" * SLOT

        # uid 65534 may neither hold nor release
        res = unpriv_client.as_nobody(h.bus.address, [
            {"path": h.group, "iface": IGROUP, "member": "Hold", "sig": "ssda{sv}",
             "body": ["update", "shadow", 5.0, {}]},
            {"path": h.group, "iface": IGROUP, "member": "Release", "sig": "sba{sv}",
             "body": [token, False, {}]}])
        assert all(r["error"].endswith("NotAuthorized") for r in res), res


async def test_hosts_are_recorded_and_survive_a_restart(
        tmp_path: Path, buses: list[PrivateBus], daemons: list[Ptcopyd], aio: Runner) -> None:
    async for hosts in _hosts(1, tmp_path, buses, daemons):
        h = hosts[0]
        assert await h.client.get(h.group, IGROUP, "Hosts") == []
        await h.client.ok(h.group, IGROUP, "SetHosts", "asa{sv}",
                          [["db2", "admin@10.0.0.7:2222"], {}])
        assert (await h.cli.group_info(h.group)).hosts == ("db2", "admin@10.0.0.7:2222")
        await h.client.refused("InvalidArgument", h.group, IGROUP, "SetHosts", "asa{sv}",
                               [["-oProxyCommand=x"], {}])
        g2 = await h.cli.create_group("span-b", [], hosts=["db3"])
        assert await h.client.get(g2, IGROUP, "Hosts") == ["db3"]
        assert h.daemon.stop() == 0
        h.daemon.start()
        again = await Client.connect(h.bus.address)
        try:
            assert await again.get(h.group, IGROUP, "Hosts") == ["db2", "admin@10.0.0.7:2222"]
            (path,) = await again.ok(ROOT, "org.ptcopy.Imaging1.Manager", "LookUp", "s",
                                     ["span-b"])
            assert await again.get(path, IGROUP, "Hosts") == ["db3"]
        finally:
            again.disconnect()


async def test_a_copy_waiting_at_a_frozen_gate_does_not_block_the_release(
        tmp_path: Path, buses: list[PrivateBus], daemons: list[Ptcopyd], aio: Runner) -> None:
    """A sibling set (same master, not in the group) updated during the hold waits at the
    frozen gate holding the daemon's service lock; the release must still get through."""
    async for hosts in _hosts(1, tmp_path, buses, daemons):
        h = hosts[0]
        d = h.daemon
        sib, _ = await h.client.create_set(
            "sibling", "dependent", h.master, d.volume(SIZE),
            d.volume(bitmap_size(SIZE, SIZE, 0, Kind.DEPENDENT)))
        token = await h.cli.group_hold(h.group, "update", "shadow", 30)
        other = await Client.connect(h.bus.address)
        waiting = asyncio.create_task(other.set_call(sib, "Update", "sa{sv}", ["shadow", {}]))
        await asyncio.sleep(0.3)
        assert not waiting.done()   # at the gate, holding the service lock
        job, frozen = await asyncio.wait_for(h.cli.group_release(h.group, token, True), 20)
        assert frozen > 0
        if job != "/":
            await h.client.wait_job(job)
        (sib_job,) = await asyncio.wait_for(waiting, 20)
        if sib_job != "/":
            await h.client.wait_job(sib_job)
        other.disconnect()


class SlowAnswer(CliClient):
    """A coordinator's client whose host answers its Hold too late (a slow link)."""

    async def group_hold(self, path: str, operation: str, direction: str, timeout: float, *,
                         confirm: bool = False) -> str:
        token = await super().group_hold(path, operation, direction, timeout, confirm=confirm)
        await asyncio.sleep(timeout)
        return token


async def test_a_host_too_slow_to_hold_thaws_every_host(
        tmp_path: Path, buses: list[PrivateBus], daemons: list[Ptcopyd], aio: Runner) -> None:
    async for hosts in _hosts(2, tmp_path, buses, daemons):
        for h in hosts:
            write_dev(h.master_dev, 0, b"\x05" * SLOT)
        shadows = [_digest(h.shadow) for h in hosts]
        slow = SlowAnswer(hosts[1].bus.address, 20)
        await slow.__aenter__()
        members = [(hosts[0].label, hosts[0].cli, hosts[0].group),
                   (hosts[1].label, slow, hosts[1].group)]
        with pytest.raises(SpanError) as e:
            await span_point_in_time(members, "update", "shadow", 1)
        assert "host1: no answer in time" in e.value.message, e.value.message
        assert "thaws by itself within 1 s" in e.value.message, e.value.message
        assert [o.committed for o in e.value.result.hosts] == [False, False]
        # host1 held all the same: its own watchdog thaws it
        await asyncio.to_thread(write_dev, hosts[1].master_dev, SLOT, b"\x06" * SLOT)
        await asyncio.to_thread(write_dev, hosts[0].master_dev, SLOT, b"\x06" * SLOT)
        for h, before in zip(hosts, shadows, strict=True):
            assert _digest(h.shadow) == before
        await slow.__aexit__(None, None, None)
