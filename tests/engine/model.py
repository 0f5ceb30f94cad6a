"""A pure-Python reference model of the set semantics in docs/engine-semantics.md.

It knows nothing of the engine: it keeps, per master, the master's bytes and, per set, the
*logical* shadow bytes (what a reader of the shadow must see), plus what the contract lets a
caller predict: which chunks a dependent shadow holds its own copy of (its shadow bits), where a
compact shadow placed each chunk (its shadow volume first, then the overflow volume), which
point-in-time chunks were lost to out-of-space, the ``INCOMPLETE`` state and the PID lock.

Refusals are predicted as the *names* of the engine's error classes (``"Dependency"``,
``"OutOfSpace"``, ...); the tests map them to exception types.

Copies are applied at once (the contract's logical view: the target becomes the source *at the
instant of the call*). A copy that may be aborted is started with :meth:`Model.begin_copy`,
which applies it but remembers, per chunk that changed, the target's previous content: after the
abort every such chunk may show either image, and :meth:`PendingCopy.pin` fixes the model to
what the engine showed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

TO_SHADOW = "to_shadow"
TO_MASTER = "to_master"
MASTER = "master"
SHADOW = "shadow"
INDEPENDENT = "independent"
DEPENDENT = "dependent"

# error class names (ptcopy.engine.<name>)
DEPENDENCY = "Dependency"
INVALID = "InvalidArgument"
OUT_OF_SPACE = "OutOfSpace"
INCOMPLETE = "Incomplete"
IN_USE = "InUse"
NO_COPY = "NoCopy"


class Refused(Exception):
    """The model predicts that the engine refuses the operation with one of ``names``."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        super().__init__(", ".join(sorted(self.names)))


def chunk_range(offset: int, length: int, chunk: int) -> range:
    """Indexes of the chunks that bytes [offset, offset+length) touch."""
    if length <= 0:
        return range(0)
    return range(offset // chunk, (offset + length - 1) // chunk + 1)


@dataclass
class OverflowModel:
    capacity: int
    used: int = 0

    def free(self) -> int:
        return self.capacity - self.used


@dataclass
class MasterModel:
    name: str
    size: int
    chunk: int
    data: bytearray = field(init=False)
    sets: list[SetModel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = bytearray(self.size)

    @property
    def nchunks(self) -> int:
        return (self.size + self.chunk - 1) // self.chunk

    def span(self, c: int) -> slice:
        return slice(c * self.chunk, min((c + 1) * self.chunk, self.size))


@dataclass(eq=False)
class SetModel:
    name: str
    master: MasterModel
    kind: str
    shadow_size: int
    overflow: OverflowModel | None = None
    shadow: bytearray = field(init=False)
    # dependent: chunks the shadow holds its own copy of (= its shadow bits, lost ones included)
    own: set[int] = field(default_factory=set)
    # compact: where each own chunk lives ("shadow" or "overflow"); lost chunks live nowhere
    place: dict[int, str] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)
    spilled: bool = False
    incomplete: str | None = None
    lock_owner: int = 0

    def __post_init__(self) -> None:
        self.shadow = bytearray(self.master.data)   # enable: S := M

    # -- shape --

    @property
    def chunk(self) -> int:
        return self.master.chunk

    @property
    def nchunks(self) -> int:
        return self.master.nchunks

    @property
    def compact(self) -> bool:
        return self.kind == DEPENDENT and self.shadow_size < self.master.size

    @property
    def slots(self) -> int:
        return self.shadow_size // self.chunk if self.compact else self.nchunks

    def slots_used(self) -> int:
        return sum(1 for p in self.place.values() if p == SHADOW)

    def overflow_used(self) -> int:
        return sum(1 for p in self.place.values() if p == "overflow")

    def image(self, side: str) -> bytearray:
        return self.master.data if side == MASTER else self.shadow

    def differing(self) -> set[int]:
        """Chunks whose master and logical shadow bytes differ (lost ones count as differing)."""
        m = self.master
        out = {c for c in range(self.nchunks) if m.data[m.span(c)] != self.shadow[m.span(c)]}
        return out | self.lost

    # -- compact allocation --

    def _alloc(self, c: int) -> bool:
        """Gives chunk c a place on a compact shadow: the shadow volume first, then overflow."""
        if not self.compact or c in self.place:
            return True
        if self.slots_used() < self.slots:
            self.place[c] = SHADOW
            return True
        if self.overflow is not None and self.overflow.free() > 0:
            self.overflow.used += 1
            self.place[c] = "overflow"
            self.spilled = True
            return True
        return False

    def needs_place_in_vain(self, c: int) -> bool:
        """A shadow write to chunk c would need a new place on a full compact shadow."""
        if not self.compact or c in self.own:
            return False
        free_ov = self.overflow is not None and self.overflow.free() > 0
        return self.slots_used() >= self.slots and not free_ov

    def lands_on_overflow(self, c: int) -> bool:
        """Chunk c of the shadow lives, or would be given its place, on the overflow volume."""
        if not self.compact:
            return False
        if c in self.place:
            return self.place[c] == "overflow"
        free_ov = self.overflow is not None and self.overflow.free() > 0
        return c not in self.own and self.slots_used() >= self.slots and free_ov

    def _free(self, c: int) -> None:
        where = self.place.pop(c, None)
        if where == "overflow" and self.overflow is not None:
            self.overflow.used -= 1

    def release_all(self) -> None:
        for c in list(self.place):
            self._free(c)

    # -- I/O preparation (the I/O rules of the contract) --

    def prep_master_write(self, c: int) -> None:
        """Master chunk c is about to change: a dependent shadow keeps its point in time."""
        if self.kind != DEPENDENT or c in self.own:
            return
        if not self._alloc(c):
            self.lost.add(c)   # the master write still succeeds; the PIT chunk is lost
        self.own.add(c)


class PendingCopy:
    """A copy applied to the model that may be cut short by an abort."""

    def __init__(self, model: Model, s: SetModel, direction: str,
                 old: dict[int, bytes], new_of: dict[int, bytes], old_own: set[int]) -> None:
        self.model = model
        self.set = s
        self.direction = direction
        self.old = old          # target chunks that change: their previous content
        self.new = new_of       # ... and their new content
        self.old_own = old_own
        self.touched: set[int] = set()

    @property
    def target(self) -> str:
        return MASTER if self.direction == TO_MASTER else SHADOW

    def undetermined(self) -> list[int]:
        return sorted(c for c in self.old if c not in self.touched)

    def touch(self, chunks: Iterable[int]) -> None:
        """I/O during the copy moved these chunks first (copy-on-demand)."""
        self.touched.update(chunks)

    def acceptable(self, c: int) -> tuple[bytes, ...]:
        """What target chunk c may hold after an abort."""
        cur = bytes(self.set.image(self.target)[self.set.master.span(c)])
        if c in self.old and c not in self.touched:
            return (cur, self.old[c])
        return (cur,)

    def pin(self, c: int, got: bytes) -> bool:
        """Fix the model's target chunk c to what was read; True when it is the old image."""
        if got not in self.acceptable(c):
            raise AssertionError(f"chunk {c}: neither the old nor the new image")
        span = self.set.master.span(c)
        img = self.set.image(self.target)
        if bytes(img[span]) == got:
            return False
        img[span] = got
        return True


class Model:
    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.masters: list[MasterModel] = []
        self.sets: list[SetModel] = []

    def add_master(self, name: str, size: int) -> MasterModel:
        m = MasterModel(name, size, self.chunk)
        self.masters.append(m)
        return m

    def enable(self, name: str, master: MasterModel, kind: str, shadow_size: int,
               overflow: OverflowModel | None = None) -> SetModel:
        s = SetModel(name, master, kind, shadow_size, overflow)
        master.sets.append(s)
        self.sets.append(s)
        return s

    def disable(self, s: SetModel) -> None:
        s.release_all()
        s.master.sets.remove(s)
        self.sets.remove(s)

    # -- I/O --

    def write(self, s: SetModel, side: str, offset: int, data: bytes) -> None:
        m = s.master
        if offset + len(data) > m.size:
            raise ValueError("write beyond the end")
        chunks = chunk_range(offset, len(data), self.chunk)
        if side == MASTER:
            for c in chunks:
                for sib in m.sets:
                    sib.prep_master_write(c)
            m.data[offset:offset + len(data)] = data
            return
        for c in chunks:
            if c in s.own or s.kind != DEPENDENT:
                continue
            if not s._alloc(c):
                # a shadow write needing a new chunk fails; chunks prepared before keep theirs
                raise Refused([OUT_OF_SPACE])
            s.own.add(c)
        if any(c in s.lost for c in chunks):
            raise Refused([OUT_OF_SPACE])
        s.shadow[offset:offset + len(data)] = data

    def read(self, s: SetModel, side: str, offset: int, length: int) -> bytes:
        if side == SHADOW and any(c in s.lost for c in chunk_range(offset, length, self.chunk)):
            raise Refused([OUT_OF_SPACE])
        return bytes(s.image(side)[offset:offset + length])

    # -- copies --

    def copy_refusals(self, s: SetModel, direction: str, owner: int = 0) -> set[str]:
        out: set[str] = set()
        if s.lock_owner and s.lock_owner != owner:
            out.add(IN_USE)
        if direction == TO_MASTER:
            if s.lost:
                out.add(OUT_OF_SPACE)
            if s.incomplete == TO_SHADOW:
                out.add(INCOMPLETE)
        elif s.incomplete == TO_MASTER:
            out.add(INCOMPLETE)
        return out

    def check_copy(self, sets: Sequence[SetModel], direction: str, owner: int = 0) -> None:
        refusals: set[str] = set()
        masters = [s.master for s in sets]
        if direction == TO_MASTER and len(set(map(id, masters))) < len(masters):
            raise Refused([INVALID])   # a group restores a master from one shadow only
        for s in sets:
            refusals |= self.copy_refusals(s, direction, owner)
        if refusals:
            raise Refused(refusals)

    def copy(self, sets: Sequence[SetModel], direction: str, owner: int = 0,
             moved: dict[int, set[int]] | None = None) -> None:
        """Copy/update (same logical result), all sets at one instant, all or nothing. moved:
        per set (by id), the chunks a restore moves when the model cannot know them (an
        independent set's shadow bits may mark chunks that do not differ)."""
        self.check_copy(sets, direction, owner)
        for s in sets:
            if direction == TO_MASTER:
                self._keep_siblings(s, self.restore_moves(s, (moved or {}).get(id(s))))
            self._apply(s, direction)

    def restore_moves(self, s: SetModel, known: set[int] | None = None) -> set[int]:
        """The chunks a restore from s writes to the master: its copy bits at the start."""
        if known is not None:
            return known
        return set(s.own) if s.kind == DEPENDENT else set(range(s.nchunks))

    def _keep_siblings(self, s: SetModel, moved: set[int]) -> None:
        """A restore writes these master chunks: every other set of the master keeps its point
        in time, as for a master write (ascending, as the copier moves them)."""
        for c in sorted(moved):
            for sib in s.master.sets:
                if sib is not s:
                    sib.prep_master_write(c)

    def restore_fits(self, s: SetModel, moved: set[int]) -> bool:
        """No compact sibling runs out of space during a restore from s. When one does, which
        chunks it loses depends on the order the copier's parallel runs take places in."""
        need_ov = 0
        ov_free = 0
        for sib in s.master.sets:
            if sib is s or not sib.compact:
                continue
            need = len(moved - sib.own)
            free_slots = sib.slots - sib.slots_used()
            need_ov += max(0, need - free_slots)
            if sib.overflow is not None:
                ov_free = sib.overflow.free()
        return need_ov <= ov_free

    def _apply(self, s: SetModel, direction: str) -> None:
        if direction == TO_SHADOW:
            s.shadow[:] = s.master.data
            if s.kind == DEPENDENT:   # a new point in time
                s.release_all()
                s.own.clear()
                s.lost.clear()
                s.spilled = False
        else:
            s.master.data[:] = s.shadow
            if s.kind == DEPENDENT:   # restored chunks are no longer the shadow's own
                s.release_all()
                s.own.clear()
        s.incomplete = None

    def begin_copy(self, s: SetModel, direction: str, owner: int = 0) -> PendingCopy:
        """Starts a copy that may be aborted: applies it and remembers what may stay old."""
        self.check_copy([s], direction, owner)
        m = s.master
        src, dst = (m.data, s.shadow) if direction == TO_SHADOW else (s.shadow, m.data)
        old: dict[int, bytes] = {}
        new: dict[int, bytes] = {}
        for c in range(m.nchunks):
            sp = m.span(c)
            if src[sp] != dst[sp]:
                old[c] = bytes(dst[sp])
                new[c] = bytes(src[sp])
        old_own = set(s.own)
        place = dict(s.place)
        self._apply(s, direction)
        if direction == TO_MASTER and s.kind == DEPENDENT:
            # until the copy ends, chunks still to move stay the shadow's own (and keep their
            # place); settle() decides from the engine's bits
            s.own = set(old_own)
            s.place = place
            if s.overflow is not None:
                s.overflow.used += sum(1 for p in place.values() if p == "overflow")
        return PendingCopy(self, s, direction, old, new, old_own)

    def settle(self, p: PendingCopy, incomplete: bool, shadow_bits: set[int]) -> None:
        """After the copy ended (completed or aborted), with the chunks already pinned."""
        s = p.set
        s.incomplete = p.direction if incomplete else None
        if p.direction == TO_MASTER and s.kind == DEPENDENT:
            keep = set(shadow_bits)
            for c in list(s.place):
                if c not in keep:
                    s._free(c)
            s.own = keep

    def write_during_copy(self, p: PendingCopy, side: str, offset: int, data: bytes) -> None:
        """A write while p runs: the chunks it touches are copied first, then written."""
        chunks = chunk_range(offset, len(data), self.chunk)
        p.touch(chunks)
        s = p.set
        if p.direction == TO_MASTER and s.kind == DEPENDENT:
            # the chunk stays (or becomes) the shadow's own: it was in the copy, so it has a place
            s.own.update(chunks)
            if side == SHADOW:
                s.shadow[offset:offset + len(data)] = data
            else:
                s.master.data[offset:offset + len(data)] = data
            return
        self.write(s, side, offset, data)

    def resync(self, s: SetModel) -> None:
        """reset() after a shadow-side failure: a full copy to the shadow (independent) or a new
        point in time (dependent)."""
        self._apply(s, TO_SHADOW)

    # -- locks --

    def lock(self, s: SetModel, owner: int) -> None:
        if s.lock_owner and s.lock_owner != owner:
            raise Refused([IN_USE])
        s.lock_owner = owner

    def unlock(self, s: SetModel, owner: int) -> None:
        if not s.lock_owner:
            raise Refused(["NotLocked"])
        if owner and s.lock_owner != owner:
            raise Refused([IN_USE])
        s.lock_owner = 0
