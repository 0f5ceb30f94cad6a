"""The export/import/release/join walkthrough through the real ``ptcopy`` command, host A and
host B each a ptcopyd on its own bus (``--bus``), the shadow's backing file shared."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import MIB

PTCOPY = Path(sys.executable).parent / "ptcopy"
SIZE = 4 * MIB


def ptcopy(host: Ptcopyd, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(PTCOPY), "--bus", host.bus.address, *args], capture_output=True,
                       text=True, timeout=120)
    if ok:
        assert r.returncode == 0, f"ptcopy {' '.join(args)}: {r.returncode}\n{r.stderr}"
    return r


def as_json(host: Ptcopyd, *args: str) -> Any:
    return json.loads(ptcopy(host, *args, "--json").stdout)


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(SIZE)).hexdigest()


def test_cli_walkthrough(ptcopyd: Ptcopyd,
                         second_daemon_factory: Callable[..., Ptcopyd]) -> None:
    a = ptcopyd
    b = second_daemon_factory("--file-volumes", str(a.vol_dir))
    m, s, bm = a.set_volumes(SIZE, kind="independent",
                             master_data=random.Random(3).randbytes(SIZE))
    ptcopy(a, "enable", "--independent", m, s, bm, "--name", "db", "--wait")
    assert as_json(a, "export", "db") == {"name": "db", "exported": True}
    assert as_json(a, "status", "db")[0]["shadow_device"] is None   # not served

    ib = a.volume(bitmap_size(SIZE, SIZE, 0, Kind.INDEPENDENT), "db-at-b.bm")
    got = as_json(b, "import", s, ib, "--name", "db-copy")
    assert got["name"] == "db-copy" and got["kind"] == "imported"
    assert got["shadow_device"].startswith("/dev/loop") and got["chunk_size"] == 32 * 1024
    st = as_json(b, "status", "db-copy")[0]
    assert "imported" in st["flags"]
    assert "db-copy" in ptcopy(b, "status", "db-copy").stdout   # the tables show it too
    assert "db-copy" in ptcopy(b, "list").stdout
    fd = os.open(got["shadow_device"], os.O_WRONLY)
    try:
        os.pwrite(fd, b"written on host B" * 100, 3 * MIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    r = ptcopy(b, "update", "db-copy", "--to", "shadow", ok=False)
    assert r.returncode != 0 and "imported shadow" in r.stderr
    r = ptcopy(a, "join", "db", ib, ok=False)   # B has not released it
    assert r.returncode != 0 and "release it there first" in r.stderr
    r = ptcopy(a, "release", "db", ok=False)   # only an imported shadow is released
    assert r.returncode == 2 and "not imported" in r.stderr

    assert as_json(b, "release", "db-copy") == {"name": "db-copy", "released": True,
                                                "bitmap": ib}
    assert as_json(a, "join", "db", ib) == {"name": "db", "exported": False}
    assert sha(s) != sha(m)
    ptcopy(a, "update", "db", "--to", "shadow", "--wait")
    assert sha(s) == sha(m)
    assert as_json(a, "status", "db")[0]["shadow_device"].startswith("/dev/loop")
