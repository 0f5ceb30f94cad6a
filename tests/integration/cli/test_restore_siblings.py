"""ptcopy update/copy --to master from one of several shadows of a master (issue 15), against a
real ptcopyd on the userspace path: a master with a dependent, an independent and a compact
dependent shadow (overflow volume attached) is restored from each in turn, and every other
set's point in time is checked byte for byte through its served shadow; the independent set's
next update makes it equal to the master again."""

from __future__ import annotations

import os
import random

import pytest

from tests.helpers.cli import Cli
from tests.helpers.names import KIB, MIB

pytestmark = pytest.mark.root

SIZE = 4 * MIB
CHUNK = 32 * KIB


def put(path: str, off: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def get(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        out = bytearray()
        while len(out) < SIZE:
            b = os.pread(fd, min(MIB, SIZE - len(out)), len(out))
            assert b, f"{path}: short read at {len(out)}"
            out += b
        return bytes(out)
    finally:
        os.close(fd)


def test_restore_from_each_of_three_shadows(cli: Cli) -> None:
    rng = random.Random(15)
    m = cli.vol("trio-m", SIZE)
    put(m, 0, rng.randbytes(SIZE))
    ov = cli.vol("trio-ov", SIZE + MIB)   # a full copy to the master moves every chunk
    cli.ok("overflow", "init", ov, "-q")
    names = {k: cli.name(f"trio-{k}") for k in ("dep", "ind", "cmp")}
    for k, n in names.items():
        s = cli.vol(f"trio-{k}-s", 512 * KIB if k == "cmp" else SIZE)
        b = cli.vol(f"trio-{k}-b", 256 * KIB)
        extra = ["--overflow", ov] if k == "cmp" else []
        kind = "--independent" if k == "ind" else "--dependent"
        cli.ok("enable", kind, m, s, b, "--name", n, "--no-loop", "--wait", "-q", *extra)
    dev = {k: cli.status(n) for k, n in names.items()}
    assert dev["cmp"]["compact"] is True and dev["cmp"]["overflow"] == ov

    def shadows() -> dict[str, bytes]:
        return {k: get(dev[k]["shadow_device"]) for k in names}

    for rnd, src in enumerate(["dep", "ind", "cmp"]):
        # the master moves on; every shadow gets writes of its own
        put(dev["dep"]["master_device"], (1 + rnd) * CHUNK, rng.randbytes(3 * CHUNK))
        for i, k in enumerate(names):
            put(dev[k]["shadow_device"], (8 * i + rnd) * CHUNK + 100, rng.randbytes(2 * CHUNK))
        pits = shadows()
        op = "update" if rnd % 2 == 0 else "copy"
        done = cli.json(op, names[src], "--to", "master", "--yes", "--wait")
        assert done["success"] is True, done
        master = get(dev[src]["master_device"])
        assert master == pits[src], f"the master was not restored from {src}"
        for k in names:   # the same master through every set's device
            assert get(dev[k]["master_device"]) == master
        assert shadows() == pits, "a set lost its point in time"
        if src != "ind":
            assert cli.json("update", names["ind"], "--to", "shadow", "--wait")["success"]
            assert get(dev["ind"]["shadow_device"]) == master
    for k, n in names.items():
        st = cli.status(n)
        assert st["status"] == "normal", (k, st)
        assert not {"out-of-space", "incomplete"} & set(st["flags"]), (k, st["flags"])


def test_restore_refuses_what_would_read_the_half_restored_master(cli: Cli) -> None:
    m = cli.vol("half-m", SIZE)
    put(m, 0, random.Random(3).randbytes(SIZE))
    names = {k: cli.name(f"half-{k}") for k in ("dep", "ind")}
    for k, n in names.items():
        s, b = cli.vol(f"half-{k}-s", SIZE), cli.vol(f"half-{k}-b", 256 * KIB)
        kind = "--independent" if k == "ind" else "--dependent"
        cli.ok("enable", kind, m, s, b, "--name", n, "--no-loop", "--wait", "-q")
    ind = cli.status(names["ind"])
    put(ind["shadow_device"], 0, random.Random(4).randbytes(SIZE))
    cli.ok("param", names["ind"], "--delay", "100", "--units", "4")   # about 3 s
    started = cli.json("update", names["ind"], "--to", "master", "--yes")
    assert started["state"] == "running"
    r = cli.fails(2, "update", names["dep"], "--to", "shadow")
    assert "being restored from" in r.stderr
    cli.ok("param", names["ind"], "--delay", "0")
    cli.ok("wait", names["ind"])
    assert cli.json("update", names["dep"], "--to", "shadow", "--wait")["success"] is True
