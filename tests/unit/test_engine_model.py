"""The engine model of tests/engine/model.py checked on its own (no engine, no root): a few
predictions that follow straight from the contract, before tests/engine/test_model.py compares
the engine with it."""

from __future__ import annotations

import pytest

from tests.engine import model as mdl

CHUNK = 4096


def test_model_sanity() -> None:
    """The model itself: a few predictions that follow straight from the contract."""
    model = mdl.Model(CHUNK)
    mm = model.add_master("m", 4 * CHUNK)
    mm.data[:] = b"a" * (4 * CHUNK)
    ov = mdl.OverflowModel(1)
    dep = model.enable("d", mm, mdl.DEPENDENT, CHUNK, ov)
    assert dep.compact and dep.slots == 1
    model.write(dep, mdl.MASTER, 0, b"b")             # COW into the shadow slot
    model.write(dep, mdl.MASTER, CHUNK, b"c")         # spills to overflow
    model.write(dep, mdl.MASTER, 2 * CHUNK, b"d")     # out of space: lost
    assert dep.place == {0: mdl.SHADOW, 1: "overflow"} and dep.lost == {2}
    assert model.read(dep, mdl.SHADOW, 0, 1) == b"a"
    with pytest.raises(mdl.Refused):
        model.read(dep, mdl.SHADOW, 2 * CHUNK, 1)
    with pytest.raises(mdl.Refused) as r:
        model.copy([dep], mdl.TO_MASTER)
    assert r.value.names == {mdl.OUT_OF_SPACE}
    model.copy([dep], mdl.TO_SHADOW)
    assert not dep.lost and not dep.place and ov.used == 0
    assert model.read(dep, mdl.SHADOW, 0, 1) == b"b"
