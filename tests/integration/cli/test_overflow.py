"""ptcopy overflow init|attach|detach|list|status|delete, with a compact dependent set that
spills into the overflow volume."""

from __future__ import annotations

import os

import pytest

from tests.helpers.cli import Cli
from tests.helpers.names import KIB, MIB

pytestmark = pytest.mark.root

CHUNK = 32 * KIB


def test_compact_set_spills_into_an_overflow_volume(cli: Cli) -> None:
    ov = cli.vol("ov", 2 * MIB)
    made = cli.json("overflow", "init", ov)
    assert made["volume"] == ov and made["sets"] == [] and made["chunks_used"] == 0
    assert made["chunks_total"] > 0 and made["counters_valid"] is True
    assert ov in cli.ok("overflow", "list", "-q").stdout.splitlines()

    name = cli.enable("cmp", size=4 * MIB, shadow_size=256 * KIB, extra=["--overflow", ov])
    st = cli.status(name)
    assert st["compact"] is True and st["overflow"] == ov
    total = st["shadow_chunks_total"]
    assert 0 < total <= 8

    # Overwrite more master chunks than the shadow holds: the point-in-time data spills.
    fd = os.open(st["master_device"], os.O_WRONLY)
    try:
        for i in range(total + 8):
            os.pwrite(fd, bytes([i + 1]) * CHUNK, i * CHUNK)
        os.fsync(fd)
    finally:
        os.close(fd)
    cli.until(lambda: cli.status(name)["spilled"])
    st = cli.status(name)
    assert "spilled" in st["flags"]
    assert st["shadow_chunks_used"] >= total + 8
    (o,) = cli.json("overflow", "status", ov)
    assert o["sets"] == [name] and o["chunks_used"] >= 8
    assert o["chunks_free"] == o["chunks_total"] - o["chunks_used"]
    human = cli.ok("overflow", "status", ov).stdout
    assert f"overflow volume {ov}" in human and name in human
    listed = {x["volume"]: x for x in cli.json("overflow", "list")}
    assert listed[ov]["sets"] == [name]
    assert "spilled" in cli.ok("status", name).stdout

    r = cli.fails(2, "overflow", "delete", ov)
    assert "attached" in r.stderr
    r = cli.fails(2, "overflow", "detach", name)      # its chunks live there
    assert "hint:" in r.stderr

    cli.ok("update", name, "--to", "shadow", "--wait")   # a new point in time frees them
    cli.until(lambda: cli.json("overflow", "status", ov)[0]["chunks_used"] == 0)
    assert cli.json("overflow", "detach", name) == {"set": name, "overflow": None}
    r = cli.fails(2, "overflow", "detach", name)
    assert "has no overflow volume" in r.stderr
    assert cli.json("overflow", "attach", ov, name) == {"set": name, "overflow": ov}
    cli.ok("overflow", "detach", name)
    assert cli.json("overflow", "delete", ov) == {"deleted": [ov]}
    assert ov not in [x["volume"] for x in cli.json("overflow", "list")]
    r = cli.fails(2, "overflow", "status", ov)
    assert "no overflow volume named" in r.stderr
