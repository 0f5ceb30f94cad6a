"""The daemon's Service against a fake data path: each operation reaches the path as the
DataPath protocol says, and what a path cannot do (its capabilities) is refused before anything
is written. File volumes in tmp_path and the real engine: no root, no FUSE, no loop devices.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.service import Service
from ptcopy.datapath.base import Capabilities, DataPath, SetVolumes, Volume
from ptcopy.engine import Direction, Engine, Kind, Progress, Set, bitmap_size
from ptcopy.errnames import ErrorName

MIB = 1 << 20
SIZE = 4 * MIB
CAPS = Capabilities(name="fake", bitmap_in_memory=True, exclusive_volumes=True,
                    target_writable_during_copy=True, group_restore_dependent=True)


@dataclass(frozen=True)
class FakeServed:
    master_device: str | None
    shadow_device: str | None
    master_file: str | None = None
    shadow_file: str | None = None


class FakePath:
    """Records every call; copies through the engine so the sets' state stays true."""

    def __init__(self, engine: Engine, caps: Capabilities) -> None:
        self.engine = engine
        self.caps = caps
        self.calls: list[tuple[Any, ...]] = []
        self.sets: dict[str, Set] = {}
        self.volumes: dict[str, SetVolumes] = {}
        self.refuse_new: ServiceError | None = None

    def check_new(self, kind: Kind, chunk: int, master_size: int, shadow: tuple[str, int],
                  bitmap: tuple[str, int] | None) -> None:
        self.calls.append(("check_new", kind, chunk, master_size, shadow, bitmap))
        if self.refuse_new is not None:
            raise self.refuse_new

    def serve(self, name: str, set_: Set, volumes: SetVolumes, *,
              loop: bool = True, shadow: bool = True) -> FakeServed:
        # the descriptors are open while serve runs: what they are is checked here
        for v in (volumes.master, volumes.shadow, volumes.bitmap, volumes.overflow):
            if v is not None:
                assert os.fstat(v[1]).st_ino == os.stat(v[0]).st_ino
        self.calls.append(("serve", name, loop))
        self.sets[name] = set_
        self.volumes[name] = volumes
        return FakeServed(f"/dev/fake-{name}-m", f"/dev/fake-{name}-s")

    def started(self, name: str, *, new: bool) -> None:
        self.calls.append(("started", name, new))

    def unserve(self, name: str, *, force: bool = False) -> None:
        self.calls.append(("unserve", name, force))
        del self.sets[name]

    def users(self, name: str, direction: Direction) -> list[str]:
        return []

    def copy(self, names: Sequence[str], direction: Direction, *, full: bool,
             owner: int = 0) -> float:
        self.calls.append(("copy", list(names), direction, full))
        return self.engine.group_copy([self.sets[n] for n in names], direction, full=full,
                                      owner=owner)

    def progress(self, name: str) -> Progress:
        self.calls.append(("progress", name))
        return self.sets[name].progress()

    def abort(self, name: str) -> None:
        self.calls.append(("abort", name))

    def wait(self, name: str, timeout: float | None = None) -> bool:
        return self.sets[name].wait(timeout)

    def copier(self, name: str) -> Set:
        self.calls.append(("copier", name))
        return self.sets[name]

    def attach_overflow(self, name: str, overflow: Volume) -> None:
        self.calls.append(("attach_overflow", name, overflow[0]))

    def detach_overflow(self, name: str) -> None:
        self.calls.append(("detach_overflow", name))

    def status(self, name: str) -> dict[str, object]:
        return {}

    def stop(self, *, force: bool = False) -> None:
        self.calls.append(("stop", force))

    def names(self) -> list[str]:
        """The calls' names, in order."""
        return [c[0] for c in self.calls]


class Env:
    """A Service on a fake path, its state directory and volume files in tmp_path."""

    def __init__(self, tmp_path: Path, caps: Capabilities = CAPS) -> None:
        self.dir = tmp_path / "vols"
        self.dir.mkdir(exist_ok=True)
        self.state = tmp_path / "state"
        self.caps = caps
        self.path: FakePath | None = None
        self.service = self.start()

    def start(self) -> Service:
        def factory(engine: Engine, run_dir: str) -> DataPath:
            self.path = FakePath(engine, self.caps)
            return self.path
        return Service(str(self.state), str(self.dir.parent / "run"), [str(self.dir)],
                       data_path=factory)

    @property
    def fake(self) -> FakePath:
        assert self.path is not None
        return self.path

    def vol(self, name: str, size: int) -> str:
        p = self.dir / name
        with open(p, "wb") as f:
            f.truncate(size)
        return str(p)

    def enable(self, name: str, kind: str = "independent", shadow_size: int = SIZE,
               **opts: Any) -> str:
        k = Kind.INDEPENDENT if kind == "independent" else Kind.DEPENDENT
        master, shadow = self.vol(f"{name}.m", SIZE), self.vol(f"{name}.s", shadow_size)
        bitmap = "" if opts.get("bitmap_in_memory") else self.vol(
            f"{name}.b", bitmap_size(SIZE, shadow_size, 0, k))
        set_id = self.service.create_set(name, kind, master, shadow, bitmap, opts)
        s = self.service.live(set_id)
        assert s.wait(30), "the first copy did not end"
        return set_id


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.service.stop()


def test_enable_checks_serves_and_starts(env: Env) -> None:
    set_id = env.enable("a")
    assert env.fake.names() == ["check_new", "serve", "started"]
    _, kind, chunk, master_size, shadow, bitmap = env.fake.calls[0]
    assert (kind, master_size, shadow[1]) == (Kind.INDEPENDENT, SIZE, SIZE)
    assert chunk > 0 and bitmap is not None and bitmap[0].endswith("a.b")
    assert env.fake.calls[2] == ("started", "a", True)
    vols = env.fake.volumes["a"]
    assert vols.master[0].endswith("a.m") and vols.shadow[0].endswith("a.s")
    assert vols.bitmap is not None and vols.overflow is None
    ms = env.service.sets[set_id]
    assert ms.served is not None and ms.served.master_device == "/dev/fake-a-m"
    assert env.service.data_path == "fake"


def test_copy_abort_progress_and_copier_go_to_the_path(env: Env) -> None:
    set_id = env.enable("a")
    env.fake.calls.clear()
    env.service.copy([set_id], "shadow", False, False, "")
    assert env.fake.calls == [("copy", ["a"], Direction.TO_SHADOW, False)]
    assert env.service.live(set_id).wait(30)
    env.service.abort(set_id)
    assert env.fake.calls[-1] == ("abort", "a")
    assert env.service.copier(set_id) is env.fake.sets["a"]
    p = env.service.progress(env.service.sets[set_id])
    assert p is not None and not p.active
    assert env.fake.names()[-2:] == ["copier", "progress"]


def test_group_copy_is_one_call_at_one_point_in_time(env: Env) -> None:
    a, b = env.enable("a"), env.enable("b", "dependent")
    group = env.service.create_group("g", [a, b])
    env.fake.calls.clear()
    env.service.copy(env.service.group_sets(group), "master", True, True, "")
    assert len(env.fake.calls) == 1
    name, names, direction, full = env.fake.calls[0]
    assert (name, sorted(names), direction, full) == ("copy", ["a", "b"],
                                                      Direction.TO_MASTER, True)


def test_writing_the_master_needs_confirm_before_the_path_is_asked(env: Env) -> None:
    set_id = env.enable("a")
    env.fake.calls.clear()
    with pytest.raises(ServiceError) as e:
        env.service.copy([set_id], "master", False, False, "")
    assert e.value.name == ErrorName.NOT_CONFIRMED
    assert env.fake.calls == []


def test_disable_unserves(env: Env) -> None:
    set_id = env.enable("a")
    env.fake.calls.clear()
    env.service.disable_set(set_id)
    assert env.fake.calls == [("unserve", "a", False)]
    assert set_id not in env.service.sets and env.service.store.sets() == []


def test_bitmap_in_memory_refused_by_capability(tmp_path: Path) -> None:
    e = Env(tmp_path, replace(CAPS, bitmap_in_memory=False))
    try:
        with pytest.raises(ServiceError) as err:
            e.enable("a", bitmap_in_memory=True)
        assert err.value.name == ErrorName.INVALID_ARGUMENT
        assert "bitmap_in_memory is not available there" in err.value.message
        assert e.fake.calls == [] and e.service.sets == {}
    finally:
        e.service.stop()


def test_bitmap_in_memory_served_without_a_bitmap_volume(env: Env) -> None:
    env.enable("a", bitmap_in_memory=True)
    assert env.fake.volumes["a"].bitmap is None
    assert env.fake.calls[0][-1] is None   # check_new saw no bitmap volume


def test_a_refusal_of_check_new_leaves_nothing(env: Env) -> None:
    env.fake.refuse_new = ServiceError(ErrorName.TOO_SMALL, "the shadow is too small here")
    with pytest.raises(ServiceError) as e:
        env.enable("a")
    assert e.value.name == ErrorName.TOO_SMALL
    assert env.fake.names() == ["check_new"]
    assert env.service.sets == {} and env.service.store.sets() == []


def test_overflow_attach_and_detach_reach_the_path(env: Env) -> None:
    set_id = env.enable("a", "dependent", shadow_size=SIZE // 4)   # compact: it may spill
    ov_id = env.service.create_overflow(env.vol("ov", 8 * MIB), 0)
    env.fake.calls.clear()
    env.service.attach_overflow(set_id, ov_id)
    assert env.fake.calls == [("attach_overflow", "a", str(env.dir / "ov"))]
    env.service.detach_overflow(set_id)
    assert env.fake.calls[-1] == ("detach_overflow", "a")


def test_restart_serves_again_and_resumes(env: Env) -> None:
    set_id = env.enable("a")
    env.service.stop()
    assert env.fake.calls[-1] == ("stop", True)
    env.service = env.start()
    env.service.restore()
    assert env.fake.calls == [("serve", "a", True), ("started", "a", False)]
    assert env.service.sets[set_id].served is not None
