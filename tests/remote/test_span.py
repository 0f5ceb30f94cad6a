"""A group that spans three real hosts, driven over SSH from one command
(``ptcopy --host host1 group update G``): with one causal chain of writes running across every
master, the shadows together hold exactly a prefix of it (nothing written after the cut, nothing
acknowledged before it missing). A host cut off before the point in time leaves every member
thawed at its previous point in time, and the command says which host failed."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

from tests.helpers.chain import ChainWriter, chain_seqs
from tests.helpers.cli import PTCOPY
from tests.helpers.names import KIB, MIB
from tests.remote.fixtures import MakeHosts
from tests.remote.testhosts import TestHost, TestHosts

SIZE = 4 * MIB


def local(host: TestHost, *args: str) -> Any:
    r = subprocess.run([str(PTCOPY), "--bus", host.bus_address, "--json", *args],
                       capture_output=True, text=True, timeout=60, check=False,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{host.name}: ptcopy {' '.join(args)}: {r.stderr}"
    return json.loads(r.stdout) if r.stdout.strip() else None


def spanning_group(hosts: TestHosts, tag: str) -> list[dict[str, Any]]:
    """On every host an independent set, copied, in a group ``tag`` spanning the others."""
    made = []
    for h in hosts:
        vols = []
        for role, size in (("m", SIZE), ("s", SIZE), ("b", 256 * KIB)):
            p = hosts.shared_dir / f"{tag}-{h.name}-{role}.img"
            with p.open("xb") as f:
                f.truncate(size)
            vols.append(str(p))
        local(h, "enable", "--independent", *vols, "--name", f"{tag}-{h.name}", "--wait")
        others = [x.name for x in hosts if x is not h]
        local(h, "group", "create", tag, f"{tag}-{h.name}",
              *[a for o in others for a in ("--spans", o)])
        (st,) = local(h, "status", f"{tag}-{h.name}")
        assert st["master_device"].startswith("/dev/loop")
        made.append(st)
    return made


def group_update(hosts: TestHosts, tag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PTCOPY), "--host", hosts[0].name, "--json", "group", "update",
                           tag, "--to", "shadow", "--wait", "--freeze-timeout", "10"],
                          env=hosts.env(), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def test_one_point_in_time_across_three_hosts(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(3)
    tag = "sp" + uuid.uuid4().hex[:6]
    sets = spanning_group(hosts, tag)
    # 3 ms between writes: the chain (3 x 1024 writes) outlasts the command
    w = ChainWriter([s["master_device"] for s in sets], SIZE, pause=0.003)
    try:
        w.wait_for(30)
        before = w.acked
        r = group_update(hosts, tag)
        after = w.started
        w.wait_for(w.acked + 6)   # the writers go on after the cut
    finally:
        w.end()
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [x["host"] for x in res["hosts"]] == ["host1", "host2", "host3"]
    assert all(x["committed"] for x in res["hosts"]) and res["freeze_window_sec"] > 0
    got = sorted(k for i, s in enumerate(sets) for k in chain_seqs(s["shadow"], i, 3, SIZE))
    assert got == list(range(1, len(got) + 1)), f"not one cut: {got}"
    assert before <= len(got) <= after, (before, len(got), after)


def test_a_host_cut_off_leaves_every_member_unchanged(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(3)
    tag = "sq" + uuid.uuid4().hex[:6]
    sets = spanning_group(hosts, tag)
    shadows = [open(s["shadow"], "rb").read() for s in sets]  # noqa: SIM115
    w = ChainWriter([s["master_device"] for s in sets], SIZE, pause=0.003)
    hosts[2].stop_link()
    try:
        w.wait_for(9)
        r = group_update(hosts, tag)
        w.wait_for(w.acked + 6)   # every master is writable: nothing stayed frozen
    finally:
        w.end()
        hosts[2].start_link()
    assert r.returncode == 2, r
    assert "host3" in r.stderr and "cannot be reached" in r.stderr, r.stderr
    for s, before in zip(sets, shadows, strict=True):
        with open(s["shadow"], "rb") as f:
            assert f.read() == before, f"{s['name']}: the shadow changed"
