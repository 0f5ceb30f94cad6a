"""Volume discovery against real devices: loop devices attached and detached during the test
(real kernel uevents; through systemd-udevd where it runs), partitions, mounts, a set whose
shadow device is removed and comes back, and the udev rule of packaging/ run by udevd."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from ptcopy.daemon.discovery import udevd_running
from tests.helpers.blockio import same_content, write_dev
from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import IGROUP, ISET, IVOLUME, MANAGER, MIB, OM, REPO, ROOT
from tests.helpers.udev import Loops, Udevd

pytestmark = pytest.mark.root

RULES = REPO / "packaging" / "99-ptcopy.rules"
PROMPT = 1.0   # seconds within which an event must show on the bus


async def volumes(client: Client) -> dict[str, dict[str, Any]]:
    """Volume properties by Path."""
    objs = await client.objects()
    return {ifs[IVOLUME]["Path"]: {**ifs[IVOLUME], "object": p}
            for p, ifs in objs.items() if IVOLUME in ifs}


async def wait_volume(client: Client, path: str, present: bool = True, timeout: float = 5,
                      **want: Any) -> tuple[float, dict[str, Any] | None]:
    """Wait until the volume at ``path`` is there (with these properties) or gone; how long it
    took and its properties."""
    t0 = time.monotonic()
    while True:
        v = (await volumes(client)).get(path)
        ok = v is not None and all(v[k] == w for k, w in want.items()) if present else v is None
        if ok:
            return time.monotonic() - t0, v
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"volume {path}: wanted present={present} {want}, have {v}")
        await asyncio.sleep(0.05)


@pytest.fixture(params=["kernel", "udev"])
def source(request: pytest.FixtureRequest) -> str:
    if request.param == "udev":
        request.getfixturevalue("udevd")
    elif udevd_running():
        pytest.skip("systemd-udevd runs on this machine: kernel-only mode is not reachable")
    return str(request.param)


async def test_loop_devices_come_and_go(source: str, ptcopyd: Ptcopyd, client: Client,
                                        loops: Loops) -> None:
    """A loop device attached shows as a Volume (type, size, file system) within a second;
    detached, it goes within a second; InterfacesAdded/Removed come from the root."""
    sig = await client.signals(interface=OM)
    img = loops.file(24 * MIB, ext4=True)
    dev = loops.attach(img)
    took, v = await wait_volume(client, dev, Type="loop")
    assert took < PROMPT, f"{dev} took {took:.2f}s to appear ({source} events)"
    assert v is not None
    assert v["Size"] == 24 * MIB and v["FsType"] == "ext4" and v["Mounted"] is False
    assert v["Available"] is True and v["Unsuitable"] == "" and v["UsedBy"] == "/"
    assert v["object"] == f"{ROOT}/volumes/dev_{os.path.basename(dev)}"   # stable id
    await sig.wait_for(lambda m: m.member == "InterfacesAdded" and m.body[0] == v["object"])

    loops.detach(dev)
    took, _ = await wait_volume(client, dev, present=False)
    assert took < PROMPT, f"{dev} took {took:.2f}s to go ({source} events)"
    await sig.wait_for(lambda m: m.member == "InterfacesRemoved" and m.body[0] == v["object"])
    assert all(m.path == ROOT for m in sig.for_path(ROOT)) and not sig.for_path(v["object"])
    await client.assert_refresh_zero()


async def test_partitions_and_their_disk(ptcopyd: Ptcopyd, client: Client,
                                         loops: Loops) -> None:
    img = loops.file(32 * MIB, table="label: dos\n,12M\n,\n")
    dev = loops.attach(img, partitions=True)
    for n in (1, 2):
        await wait_volume(client, f"{dev}p{n}", Type="part", Available=True)
    _, disk = await wait_volume(client, dev, Type="loop")
    assert disk is not None
    assert "has partitions" in disk["Unsuitable"] and disk["Available"] is False
    name = os.path.basename(dev)
    assert f"{name}p1" in disk["Unsuitable"] and f"{name}p2" in disk["Unsuitable"]
    vols = await volumes(client)
    assert vols[f"{dev}p1"]["Size"] == 12 * MIB
    await client.assert_refresh_zero()


async def test_mounted_volume_refused(ptcopyd: Ptcopyd, client: Client, loops: Loops,
                                      tmp_path: Path) -> None:
    """A mounted device shows Unsuitable "mounted at ..." and CreateSet refuses it naming the
    mount point; Candidates offers what fits and is free."""
    dev = loops.attach(loops.file(16 * MIB, ext4=True))
    mnt = tmp_path / "mnt"
    loops.mount(dev, mnt)
    _, v = await wait_volume(client, dev, Mounted=True)   # mounts send no uevent: the sweep
    assert v is not None and v["Available"] is False
    assert f"mounted at {mnt}" in v["Unsuitable"]
    big = loops.attach(loops.file(16 * MIB))
    small = loops.attach(loops.file(4 * MIB))
    await wait_volume(client, small, Available=True)
    m, _s, b = ptcopyd.set_volumes(16 * MIB, kind="independent")
    text = await client.refused("InUse", ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                                ["mnt", "independent", m, dev, b, {}])
    assert str(mnt) in text and dev in text, text

    (cands,) = await client.ok(ROOT, MANAGER, "Candidates", "ssa{sv}", [m, "shadow", {}])
    vols = {p["object"]: path for path, p in (await volumes(client)).items()}
    names = [vols[c] for c in cands]
    assert big in names and small not in names and dev not in names, names
    (cands,) = await client.ok(ROOT, MANAGER, "Candidates", "ssa{sv}",
                               [m, "shadow", {"kind": Variant("s", "dependent")}])
    assert small in [vols[c] for c in cands]
    (cands,) = await client.ok(ROOT, MANAGER, "Candidates", "ssa{sv}", [m, "bitmap", {}])
    assert small in [vols[c] for c in cands]   # a bitmap needs far less than the master
    await client.refused("InvalidArgument", ROOT, MANAGER, "Candidates", "ssa{sv}",
                         [m, "master", {}])

    # the CLI: ptcopy volumes [--available] --json
    cli = [str(Path(sys.executable).parent / "ptcopy"), "--bus", ptcopyd.bus.address, "volumes"]
    every = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True,
                                      check=True).stdout)
    avail = json.loads(subprocess.run([*cli, "--available", "--json"], capture_output=True,
                                      text=True, check=True).stdout)
    mounted = next(v for v in every if v["path"] == dev)
    assert mounted["mounted"] is True and f"mounted at {mnt}" in mounted["unsuitable"]
    assert mounted["fs_type"] == "ext4"
    assert {big, small} <= {v["path"] for v in avail} and dev not in {v["path"] for v in avail}
    assert all(v["available"] for v in avail)

    # a volume of a set is in use, and says by which set
    s_path, job = await client.create_set("onloop", "independent", m, big, b)
    if job != "/":
        await client.wait_job(job)
    _, v = await wait_volume(client, big, UsedBy=s_path)
    assert v is not None and "is the shadow of set onloop" in v["Unsuitable"]
    (cands,) = await client.ok(ROOT, MANAGER, "Candidates", "ssa{sv}", [m, "shadow", {}])
    assert big not in [vols.get(c) for c in cands]
    await client.set_call(s_path, "Disable")
    await client.assert_refresh_zero()


def trigger(action: str, dev: str) -> None:
    """What a hot-unplug (remove) or plug (add) makes the kernel send, for a device the test
    cannot really unplug: the engine holds it open, so ``losetup -d`` would only defer."""
    subprocess.run(["udevadm", "trigger", f"--action={action}", dev], check=True)


async def test_shadow_device_removed_and_back(ptcopyd: Ptcopyd, client: Client,
                                              loops: Loops) -> None:
    """The shadow's device removed (kernel remove uevent): the set goes degraded with
    shadow-offline and refuses copies; master writes go on. Back (add uevent): the set resumes
    by itself and an update makes the shadow equal the master."""
    m, _s, b = ptcopyd.set_volumes(8 * MIB, kind="independent")
    shadow = loops.attach(loops.file(8 * MIB))
    await wait_volume(client, shadow, Available=True)
    s_path, job = await client.create_set("unplug", "independent", m, shadow, b)
    if job != "/":
        await client.wait_job(job)
    master_dev = await client.get(s_path, ISET, "MasterDevice")

    trigger("remove", shadow)
    t0 = time.monotonic()
    await client.wait_prop(s_path, ISET, "Status", lambda v: v == "degraded", timeout=5)
    assert time.monotonic() - t0 < PROMPT + 0.5
    assert "shadow-offline" in await client.get(s_path, ISET, "Flags")
    _, v = await wait_volume(client, shadow)
    assert v is not None and "removed" in v["Unsuitable"] and v["UsedBy"] == s_path
    text = await client.refused("Offline", s_path, ISET, "Update", "sa{sv}", ["shadow", {}])
    assert shadow in text, text
    write_dev(master_dev, 0, b"written while the shadow was away".ljust(4096, b"."))

    trigger("add", shadow)
    await client.wait_prop(s_path, ISET, "Status", lambda v: v == "normal", timeout=5)
    assert "shadow-offline" not in await client.get(s_path, ISET, "Flags")
    resync = await client.get(s_path, ISET, "Job")
    if resync != job:   # the resync the reset started (none: nothing failed meanwhile)
        await client.wait_job(resync)
    job = await client.update(s_path)
    assert (await client.wait_job(job))["Success"] is True
    assert not same_content(m, shadow), same_content(m, shadow)
    await client.assert_refresh_zero()
    await client.set_call(s_path, "Disable")


def rule_for(uuid: str, group: str, bus: PrivateBus) -> str:
    """The automation example of packaging/99-ptcopy.rules, made live for this test: the
    file-system UUID of the test's disk, its group, this checkout's ptcopy and the test bus."""
    lines = [ln for ln in RULES.read_text().splitlines()
             if "ID_FS_UUID" in ln and "group update" in ln]
    assert len(lines) == 1, "packaging/99-ptcopy.rules lost its ID_FS_UUID example"
    rule = lines[0].lstrip("# ")
    rule = re.sub(r'ENV\{ID_FS_UUID\}=="[^"]*"', f'ENV{{ID_FS_UUID}}=="{uuid}"', rule)
    rule = re.sub(r"group update \S+", f"group update {group}", rule)
    ptcopy = Path(sys.executable).parent / "ptcopy"
    return rule.replace("/usr/bin/ptcopy", f"{ptcopy} --bus {bus.address}") + "\n"


async def test_udev_rule_updates_a_group(udevd: Udevd, ptcopyd: Ptcopyd, client: Client,
                                         loops: Loops, system_bus: PrivateBus) -> None:
    """The documented rule: when the backup disk (by file-system UUID) appears, udevd runs
    `ptcopy group update NAME --to shadow --no-wait`. Checked with `udevadm test` (the rule
    matches and names the command) and run for real by udevd on `udevadm trigger`."""
    m, s, b = ptcopyd.set_volumes(4 * MIB)
    s_path, _ = await client.create_set("nightly-a", "dependent", m, s, b)
    g_path = await client.create_group("nightly", [s_path])
    disk = loops.attach(loops.file(8 * MIB, ext4=True))
    uuid = subprocess.run(["blkid", "-p", "-s", "UUID", "-o", "value", disk],
                          capture_output=True, text=True, check=True).stdout.strip()
    rules = Path("/run/udev/rules.d")
    rules.mkdir(parents=True, exist_ok=True)
    rule_file = rules / f"99-ptcopy-test-{os.getpid()}.rules"
    rule_file.write_text(rule_for(uuid, "nightly", system_bus))
    try:
        subprocess.run(["udevadm", "control", "--reload"], check=True)
        sysfs = f"/sys/class/block/{os.path.basename(disk)}"
        r = subprocess.run(["udevadm", "test", "--action=add", sysfs], capture_output=True,
                           text=True, check=False)
        out = r.stdout + r.stderr
        assert "group update nightly --to shadow --no-wait" in out, out[-3000:]
        assert (await client.get(g_path, IGROUP, "Job")) == "/"
        subprocess.run(["udevadm", "trigger", "--action=add", "--settle", disk], check=True)
        job = await client.wait_prop(g_path, IGROUP, "Job", lambda v: v != "/", timeout=60)
        assert (await client.wait_job(job))["Success"] is True
        # another disk does not match
        other = loops.attach(loops.file(8 * MIB, ext4=True))
        subprocess.run(["udevadm", "trigger", "--action=add", "--settle", other], check=True)
        await asyncio.sleep(0.3)
        assert await client.get(g_path, IGROUP, "Job") == job
    finally:
        rule_file.unlink()
        subprocess.run(["udevadm", "control", "--reload"], check=False)
    await client.assert_refresh_zero()
