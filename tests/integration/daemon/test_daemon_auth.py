"""Authorization: a second uid may introspect and read everything, and every mutating method
of the contract is refused with NotAuthorized; the bus policy lets only root own the name."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from dbus_fast import introspection as intr
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, method

from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client, plain
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import (
    BUS_NAME,
    CONTRACT,
    DBUS,
    ERR,
    IFACE,
    IGROUP,
    IJOB,
    IOVERFLOW,
    ISET,
    MANAGER,
    MIB,
    NOBODY,
    OM,
    PROPS,
    ROOT,
)
from tests.integration.daemon import unpriv_client

pytestmark = pytest.mark.root

READS = {("Manager", "LookUp"), ("Manager", "Candidates"), ("Job", "Wait"),
         ("Schedule", "NextRuns"), ("Host", "Probe")}


def as_nobody(bus: PrivateBus, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make the calls with dbus-fast in a process running as uid 65534."""
    return unpriv_client.as_nobody(bus.address, calls)


async def world(client: Client, d: Ptcopyd) -> dict[str, str]:
    """A set in a group, a second set, an overflow volume, a finished job and a schedule."""
    m, s, b = d.set_volumes(4 * MIB)
    set1, _ = await client.create_set("one", "dependent", m, s, b)
    m, s, b = d.set_volumes(4 * MIB)
    set2, _ = await client.create_set("two", "dependent", m, s, b)
    group = await client.create_group("grp", [set1])
    (ov,) = await client.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}",
                            [d.volume(2 * MIB), {}])
    job = await client.update(set1)
    await client.wait_job(job)
    (sched,) = await client.ok(ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                               ["sched", "daily", [set1], {}])
    (host,) = await client.ok(ROOT, MANAGER, "AddHost", "ssa{sv}", ["h", "127.0.0.1:1", {}])
    await client.ok(host, IFACE + ".Host", "Probe", "a{sv}", [{}])   # its finding is stable
    return {"Manager": ROOT, "IISet": set1, "IIGroup": group, "IIOverflow": ov, "Job": job,
            "set2": set2, "Schedule": sched, "Host": host}


def argument(name: str, sig: str, w: dict[str, str], d: Ptcopyd) -> Any:
    """A valid value for each argument of the contract, so only authorization can refuse."""
    by_name: dict[str, Any] = {
        "options": {}, "name": "newname", "kind": "dependent", "direction": "shadow",
        "master": str(d.vol_dir / "free-m.img"), "shadow": str(d.vol_dir / "free-s.img"),
        "bitmap": str(d.vol_dir / "free-b.img"), "path": str(d.vol_dir / "free-ov.img"),
        "sets": [w["set2"]], "overflow": w["IIOverflow"], "member": w["set2"],
        "delay": 1, "units": 2, "timeout": 0.5, "role": "shadow",
        "spec": "hourly", "targets": [w["set2"]], "count": 3, "target": "other.example",
        "operation": "update", "token": "0" * 32, "commit": False, "hosts": ["other-host"],
    }
    assert name in by_name, f"the test does not know argument {name} ({sig}) yet"
    return by_name[name]


async def test_second_uid_reads_but_cannot_change_anything(
        ptcopyd: Ptcopyd, client: Client, system_bus: PrivateBus) -> None:
    w = await world(client, ptcopyd)
    for f in ("free-m.img", "free-s.img", "free-ov.img"):
        ptcopyd.volume(4 * MIB, f)
    ptcopyd.volume(64 * 1024, "free-b.img")
    before = await client.objects()

    contract = intr.Node.parse(CONTRACT.read_text())
    reads: list[dict[str, Any]] = [
        {"path": ROOT, "iface": OM, "member": "GetManagedObjects"},
        {"path": ROOT, "iface": "org.freedesktop.DBus.Introspectable", "member": "Introspect"},
        {"path": ROOT, "iface": "org.freedesktop.DBus.Peer", "member": "Ping"},
    ]
    for path, ifs in before.items():
        for iface in ifs:
            reads.append({"path": path, "iface": PROPS, "member": "GetAll", "sig": "s",
                          "body": [iface]})
            for prop in ifs[iface]:
                reads.append({"path": path, "iface": PROPS, "member": "Get", "sig": "ss",
                              "body": [iface, prop]})
    mutations: list[dict[str, Any]] = []
    for iface in contract.interfaces:
        short = iface.name.removeprefix(IFACE + ".")
        for m in iface.methods:
            call = {"path": w[short], "iface": iface.name, "member": m.name,
                    "sig": m.in_signature,
                    "body": [argument(a.name or "", a.signature, w, ptcopyd) for a in m.in_args]}
            (reads if (short, m.name) in READS else mutations).append(call)
    assert len(mutations) >= 25, "the contract lost its mutating methods?"

    results = as_nobody(system_bus, reads + mutations)
    for call, res in zip(reads, results[:len(reads)], strict=True):
        if call["member"] == "Candidates":   # about files in a directory 65534 cannot search
            assert res["error"] == ERR + "NotFound" and "can see" in res["text"], res
            continue
        assert res["ok"], f"uid {NOBODY} could not read: {call} -> {res}"
    got_objects = results[0]["body"][0]
    assert set(got_objects) == set(before)
    refused = []
    for call, res in zip(mutations, results[len(reads):], strict=True):
        if res["error"] != ERR + "NotAuthorized":
            refused.append(f"{call['iface']}.{call['member']}: {res}")
        else:
            assert "65534" in res["text"] and "org.ptcopy.imaging.manage" in res["text"], res
    assert not refused, "mutations not refused with NotAuthorized:\n" + "\n".join(refused)

    # nothing changed
    after = await client.objects()
    assert after == before
    await client.assert_refresh_zero()


def test_second_uid_with_real_clients(ptcopyd: Ptcopyd, system_bus: PrivateBus) -> None:
    """busctl and gdbus as uid 65534: reads work, a mutation gets the named refusal."""
    bus = system_bus
    r = bus.busctl("get-property", BUS_NAME, ROOT, MANAGER, "DataPath", uid=NOBODY)
    assert r.stdout.strip() == 's "userspace"'
    r = bus.gdbus("call", "--dest", BUS_NAME, "--object-path", ROOT, "--method",
                  OM + ".GetManagedObjects", uid=NOBODY)
    assert r.stdout.startswith("(")
    m, s, b = ptcopyd.set_volumes(4 * MIB)
    r = bus.gdbus("call", "--dest", BUS_NAME, "--object-path", ROOT, "--method",
                  MANAGER + ".CreateSet", "x", "dependent", m, s, b, "{}", uid=NOBODY,
                  check=False)
    assert r.returncode != 0
    assert f"GDBus.Error:{ERR}NotAuthorized" in r.stderr, r.stderr
    r = bus.busctl("call", BUS_NAME, ROOT, MANAGER, "CreateGroup", "saoa{sv}", "g", "0", "0",
                   uid=NOBODY, check=False)
    assert r.returncode != 0 and "may not create groups" in r.stderr, r.stderr
    r = bus.busctl("call", BUS_NAME, ROOT, MANAGER, "LookUp", "s", "x", uid=NOBODY)
    assert r.stdout.strip() == 'o "/"'
    assert bus.busctl("call", BUS_NAME, ROOT, MANAGER, "Refresh", "a{sv}", "0").stdout.strip() \
        == "u 0"


def test_bus_policy_lets_only_root_own_the_name(ptcopyd: Ptcopyd,
                                                system_bus: PrivateBus) -> None:
    """The shipped policy: uid 65534 can neither own org.ptcopy.Imaging1 nor another name."""
    for name in (BUS_NAME, "org.ptcopy.Imaging1.Fake"):
        res = as_nobody(system_bus, [{"dest": DBUS, "path": "/org/freedesktop/DBus",
                                      "iface": DBUS, "member": "RequestName", "sig": "su",
                                      "body": [name, 4]}])[0]
        assert res["error"] == "org.freedesktop.DBus.Error.AccessDenied", res
    assert ptcopyd.proc is not None and system_bus.owner_pid() == ptcopyd.proc.pid


async def test_objects_point_at_each_other(ptcopyd: Ptcopyd, client: Client) -> None:
    """Jobs record who started them; sets, groups and overflow volumes name each other."""
    w = await world(client, ptcopyd)
    p = await client.props(w["Job"], IJOB)
    assert p["StartedByUID"] == 0
    assert (await client.get(w["IIGroup"], IGROUP, "Sets")) == [w["IISet"]]
    assert (await client.get(w["IIOverflow"], IOVERFLOW, "Sets")) == []
    assert (await client.get(w["IISet"], ISET, "Group")) == w["IIGroup"]
    await client.assert_refresh_zero()


Subject = Annotated[tuple[str, dict[str, Any]], DBusSignature("(sa{sv})")]
Details = Annotated[dict[str, str], DBusSignature("a{ss}")]
AuthResult = Annotated[tuple[bool, bool, dict[str, str]], DBusSignature("(bba{ss})")]


class FakePolkit(ServiceInterface):
    """org.freedesktop.PolicyKit1.Authority that answers from a table and records the asks."""

    def __init__(self) -> None:
        super().__init__("org.freedesktop.PolicyKit1.Authority")
        self.allow = False
        self.asked: list[tuple[Any, str, int]] = []

    @method()
    def CheckAuthorization(self, subject: Subject, action_id: DBusStr, details: Details,
                           flags: DBusUInt32, cancellation_id: DBusStr) -> AuthResult:
        self.asked.append((plain(subject), action_id, flags))
        return (self.allow, False, {})


async def test_polkit_decides_for_other_uids(ptcopyd: Ptcopyd, client: Client,
                                             system_bus: PrivateBus) -> None:
    """With polkit on the bus, a second uid may mutate when polkit grants
    org.ptcopy.imaging.manage for its bus name (asked without user interaction)."""
    polkit_bus = await MessageBus(bus_address=system_bus.address).connect()
    fake = FakePolkit()
    try:
        polkit_bus.export("/org/freedesktop/PolicyKit1/Authority", fake)
        await polkit_bus.request_name("org.freedesktop.PolicyKit1")
        m, s, b = ptcopyd.set_volumes(4 * MIB)
        set_path, _ = await client.create_set("pk", "dependent", m, s, b)
        calls = [{"path": ROOT, "iface": MANAGER, "member": "CreateGroup", "sig": "saoa{sv}",
                  "body": ["pkgroup", [], {}]},
                 {"path": set_path, "iface": ISET, "member": "Update", "sig": "sa{sv}",
                  "body": ["shadow", {}]}]
        refused = await asyncio.to_thread(as_nobody, system_bus, calls)
        assert [r["error"] for r in refused] == [ERR + "NotAuthorized"] * 2, refused
        assert len(fake.asked) == 2
        subject, action, flags = fake.asked[0]
        assert subject[0] == "system-bus-name" and subject[1]["name"].startswith(":"), subject
        assert action == "org.ptcopy.imaging.manage"
        assert flags == 0, "polkit asked to interact with the user: a headless caller hangs"

        fake.allow = True
        granted = await asyncio.to_thread(as_nobody, system_bus, calls)
        assert all(r["ok"] for r in granted), granted
        group, job = granted[0]["body"][0], granted[1]["body"][0]
        assert (await client.get(group, IGROUP, "Name")) == "pkgroup"
        p = await client.wait_job(job)
        assert p["StartedByUID"] == NOBODY and p["Success"] is True, p
    finally:
        polkit_bus.disconnect()
    await client.assert_refresh_zero()
