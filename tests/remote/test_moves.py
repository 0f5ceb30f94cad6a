"""A shadow moves between two real hosts over SSH, driven from one place with ``--host``:
export on host1, import on host2 (the same backing file, storage both see), written there,
released, joined back on host1; after the next update the shadow equals the master again,
checked byte for byte on both sides."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import uuid
from typing import Any

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.cli import PTCOPY
from tests.helpers.names import KIB, MIB
from tests.remote.fixtures import MakeHosts
from tests.remote.testhosts import TestHosts

SIZE = 4 * MIB


def ptcopy(hosts: TestHosts, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(PTCOPY), "--host", host, *args], env=hosts.env(),
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                       check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def ok(hosts: TestHosts, host: str, *args: str) -> Any:
    r = ptcopy(hosts, host, "--json", *args)
    assert r.returncode == 0, f"ptcopy --host {host} {' '.join(args)}: {r.stderr}"
    return json.loads(r.stdout)


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(SIZE)).hexdigest()


def file(hosts: TestHosts, name: str, size: int, data: bytes = b"") -> str:
    p = hosts.shared_dir / name
    with p.open("xb") as f:
        f.write(data)
    os.truncate(p, size)
    return str(p)


def test_export_import_release_join_across_hosts(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    a, b = hosts[0].name, hosts[1].name
    tag = "mv" + uuid.uuid4().hex[:6]
    m = file(hosts, f"{tag}-m", SIZE, random.Random(tag).randbytes(SIZE))
    s = file(hosts, f"{tag}-s", SIZE)
    bm = file(hosts, f"{tag}-b", 256 * KIB)
    ok(hosts, a, "enable", "--independent", m, s, bm, "--name", tag, "--wait")
    assert sha(s) == sha(m)
    assert ok(hosts, a, "export", tag) == {"name": tag, "exported": True}

    ib = file(hosts, f"{tag}-at-b", bitmap_size(SIZE, SIZE, 0, Kind.INDEPENDENT))
    got = ok(hosts, b, "import", s, ib, "--name", tag + "-copy")
    assert got["kind"] == "imported" and got["shadow_device"].startswith("/dev/loop")
    fd = os.open(got["shadow_device"], os.O_WRONLY)
    try:
        os.pwrite(fd, b"written on host2 " * 64, 3 * MIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    # host1 cannot take it back while host2 still has it
    r = ptcopy(hosts, a, "join", tag, ib)
    assert r.returncode == 2 and f"host {a}" in r.stderr and "release" in r.stderr, r.stderr
    ok(hosts, b, "release", tag + "-copy")
    assert tag + "-copy" not in {x["name"] for x in ok(hosts, b, "list")}

    assert ok(hosts, a, "join", tag, ib) == {"name": tag, "exported": False}
    assert sha(s) != sha(m)
    ok(hosts, a, "update", tag, "--to", "shadow", "--wait")
    assert sha(s) == sha(m)
    (st,) = ok(hosts, a, "status", tag)
    assert not st["exported"] and st["difference_percent"] == 0
    ok(hosts, a, "disable", tag)


def test_relative_volume_paths_are_refused_on_another_host(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    r = ptcopy(hosts, hosts[0].name, "enable", "--dependent", "m.img", "s.img", "b.img")
    assert r.returncode == 1
    assert "'m.img' is a relative path: on host host1" in r.stderr
