"""The daemon model test's configurations, operations (drawn from a seed up front) and model
(each side of each set is a byte array); model_daemon.py says how the test works."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.helpers.names import MIB

KIB = 1 << 10
CHUNK = 32 * KIB
SHADOW, MASTER = "shadow", "master"
CALL_TIMEOUT = 120.0   # calls that build device-mapper stacks run long under TCG


class Divergence(AssertionError):
    """The daemon and the model parted at op ``index`` (-1: during setup)."""

    def __init__(self, index: int, text: str) -> None:
        super().__init__(text)
        self.index = index
        self.text = text


# ---- configuration and operations --------------------------------------------------------------


@dataclass(frozen=True)
class SetSpec:
    name: str
    kind: str            # "dependent" or "independent"
    master: int          # which master volume (sets may share one)
    compact: bool = False
    delay: int = 0       # copy throttle (ms after every ``units`` chunks): copies that last
    units: int = 0       # long enough for I/O, aborts and restarts to meet them running


@dataclass(frozen=True)
class Config:
    seed: int
    size: int
    sets: tuple[SetSpec, ...]
    group: tuple[int, ...]   # indexes of the sets in the group ((): no group)

    def masters(self) -> list[int]:
        return sorted({s.master for s in self.sets})

    def shared(self, i: int) -> bool:
        return sum(1 for s in self.sets if s.master == self.sets[i].master) > 1

    def rotation(self) -> tuple[int, ...]:
        """The sets of the master with the most of them, if several: a schedule rotates over
        them (() when every master has one set)."""
        best = max(self.masters(), key=lambda m: sum(s.master == m for s in self.sets))
        rot = tuple(i for i, s in enumerate(self.sets) if s.master == best)
        return rot if len(rot) > 1 else ()

    def describe(self) -> str:
        sets = ", ".join(f"{s.name}={s.kind}{'(compact)' if s.compact else ''}@master{s.master}"
                         f"{f' throttled {s.delay}ms/{s.units}' if s.delay else ''}"
                         for s in self.sets)
        grp = ", ".join(self.sets[i].name for i in self.group) or "none"
        return f"seed {self.seed}: size {self.size}, sets {sets}; group {grp}"


@dataclass(frozen=True)
class Op:
    kind: str            # write read copy group wait check abort restart suspend hold rename
                         # rotate
    s: int = 0           # set index
    side: str = ""       # write/read: master|shadow; copy/group/abort: the direction
    off: int = 0
    length: int = 0
    mode: str = ""       # write: direct|buffered; restart: term|kill; suspend: ""|term|kill
    data: int = 0        # write, suspend: seed of the bytes (suspend: 0 = no write)
    full: bool = False   # copy/group/suspend/hold: Copy (True) or Update
    wait: bool = False   # copy/group: wait for the job; restart: wait for every job first;
                         # hold: commit

    def __str__(self) -> str:
        k = self.kind
        if k == "write":
            return (f"write {self.mode} set{self.s}.{self.side} [{self.off}, +{self.length}) "
                    f"(chunks {self.off // CHUNK}..{(self.off + self.length - 1) // CHUNK}, "
                    f"data seed {self.data})")
        if k == "read":
            return f"read set{self.s}.{self.side} [{self.off}, +{self.length})"
        if k in ("copy", "group"):
            who = f"set{self.s}" if k == "copy" else "group"
            return (f"{'Copy' if self.full else 'Update'} {who} -> {self.side}"
                    f"{', wait' if self.wait else ''}")
        if k == "abort":
            return f"Copy set{self.s} -> {self.side}, Abort, wait, Copy -> {self.side}, wait"
        if k == "restart":
            return f"restart ptcopyd ({self.mode}{', jobs waited' if self.wait else ''})"
        if k == "rotate":
            return f"Schedule.RunNow over the rotation{', wait' if self.wait else ''}"
        if k == "rename":
            return (f"Rename set{self.s}, read its master [{self.off}, +4096) through a "
                    "descriptor opened before")
        if k == "hold":
            src = MASTER if self.side == SHADOW else SHADOW
            return (f"group Hold {'copy' if self.full else 'update'} -> {self.side}, write "
                    f"set{self.s}.{src} [{self.off}, +{self.length}) while held, Release "
                    f"{'commit' if self.wait else 'without commit'}")
        if k == "suspend":
            return (f"{'Copy' if self.full else 'Update'} set{self.s} -> {self.side}, Suspend"
                    f"{f', write master [{self.off}, +{self.length})' if self.data else ''}"
                    f"{f', restart ptcopyd ({self.mode})' if self.mode else ''}, Resume, wait")
        return k


def config_for(seed: int, size: int = 4 * MIB) -> Config:
    """Three sets (dependent, independent, compact dependent with an overflow volume) on one to
    three masters, and maybe a group of two of them: drawn from the seed."""
    rng = random.Random(f"config-{seed}")
    kinds = [("dependent", False), ("independent", False), ("dependent", True)]
    rng.shuffle(kinds)
    specs: list[SetSpec] = []
    nmasters = 0
    for i, (kind, compact) in enumerate(kinds):
        if i and rng.random() < 0.3:
            m = rng.randrange(nmasters)        # several shadows on one master
        else:
            m = nmasters
            nmasters += 1
        specs.append(SetSpec(f"s{i}", kind, m, compact))
    group: tuple[int, ...] = ()
    if rng.random() < 0.75:
        group = tuple(sorted(rng.sample(range(len(specs)), 2)))
    for i, spec in enumerate(specs):
        if rng.random() < 0.5:
            specs[i] = dataclasses.replace(spec, delay=rng.choice([5, 10, 20]),
                                           units=rng.choice([4, 8, 16]))
    return Config(seed, size, tuple(specs), group)


def generate(cfg: Config, n: int, *, restarts: bool = True) -> list[Op]:
    rng = random.Random(f"ops-{cfg.seed}")
    size = cfg.size
    nsets = len(cfg.sets)
    kinds = ["write", "read", "copy", "wait", "check", "abort"]
    weights = [36, 14, 22, 9, 4, 3]
    if cfg.group:
        kinds.append("group")
        weights.append(6)
    if restarts:
        kinds.append("restart")
        weights.append(2)
    ops: list[Op] = []
    s = 0
    for _ in range(n):
        k = rng.choices(kinds, weights)[0]
        # often the same set again: faults show in short stories on one set (write, restore,
        # write, restore) more than in ops spread thinly over every set
        if rng.random() < 0.5:
            s = rng.randrange(nsets)
        if k == "write":
            side = rng.choice([MASTER, SHADOW])
            if rng.random() < 0.6:
                unit = CHUNK if rng.random() < 0.5 else 4096
                off = rng.randrange(size // unit) * unit
                length = min(rng.randint(1, 32) * 4096, size - off)
                ops.append(Op("write", s, side, off, length, "direct", rng.getrandbits(32)))
            else:
                off = rng.randrange(size)
                length = min(rng.randint(1, 96 * KIB), size - off)
                ops.append(Op("write", s, side, off, length, "buffered", rng.getrandbits(32)))
        elif k == "read":
            off = rng.randrange(size // 4096) * 4096
            ops.append(Op("read", s, rng.choice([MASTER, SHADOW]), off,
                          min(rng.randint(1, 64) * 4096, size - off)))
        elif k in ("copy", "group"):
            ops.append(Op(k, s, SHADOW if rng.random() < 0.6 else MASTER,
                          full=rng.random() < 0.3, wait=rng.random() < 0.5))
        elif k == "abort":
            ops.append(Op("abort", s, rng.choice([SHADOW, MASTER])))
        elif k == "restart":
            ops.append(Op("restart", mode=rng.choice(["term", "kill"]),
                          wait=rng.random() < 0.5))
        else:
            ops.append(Op(k))
    return _with_rotations(cfg, _with_renames(cfg, _with_holds(cfg, _with_suspends(
        cfg, ops, restarts))))


def _inserted(cfg: Config, ops: list[Op], stream: str, rate: float,
              make: Callable[[random.Random, str, int, int], Op]) -> list[Op]:
    """``ops`` with, after each one at probability ``rate``, one more op made by ``make``
    (given its direction and a 4 KiB-aligned range to write). Drawn from a stream of their
    own, so the rest of a seed's sequence is what it was before such ops existed."""
    rng = random.Random(f"{stream}-{cfg.seed}")
    out: list[Op] = []
    for op in ops:
        out.append(op)
        if rng.random() >= rate:
            continue
        direction = SHADOW if rng.random() < 0.7 else MASTER
        off = rng.randrange(cfg.size // 4096) * 4096
        length = min(rng.randint(1, 16) * 4096, cfg.size - off)
        out.append(make(rng, direction, off, length))
    return out


def _with_renames(cfg: Config, ops: list[Op]) -> list[Op]:
    """About one op in 40 more: a set renamed while its devices serve (a descriptor opened
    before must go on reading the same device)."""

    def rename(rng: random.Random, direction: str, off: int, length: int) -> Op:
        return Op("rename", rng.randrange(len(cfg.sets)), off=off)

    return _inserted(cfg, ops, "rename", 0.025, rename)


def _with_rotations(cfg: Config, ops: list[Op]) -> list[Op]:
    """With several sets on one master, about one op in 25 more: a run of the schedule that
    rotates over them, asked for now (the run must pick the shadow whose point in time from the
    schedule is the oldest)."""
    if not cfg.rotation():
        return ops

    def rotate(rng: random.Random, direction: str, off: int, length: int) -> Op:
        return Op("rotate", wait=rng.random() < 0.6)

    return _inserted(cfg, ops, "rotate", 0.04, rotate)


def _with_holds(cfg: Config, ops: list[Op]) -> list[Op]:
    """With a group, about one op in 30 more: the group held, a member's source written (the
    write must wait for the release), then released with or without the point in time."""
    if not cfg.group:
        return ops

    def hold(rng: random.Random, direction: str, off: int, length: int) -> Op:
        return Op("hold", rng.choice(cfg.group), direction, off, length, "",
                  rng.getrandbits(32) | 1, full=rng.random() < 0.4, wait=rng.random() < 0.75)

    return _inserted(cfg, ops, "hold", 0.033, hold)


def _with_suspends(cfg: Config, ops: list[Op], restarts: bool) -> list[Op]:
    """About one op in 25 more: a copy suspended mid-way, the source written (to the master)
    and maybe ptcopyd restarted while it waits, then resumed."""
    # mostly the independent set: a dependent set's new point in time copies nothing
    indep = [i for i, sp in enumerate(cfg.sets) if sp.kind == "independent"]

    def suspend(rng: random.Random, direction: str, off: int, length: int) -> Op:
        data = rng.getrandbits(32) | 1 if direction == SHADOW and rng.random() < 0.8 else 0
        mode = rng.choice(["", "", "term", "kill"]) if restarts else ""
        s = rng.choice(indep) if indep and rng.random() < 0.8 else rng.randrange(len(cfg.sets))
        return Op("suspend", s, direction, off, length, mode, data, full=rng.random() < 0.7)

    return _inserted(cfg, ops, "suspend", 0.04, suspend)


# ---- the model -------------------------------------------------------------------------------


@dataclass
class Model:
    cfg: Config
    masters: dict[int, bytearray] = field(default_factory=dict)
    shadows: dict[int, bytearray] = field(default_factory=dict)

    def side(self, s: int, side: str) -> bytearray:
        return self.masters[self.cfg.sets[s].master] if side == MASTER else self.shadows[s]

    def write(self, s: int, side: str, off: int, data: bytes) -> None:
        self.side(s, side)[off:off + len(data)] = data

    def copy(self, sets: list[int], direction: str) -> None:
        """Every member at one instant: read every source first, then write the targets."""
        if direction == SHADOW:
            src = {s: bytes(self.masters[self.cfg.sets[s].master]) for s in sets}
            for s in sets:
                self.shadows[s][:] = src[s]
        else:
            src = {s: bytes(self.shadows[s]) for s in sets}
            for s in sets:
                self.masters[self.cfg.sets[s].master][:] = src[s]
