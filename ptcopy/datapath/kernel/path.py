"""The kernel data path: sets served by device-mapper, the engine keeping bitmaps and copies.

Applications use ``/dev/mapper/ptcopy-<set>-master`` and ``/dev/mapper/ptcopy-<set>-shadow``.
Underneath (``<m>`` = the master's device number, ``<u>`` = the set's uuid, 12 hex digits)::

    master:  raw master <- ptcopy-m<m>-origin (snapshot-origin)
                        <- ptcopy-<u>-mera (era, one per independent set, chained)
                        <- ptcopy-<set>-master (linear, one per set on that master)
    dependent shadow:   ptcopy-<u>-cow (linear: shadow volume + overflow extents)
                        <- ptcopy-<set>-shadow (snapshot of the raw master, store = cow)
    independent shadow: raw shadow <- ptcopy-<u>-sorigin (snapshot-origin)
                        <- ptcopy-<u>-sera (era) <- ptcopy-<set>-shadow (linear)

Copies and updates of independent sets read a frozen snapshot of the source (``ptcopy-<u>-
freeze``, a transient snapshot whose store is a sparse file in the run directory) with the
engine's copier, after folding what the era devices saw into the engine's shadow bitmap. A
point in time is one C transaction that suspends every source origin, creates the frozen views
and resumes (``ptcopy.engine.dm_run``). Dependent sets are dm-snapshots: a new point in time
re-creates the snapshot on an emptied store; an update to the master is a snapshot-merge.

Differences from the userspace path users can see are in docs/kernel-path.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ptcopy import dm, engine, kernelmeta, loopdev
from ptcopy import engine as engine_mod
from ptcopy.engine import (
    CopyInProgress,
    Dependency,
    Direction,
    DmOp,
    Engine,
    Flag,
    Incomplete,
    InUse,
    InvalidArgument,
    Kind,
    NotFound,
    Offline,
    OutOfSpace,
    Progress,
    Set,
    TooSmall,
    WrongKind,
    dm_info,
    dm_message,
    dm_run,
    dm_status,
)
from ptcopy.kernelmeta import Layout, Record

log = logging.getLogger(__name__)

GROW_AT = 0.75          # a compact store this full gets another overflow extent
TIMEOUT = 10.0          # seconds a transaction may hold devices suspended
# udev probes (blkid) a device after every change event, and the resume that puts a new point
# in time in force is one: for a few milliseconds a device can be open with nobody using it.
# An opener still there after this grace is a user, and the operation is refused.
OPEN_GRACE = 3.0


def _settled_open_count(name: str) -> int:
    """The device's open count once transient openers (udev's probe) are gone, or at the end
    of OPEN_GRACE."""
    deadline = time.monotonic() + OPEN_GRACE
    while True:
        info = dm_info(name)
        if not info.exists or not info.open_count or time.monotonic() >= deadline:
            return info.open_count if info.exists else 0
        time.sleep(0.05)


class MergeFailed(Exception):
    """The kernel stopped a snapshot-merge before its end (its status says why)."""


Volume = str | tuple[str, int]
"""A volume to serve: a path, or (path for messages, the open descriptor that was checked)."""


@dataclass(frozen=True)
class _Block:
    """What one volume is served from: the checked descriptor's own device, or for a file the
    loop device bound to that very open file."""

    label: str                # the path as given (messages)
    node: str                 # a block device node (the given device, or /dev/loopN)
    ref: str                  # "major:minor", what tables name: the device that was checked
    key: tuple[int, int]      # (0, rdev) of a device, (st_dev, st_ino) of a file
    loop: bool


def _block(label: str, fd: int) -> _Block:
    """The block device a checked descriptor is served from. Nothing is looked up by path:
    a block device is named in tables by its device number, a file gets the loop device bound
    to the open file (one per file, found again by device and inode, so sets sharing a master
    file share one origin and a restarted ptcopyd finds the device it built on)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return _Block(label, label, f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}",
                      (0, st.st_rdev), False)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(1001, f"{label} is neither a block device nor a file")
    try:
        lp = loopdev.loop_over(fd) or loopdev.attach_fd(fd)
    except loopdev.LoopError as e:
        raise InvalidArgument(1001, f"cannot attach a loop device to {label}: {e}") from e
    return _Block(label, lp.device, f"{os.major(lp.rdev)}:{os.minor(lp.rdev)}",
                  (st.st_dev, st.st_ino), True)


@contextlib.contextmanager
def _opened(vols: Sequence[Volume | None]) -> Iterator[list[tuple[str, int] | None]]:
    """(label, descriptor) for each volume: the caller's descriptors as they are; paths (a
    library caller, the tests) opened here and closed afterwards."""
    mine: list[int] = []
    out: list[tuple[str, int] | None] = []
    try:
        for v in vols:
            if v is None or isinstance(v, tuple):
                out.append(v)
                continue
            fd = os.open(v, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
            mine.append(fd)
            out.append((v, fd))
        yield out
    finally:
        for fd in mine:
            os.close(fd)


def _size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


def _ref(name: str) -> str:
    """A dm device as tables name it: major:minor (no node needed)."""
    info = dm_info(name)
    if not info.exists:
        raise NotFound(1017, f"device-mapper device {name} does not exist")
    return f"{info.major}:{info.minor}"


@dataclass
class _Master:
    """Devices shared by every set on one master."""

    path: str      # the master's block device node
    ref: str       # its device number, as tables name it
    size: int
    key: str
    sets: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)   # era devices, bottom-up

    @property
    def origin(self) -> str:
        return f"ptcopy-{self.key}-origin"

    @property
    def top(self) -> str:
        return self.chain[-1] if self.chain else self.origin


@dataclass
class KernelSet:
    """One set as the kernel path serves it."""

    name: str
    set: Set
    kind: Kind
    chunk: int
    master: str
    shadow: str
    bitmap: str
    bitmap_fd: int
    master_size: int
    shadow_size: int
    layout: Layout
    record: Record
    uid: str
    overflow: str | None = None
    overflow_fd: int = -1
    blocks: dict[str, _Block] = field(default_factory=dict)   # role -> what it is served from
    pending: Direction | None = None   # a copy whose frozen view must be dismantled
    merging: int = -1                  # store sectors to merge at the start, -1 = no merge
    merge_failed: str = ""             # why the kernel stopped the merge ("" = it did not)
    merge_owner: int = 0               # the lock owner who started the merge
    out_of_space: bool = False

    def dev(self, part: str) -> str:
        return f"ptcopy-{self.uid}-{part}"

    @property
    def master_device(self) -> str:
        return dm.node(f"ptcopy-{self.name}-master")

    @property
    def shadow_device(self) -> str:
        return dm.node(f"ptcopy-{self.name}-shadow")

    @property
    def compact(self) -> bool:
        return self.kind is Kind.DEPENDENT and self.shadow_size < self.master_size


class KernelPath:
    """Serves sets through device-mapper; run_dir holds the frozen views' sparse stores."""

    def __init__(self, engine: Engine, run_dir: str, *, poll: float = 0.2) -> None:
        dm.require()
        # A ptcopyd that died inside a transaction can leave ptcopy devices suspended (every
        # application on them hangs) or with a table loaded and never resumed: undo that first,
        # as the transaction's own rollback would have, before this process runs any.
        recover = getattr(engine_mod, "dm_recover", None)   # the engine's, where it has it
        if recover is not None:
            for dev, what in recover("ptcopy-").items():
                log.warning("device-mapper device %s left by an earlier ptcopyd: %s", dev, what)
        engine.defer_copies(True)
        self._engine = engine
        self._run_dir = os.path.join(os.path.abspath(run_dir), "kernel")
        # the frozen views' stores hold copies of the sources' data: root's alone
        os.makedirs(self._run_dir, mode=0o700, exist_ok=True)
        os.chmod(self._run_dir, 0o700)
        self._lock = threading.RLock()
        self._sets: dict[str, KernelSet] = {}
        self._masters: dict[str, _Master] = {}
        self._stop = threading.Event()
        self._poll = poll
        self._thread = threading.Thread(target=self._monitor, name="ptcopy-kernel", daemon=True)
        self._thread.start()

    # ---- serving ----------------------------------------------------------------------------

    @staticmethod
    def layout_for(master_size: int, shadow_size: int, chunk: int, kind: Kind) -> Layout:
        return kernelmeta.layout(master_size, shadow_size, chunk, kind)

    @staticmethod
    def store_needed(master_size: int, chunk: int) -> int:
        """Bytes a full-size dependent shadow needs on this path."""
        return kernelmeta.store_needed(master_size, chunk)

    @staticmethod
    def check_sizes(kind: Kind, chunk: int, master_size: int, shadow: tuple[str, int],
                    bitmap: tuple[str, int] | None = None) -> None:
        """Refuse volumes this path cannot serve a set on, naming the size needed; callers run
        it before the engine writes anything."""
        path, size = shadow
        need = kernelmeta.store_needed(master_size, chunk)
        if kind is Kind.DEPENDENT and master_size <= size < need:
            # full-size but short of dm-snapshot's own metadata: it would run out of space
            # where the same set on the userspace path cannot; compact sets may spill
            raise TooSmall(1002, f"shadow volume {path} has {size} bytes; on the kernel data "
                                 f"path a full-size dependent shadow needs {need} (the master "
                                 "plus dm-snapshot's metadata), or make it smaller than the "
                                 "master and attach an overflow volume")
        if bitmap is not None:
            kernelmeta.check_size(bitmap[1], kernelmeta.layout(master_size, size, chunk, kind),
                                  bitmap[0])

    def serve(self, name: str, set_: Set, master: Volume, shadow: Volume, bitmap: Volume, *,
              overflow: Volume | None = None) -> KernelSet:
        """Build (or after a reboot rebuild) the set's devices. Each volume is a block device
        or a file, given as the descriptor the caller checked (ptcopyd) or as a path: devices
        are named in tables by the descriptor's device number and files get the loop device
        bound to the open file, so nothing is resolved by path again."""
        with self._lock:
            if name in self._sets:
                raise InvalidArgument(1001, f"set {name} is already served")
            st = set_.status()
            kind = Kind(st.kind)
            with _opened([master, shadow, bitmap, overflow]) as vols:
                m, s, b, ov = vols
                assert m is not None and s is not None and b is not None
                self.check_sizes(kind, st.chunk_size, st.master_size, (s[0], st.shadow_size))
                lay = kernelmeta.layout(st.master_size, st.shadow_size, st.chunk_size, kind)
                blocks: dict[str, _Block] = {}
                bfd = ofd = -1
                ks = None
                try:
                    for role, v in (("master", m), ("shadow", s), ("bitmap", b), ("overflow", ov)):
                        if v is not None:
                            blocks[role] = _block(*v)
                    # the record is written where the engine writes its bitmaps: the volume as
                    # given (its own descriptor, kept)
                    bfd = os.dup(b[1])
                    os.set_inheritable(bfd, False)
                    if ov is not None:
                        ofd = os.dup(ov[1])
                        os.set_inheritable(ofd, False)
                    kernelmeta.check_size(_size(bfd), lay, b[0])
                    rec = kernelmeta.read_record(bfd, lay, b[0])
                    # a record of an earlier set on a reused bitmap volume describes nothing
                    fresh = not _formatted(bfd, lay) or rec.uuid != st.uuid.hex
                    if fresh:
                        rec = Record(uuid=st.uuid.hex)
                    ks = KernelSet(name, set_, kind, st.chunk_size, blocks["master"].node,
                                   blocks["shadow"].node, blocks["bitmap"].node, bfd,
                                   st.master_size, st.shadow_size, lay, rec, st.uuid.hex[:12],
                                   ov[0] if ov is not None else None, ofd, blocks)
                    mb = blocks["master"]
                    rdev = int(mb.ref.split(":")[0]), int(mb.ref.split(":")[1])
                    key = f"m{rdev[0]}x{rdev[1]}"
                    ms = self._masters.get(key) or _Master(mb.node, mb.ref, st.master_size, key)
                    ms.sets.append(name)
                    try:
                        self._build(ks, ms, fresh)
                    except BaseException:
                        ms.sets.remove(name)
                        raise
                except BaseException:
                    for fd in (bfd, ofd):
                        if fd >= 0:
                            os.close(fd)
                    self._release_loops(list(blocks.values()))
                    raise
            self._masters[key] = ms
            self._sets[name] = ks
            return ks

    def _build(self, ks: KernelSet, ms: _Master, fresh: bool) -> None:
        if not fresh and dm.exists(f"ptcopy-{ks.name}-master"):
            self._adopt(ks, ms)
            return
        made: list[str] = []
        try:
            if not dm.exists(ms.origin):
                dm.create(ms.origin, dm.origin(ms.ref, ms.size))
                made.append(ms.origin)
            if ks.kind is Kind.INDEPENDENT:
                self._build_independent(ks, ms, fresh, made)
            else:
                self._build_dependent(ks, ms, fresh, made)
            top = f"ptcopy-{ks.name}-master"
            dm.create(top, dm.linear(_ref(ms.top), ms.size))
            made.append(top)
            if fresh:   # from now on the era metadata and the store hold what they record
                kernelmeta.write_record(ks.bitmap_fd, ks.layout, ks.record)
        except BaseException:
            for name in reversed(made):
                with contextlib.suppress(Exception):
                    dm.remove(name)
            if ks.kind is Kind.INDEPENDENT and ks.dev("mera") in ms.chain:
                ms.chain.remove(ks.dev("mera"))
            raise

    def _adopt(self, ks: KernelSet, ms: _Master) -> None:
        """The devices outlived the process that built them (ptcopyd restarted or was killed):
        take them over as they are, finishing what a copy or merge left."""
        ms.chain = _chain_above(ms.origin)
        for name in (f"ptcopy-{ks.name}-master", f"ptcopy-{ks.name}-shadow"):
            if dm.exists(name):
                dm.ensure_node(name)
        table = dm_status(ms.origin, table=True).split()
        if len(table) > 2 and table[2] == "snapshot-merge":
            try:
                left = self._merge_left(ks, ms)
            except MergeFailed as e:
                ks.merge_failed, left = str(e), 1
            ks.merging = max(left or 0, 1)
        elif ks.kind is Kind.DEPENDENT and not dm_info(f"ptcopy-{ks.name}-shadow").live_table:
            self._reload_shadow(ks, ms)
        elif dm.exists(ks.dev("freeze")):
            freeze = _ref(ks.dev("freeze"))
            shadow_table = dm_status(f"ptcopy-{ks.name}-shadow", table=True)
            ks.pending = Direction.TO_SHADOW if freeze in shadow_table else Direction.TO_MASTER
            self._dismantle(ks, ms)
        log.info("set %s: took over its device-mapper devices", ks.name)

    def _reload_shadow(self, ks: KernelSet, ms: _Master) -> None:
        """A dependent shadow a crash left without its snapshot (at a merge's start or end):
        load it over the store as the store is, never reset. A header still valid keeps the
        point in time (the merge had not started, or had emptied the store); one zeroed by the
        end of a merge starts the new point in time, as that merge meant to."""
        shadow = f"ptcopy-{ks.name}-shadow"
        ops = [DmOp("suspend", ms.origin)]
        if not dm.exists(shadow):
            ops.append(DmOp("create", shadow))
        ops += [DmOp("load", shadow, dm.snapshot(ms.ref, _ref(ks.dev("cow")), ks.master_size,
                                                 ks.chunk)),
                DmOp("resume", shadow), DmOp("resume", ms.origin)]
        dm_run(ops, timeout=TIMEOUT)
        dm.ensure_node(shadow)
        log.warning("set %s: its shadow device was rebuilt over its store", ks.name)

    def _build_independent(self, ks: KernelSet, ms: _Master, fresh: bool,
                           made: list[str]) -> None:
        lay = ks.layout
        if fresh:   # an all-zero superblock makes era format its metadata
            for off in (lay.master_era, lay.shadow_era):
                os.pwrite(ks.bitmap_fd, b"\0" * kernelmeta.MIB, off)
            os.fsync(ks.bitmap_fd)
        steps = [
            (ks.dev("mmeta"), dm.linear(ks.blocks["bitmap"].ref, lay.era_size, lay.master_era)),
            (ks.dev("smeta"), dm.linear(ks.blocks["bitmap"].ref, lay.era_size, lay.shadow_era)),
            (ks.dev("sorigin"), dm.origin(ks.blocks["shadow"].ref, ks.master_size)),
        ]
        for name, table in steps:
            dm.create(name, table)
            made.append(name)
        for name, meta, below in ((ks.dev("mera"), ks.dev("mmeta"), ms.top),
                                  (ks.dev("sera"), ks.dev("smeta"), ks.dev("sorigin"))):
            dm.create(name, dm.era(_ref(meta), _ref(below), ks.master_size, ks.chunk))
            made.append(name)
        ms.chain.append(ks.dev("mera"))
        self._relink(ms)
        dm.create(f"ptcopy-{ks.name}-shadow", dm.linear(_ref(ks.dev("sera")), ks.master_size))
        made.append(f"ptcopy-{ks.name}-shadow")

    def _build_dependent(self, ks: KernelSet, ms: _Master, fresh: bool,
                         made: list[str]) -> None:
        cow = ks.dev("cow")
        dm.create(cow, self._cow_table(ks))
        made.append(cow)
        if fresh:   # an all-zero header makes dm-snapshot start an empty store
            dm_run([DmOp("zero", dm.node(cow), length=ks.chunk)])
        shadow = f"ptcopy-{ks.name}-shadow"
        dm_run([DmOp("suspend", ms.origin), DmOp("create", shadow),
                DmOp("load", shadow, dm.snapshot(ms.ref, _ref(cow), ks.master_size, ks.chunk)),
                DmOp("resume", shadow), DmOp("resume", ms.origin)], timeout=TIMEOUT)
        dm.ensure_node(shadow)
        made.append(shadow)

    @staticmethod
    def _cow_table(ks: KernelSet, extents: list[tuple[str, int, int]] | None = None) -> str:
        pieces = [(ks.blocks["shadow"].ref, 0, ks.shadow_size // 512 * 512)]
        extents = ks.record.extents if extents is None else extents
        if extents and "overflow" not in ks.blocks:
            raise Offline(1009, f"set {ks.name}'s shadow uses {len(extents)} extent(s) of its "
                                "overflow volume, which is not attached")
        # every extent is on the set's overflow volume (detaching it waits until none is used)
        pieces += [(ks.blocks["overflow"].ref, off, n) for _, off, n in extents]
        return dm.concat(pieces)

    def _relink(self, ms: _Master) -> None:
        """Every set's master device over the top of its master's chain."""
        for name in ms.sets:
            if dm.exists(f"ptcopy-{name}-master"):   # the set being built has none yet
                dm.reload(f"ptcopy-{name}-master", dm.linear(_ref(ms.top), ms.size))

    def get(self, name: str) -> KernelSet:
        try:
            return self._sets[name]
        except KeyError:
            raise NotFound(1017, f"set {name!r} is not served") from None

    @property
    def served(self) -> dict[str, KernelSet]:
        return dict(self._sets)

    def users(self, name: str, direction: Direction) -> list[str]:
        """Who holds the set's master or shadow device open (mounts, stacked devices)."""
        ks = self.get(name)
        dev = ks.master_device if direction is Direction.TO_MASTER else ks.shadow_device
        base = os.path.basename(dev)
        count = _settled_open_count(base)
        found = loopdev.users(dev) if count and os.path.exists(dev) else []
        if count and not found:
            found = [f"{count} opener(s)"]
        return found

    def unserve(self, name: str, *, force: bool = False) -> None:
        """Dismantle the set's devices; refused while one is open, unless ``force``."""
        with self._lock:
            ks = self.get(name)
            if ks.pending is not None or ks.merging >= 0:
                raise CopyInProgress(1006, f"set {name} is copying; wait for it first")
            if not force:
                for d in Direction:
                    busy = self.users(name, d)
                    if busy:
                        raise InUse(1005, f"{name}'s devices are in use by {', '.join(busy)}")
            ms = self._master_of(ks)
            dm.remove(f"ptcopy-{name}-master")
            ms.sets.remove(name)
            dm.remove(f"ptcopy-{name}-shadow")
            if ks.kind is Kind.INDEPENDENT:
                self._unchain(ms, ks.dev("mera"))
                for part in ("sera", "sorigin", "mmeta", "smeta"):
                    dm.remove(ks.dev(part))
            else:
                dm.remove(ks.dev("cow"))
            if not ms.sets:
                for era_dev in reversed(ms.chain):
                    dm.remove(era_dev)
                ms.chain.clear()
                dm.remove(ms.origin)
                del self._masters[ms.key]
            os.close(ks.bitmap_fd)
            if ks.overflow_fd >= 0:
                os.close(ks.overflow_fd)
            del self._sets[name]
            self._release_loops(list(ks.blocks.values()))

    def _release_loops(self, blocks: list[_Block]) -> None:
        """Detach the loop devices of these volumes that no served set uses any more."""
        used = {b.ref for k in self._sets.values() for b in k.blocks.values()}
        for ref, node in sorted({(b.ref, b.node) for b in blocks if b.loop}):
            if ref in used:
                continue
            with contextlib.suppress(loopdev.LoopError):   # still held: it stays
                loopdev.detach(node)
            used.add(ref)

    def _unchain(self, ms: _Master, era_dev: str) -> None:
        """Take one era out of the master's chain. One in the middle becomes a pass-through
        (era tables are never reloaded in place: two instances would share its metadata)."""
        i = ms.chain.index(era_dev)
        if i == len(ms.chain) - 1:
            ms.chain.pop()
            self._relink(ms)
            dm.remove(era_dev)
            while ms.chain and _is_passthrough(ms.chain[-1]):
                dead = ms.chain.pop()
                self._relink(ms)
                dm.remove(dead)
            return
        below = ms.chain[i - 1] if i else ms.origin
        # a suspended era must not be queried: the transaction only loads and resumes it
        dm_run([DmOp("suspend", era_dev), DmOp("load", era_dev, dm.linear(_ref(below), ms.size)),
                DmOp("resume", era_dev)], timeout=TIMEOUT)

    def _master_of(self, ks: KernelSet) -> _Master:
        for ms in self._masters.values():
            if ks.name in ms.sets:
                return ms
        raise NotFound(1017, f"no master stack for set {ks.name}")

    # ---- copies -----------------------------------------------------------------------------

    def copy(self, names: Sequence[str], direction: Direction, *, full: bool,
             owner: int = 0) -> float:
        """Copy or update sets at one point in time; returns seconds the sources were held."""
        if not names:
            raise InvalidArgument(1001, "no set named")
        with self._lock:
            kss = [self.get(n) for n in names]
            if len({ks.name for ks in kss}) != len(kss):
                raise InvalidArgument(1001, "a set is named twice")
            # Everything that can refuse is asked of every set before anything changes: the
            # transaction below replaces dependent points in time at once, so a refusal
            # after it (a lock, an offline volume) would leave a group half copied.
            for ks in kss:
                self._check(ks, direction, owner)
            if direction is Direction.TO_MASTER and any(k.kind is Kind.DEPENDENT for k in kss):
                if len(kss) > 1:
                    raise WrongKind(1007, "a group restore (copy or update to the masters) "
                                          "with dependent sets is not available on the "
                                          "kernel data path: each dependent shadow merges "
                                          "into its master on its own; restore the sets one "
                                          "at a time")
                return self._merge(kss[0], owner)
            try:
                ops, after = self._freeze_ops(kss, direction)
                held = dm_run(ops, timeout=TIMEOUT)
                for fn in after:
                    fn()
            except BaseException:
                for ks in kss:
                    self._dismantle(ks)
                raise
            for ks in kss:
                if ks.kind is Kind.DEPENDENT:
                    ks.set.update(Direction.TO_SHADOW, owner=owner)
                    ks.record.extents = []
                    kernelmeta.write_record(ks.bitmap_fd, ks.layout, ks.record)
                    ks.out_of_space = False
                    loopdev.flush_buffers(ks.shadow_device)
                    continue
                self._fold(ks)
                try:
                    self._use_frozen(ks)
                    if full:
                        ks.set.copy(direction, owner=owner)
                    else:
                        ks.set.update(direction, owner=owner)
                except BaseException:
                    self._dismantle(ks)
                    raise
            return held

    def _check(self, ks: KernelSet, direction: Direction, owner: int) -> None:
        if ks.pending is not None or ks.merging >= 0 or ks.set.progress().active:
            raise CopyInProgress(1006, f"set {ks.name} is already copying; wait for it or "
                                       "abort it")
        # what the engine's copy would refuse (its own check comes after the transaction)
        st = ks.set.status()
        if st.lock_owner and st.lock_owner != owner:
            raise InUse(1005, f"set {ks.name} is locked by another client; its point in time "
                              "cannot change until it is unlocked")
        offline = st.flags & (Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE
                              | Flag.OVERFLOW_OFFLINE)
        if offline:
            raise Offline(1009, f"a volume of set {ks.name} is offline; reset the set first")
        incomplete_restore = bool(st.flags & Flag.INCOMPLETE and st.flags & Flag.TO_MASTER)
        if direction is Direction.TO_MASTER:
            if st.flags & Flag.OUT_OF_SPACE or ks.out_of_space:
                raise OutOfSpace(1010, f"shadow of set {ks.name} lost chunks when it ran out "
                                       "of space; it cannot be copied to the master")
            if st.flags & Flag.INCOMPLETE and not incomplete_restore:
                raise Incomplete(1013, f"shadow of set {ks.name} was left incomplete by an "
                                       "aborted copy; update it from the master first")
        elif incomplete_restore:
            raise Incomplete(1013, f"master of set {ks.name} was left incomplete by an aborted "
                                   "restore; finish it with an update to the master first")
        target = ks.shadow_device if direction is Direction.TO_SHADOW else ks.master_device
        count = _settled_open_count(os.path.basename(target))
        if count:
            side = "shadow" if direction is Direction.TO_SHADOW else "master"
            busy = self.users(ks.name, direction) or [f"{count} opener(s)"]
            raise InUse(1005, f"cannot copy into the {side} of {ks.name}: it is in use by "
                              f"{', '.join(busy)}; unmount it first")
        # the merge takes the shadow away
        if (ks.kind is Kind.DEPENDENT and direction is Direction.TO_MASTER
                and _settled_open_count(f"ptcopy-{ks.name}-shadow")):
                raise InUse(1005, f"the shadow of {ks.name} is open; close it before merging "
                                  "it into the master")
        ms = self._master_of(ks)
        if direction is Direction.TO_MASTER and len(ms.sets) > 1:
            raise Dependency(1008, f"master {ks.master} has {len(ms.sets)} shadows; writing it "
                                   "from one would change the point in time of the others")

    def _freeze_ops(self, kss: list[KernelSet], direction: Direction
                    ) -> tuple[list[DmOp], list[Callable[[], None]]]:
        """One transaction: suspend every source origin with the era devices above it (top
        first), build the frozen views (or new dependent snapshots), resume bottom-up. Resuming
        an era rolls it over, so the era read afterwards starts exactly at the point in time:
        the next update copies only what was written since. Returns the transaction and what
        to do once it ran."""
        suspend: list[str] = []
        body: list[DmOp] = []
        after: list[Callable[[], None]] = []
        for ks in kss:
            ms = self._master_of(ks)
            # The source's top devices first: suspending a device freezes a file system
            # mounted on it (dm's lockfs), so the point in time is a consistent one. Then every
            # era of the master (writes pass them all), the origin, and the shadow's stack.
            tops = [f"ptcopy-{n}-master" for n in ms.sets]
            if ks.kind is Kind.INDEPENDENT and direction is Direction.TO_MASTER:
                tops.append(f"ptcopy-{ks.name}-shadow")
            for name in [*tops, *reversed(ms.chain), ms.origin] + (
                    [ks.dev("sera"), ks.dev("sorigin")] if ks.kind is Kind.INDEPENDENT else []):
                if name not in suspend:
                    suspend.append(name)
            if ks.kind is Kind.DEPENDENT:
                shadow = f"ptcopy-{ks.name}-shadow"
                cow = ks.dev("cow")
                cow_table = self._cow_table(ks, [])   # a new point in time frees the extents
                body += [DmOp("load", shadow, f"0 {ks.master_size // 512} error"),
                         DmOp("resume", shadow),
                         DmOp("load", cow, cow_table), DmOp("resume", cow),
                         DmOp("zero", dm.node(cow), length=ks.chunk),
                         DmOp("load", shadow, dm.snapshot(ms.ref, _ref(cow), ks.master_size,
                                                          ks.chunk)),
                         DmOp("resume", shadow)]
            else:
                raw = ms.ref if direction is Direction.TO_SHADOW else ks.blocks["shadow"].ref
                store = self._freeze_store(ks)
                freeze = ks.dev("freeze")
                body += [DmOp("create", freeze),
                         DmOp("load", freeze, dm.snapshot(raw, store, ks.master_size, ks.chunk,
                                                          persistent=False)),
                         DmOp("resume", freeze)]
                ks.pending = direction
                after.append(functools.partial(self._show_frozen, ks, direction))
        ops = [DmOp("suspend", s) for s in suspend] + body
        ops += [DmOp("resume", s) for s in reversed(suspend)]
        return ops, after

    def _freeze_path(self, ks: KernelSet) -> str:
        return os.path.join(self._run_dir, f"{ks.uid}.freeze")

    def _freeze_store(self, ks: KernelSet) -> str:
        path = self._freeze_path(ks)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)   # a leftover: made again, never reused with its mode
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.ftruncate(fd, max(ks.master_size, 1 << 20))   # sparse: only changes are stored
        finally:
            os.close(fd)
        return loopdev.attach(path, direct_io=False)

    def _drop_freeze_store(self, ks: KernelSet) -> None:
        path = os.path.realpath(self._freeze_path(ks))
        for lp in loopdev.list_loops():
            if lp.backing_file in (path, f"{path} (deleted)"):
                with contextlib.suppress(loopdev.LoopError):
                    loopdev.detach(lp.device)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def _use_frozen(self, ks: KernelSet) -> None:
        # opened here without O_EXCL: the target device stacked on the view holds it too
        node = dm.node(ks.dev("freeze"))
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ks.set.copy_source((node, fd))
        finally:
            os.close(fd)

    def _show_frozen(self, ks: KernelSet, direction: Direction) -> None:
        """The target shows the new point in time at once, read-only until the copy ends."""
        dm.ensure_node(ks.dev("freeze"))
        top = f"ptcopy-{ks.name}-shadow" if direction is Direction.TO_SHADOW \
            else f"ptcopy-{ks.name}-master"
        dm.reload(top, dm.linear(_ref(ks.dev("freeze")), ks.master_size), read_only=True)
        loopdev.flush_buffers(dm.node(top))

    def _fold(self, ks: KernelSet) -> None:
        """What the eras saw since the last baselines joins the shadow bitmap; then the new
        baselines are recorded. A crash in between only makes the next update copy more."""
        nchunks = -(-ks.master_size // ks.chunk)
        runs: list[tuple[int, int]] = []
        new: dict[str, int] = {}
        for side, base in (("m", ks.record.master_era), ("s", ks.record.shadow_era)):
            era_dev, meta = ks.dev(f"{side}era"), ks.dev(f"{side}meta")
            new[side] = dm.era_current(era_dev)
            if base is None:
                runs.append((0, nchunks))
                continue
            if dm.era_held(era_dev):
                # a crash inside an earlier fold left it; that fold's baseline was never
                # recorded, so this one reads everything since the old baseline again
                dm_message(era_dev, "drop_metadata_snap")
            dm_message(era_dev, "take_metadata_snap")
            try:
                runs += kernelmeta.written_since(dm.ensure_node(meta), base)
            finally:
                dm_message(era_dev, "drop_metadata_snap")
        for first, n in runs:
            if first < nchunks:
                ks.set.mark(first, min(n, nchunks - first))
        ks.record.master_era, ks.record.shadow_era = new["m"], new["s"]
        kernelmeta.write_record(ks.bitmap_fd, ks.layout, ks.record)

    def _dismantle(self, ks: KernelSet, ms: _Master | None = None) -> None:
        """After a copy (done, aborted or failed): the target is live and writable again."""
        direction = ks.pending
        ks.pending = None
        with contextlib.suppress(Exception):
            ks.set.copy_source(None)
        if direction is not None:
            ms = ms or self._master_of(ks)
            if direction is Direction.TO_SHADOW:
                top, below = f"ptcopy-{ks.name}-shadow", ks.dev("sera")
            else:
                top, below = f"ptcopy-{ks.name}-master", ms.top
            dm.reload(top, dm.linear(_ref(below), ks.master_size))
            loopdev.flush_buffers(dm.node(top))
        dm.remove(ks.dev("freeze"))
        self._drop_freeze_store(ks)

    # ---- dependent update to the master: snapshot-merge -------------------------------------

    def _merge(self, ks: KernelSet, owner: int = 0) -> float:
        use = dm.snapshot_usage(f"ptcopy-{ks.name}-shadow")
        if not use.valid or use.overflow:
            raise OutOfSpace(1010, f"shadow of set {ks.name} ran out of space; it cannot be "
                                   "merged into the master")
        ms = self._master_of(ks)
        shadow = f"ptcopy-{ks.name}-shadow"
        held = dm_run([DmOp("remove", shadow), DmOp("suspend", ms.origin),
                       DmOp("load", ms.origin, dm.merge(ms.ref, _ref(ks.dev("cow")), ms.size,
                                                        ks.chunk)),
                       DmOp("resume", ms.origin)], timeout=TIMEOUT)
        dm.drop_node(shadow)
        ks.merge_failed = ""
        ks.merge_owner = owner
        ks.merging = max(use.allocated - use.metadata, 1)
        # the master shows the shadow's data from now on: no reader may get cached old blocks
        loopdev.flush_buffers(ks.master_device)
        return held

    def _merge_left(self, ks: KernelSet, ms: _Master | None = None) -> int | None:
        """Sectors still to merge, None when the origin is not merging. A merge the kernel
        stopped (invalid store, failed write) raises MergeFailed: it is not over."""
        fields = dm_status((ms or self._master_of(ks)).origin).split()
        if len(fields) < 3 or fields[2] != "snapshot-merge":
            return None
        if len(fields) < 5 or "/" not in fields[3]:
            raise MergeFailed(" ".join(fields[3:]) or "no status")
        return int(fields[3].split("/")[0]) - int(fields[4])

    def _merge_done(self, ks: KernelSet) -> None:
        """The merge is complete: swap the origin back and start the new point in time.

        The old merge target must be gone before the new snapshot is loaded. A snapshot loaded
        while a table on the same origin still uses its store is a *handover* in dm-snapshot:
        the new snapshot skips reading the store and takes over the old target's in-memory
        exception table at resume. The store's header, zeroed here to start an empty store,
        would then never be written again, and the next merge (or a reassembly) would read a
        zero header as "new store" and merge nothing (issue 18). So: hold writes at the set's
        top devices, replace the merge target by a plain origin and resume it (that destroys
        the merge target), then, with the origin suspended again, reset the store and load the
        new snapshot, which now reads and initialises the store itself."""
        ms = self._master_of(ks)
        shadow = f"ptcopy-{ks.name}-shadow"
        cow = ks.dev("cow")
        tops = [f"ptcopy-{n}-master" for n in ms.sets if dm.exists(f"ptcopy-{n}-master")]
        hold = [*tops, *reversed(ms.chain)]
        ops = [DmOp("suspend", d) for d in hold]
        ops += [DmOp("suspend", ms.origin), DmOp("load", ms.origin, dm.origin(ms.ref, ms.size)),
                DmOp("resume", ms.origin),
                DmOp("suspend", ms.origin),
                # a new point in time frees the overflow extents, as a copy to the shadow does
                DmOp("load", cow, self._cow_table(ks, [])), DmOp("resume", cow),
                DmOp("zero", dm.node(cow), length=ks.chunk)]
        if not dm.exists(shadow):
            ops.append(DmOp("create", shadow))
        ops += [DmOp("load", shadow, dm.snapshot(ms.ref, _ref(cow), ks.master_size, ks.chunk)),
                DmOp("resume", shadow), DmOp("resume", ms.origin)]
        ops += [DmOp("resume", d) for d in reversed(hold)]
        dm_run(ops, timeout=TIMEOUT)
        dm.ensure_node(shadow)
        try:   # the engine's view: a new point in time (the devices already have it)
            ks.set.update(Direction.TO_SHADOW, owner=ks.merge_owner)
        except engine.PtcopyError as e:
            log.warning("set %s: merged, but the engine did not record the new point in "
                        "time: %s", ks.name, e)
        ks.record.extents = []
        kernelmeta.write_record(ks.bitmap_fd, ks.layout, ks.record)
        ks.out_of_space = False
        loopdev.flush_buffers(ks.master_device)
        loopdev.flush_buffers(ks.shadow_device)
        # last: a job following the merge ends only now, with the new point in time in force
        ks.merging = -1

    # ---- observing --------------------------------------------------------------------------

    def progress(self, name: str) -> Progress:
        """The copy's progress; for a merge, sectors merged of those to merge. Active until
        the target is writable again."""
        ks = self.get(name)
        if ks.merging < 0:
            p = ks.set.progress()
            return dataclasses.replace(p, active=True) if ks.pending is not None else p
        if ks.merge_failed:
            return Progress(False, Direction.TO_MASTER, False, errno.EIO, 0, ks.merging, 0,
                            ks.merging * 512, 0, 0.0)
        try:
            left = self._merge_left(ks) or 0
        except MergeFailed:
            left = ks.merging
        done = max(ks.merging - left, 0)
        return Progress(True, Direction.TO_MASTER, False, 0, done, ks.merging, done * 512,
                        ks.merging * 512, 0, 0.0)

    def busy(self, name: str) -> bool:
        ks = self.get(name)
        return ks.pending is not None or ks.merging >= 0

    def wait(self, name: str, timeout: float | None = None) -> bool:
        """Until the set's copy or merge is over and its target is writable again."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                self._tick()
                if not self.busy(name):
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def abort(self, name: str) -> None:
        ks = self.get(name)
        if ks.merging >= 0:
            raise WrongKind(1007, f"set {name} is merging in the kernel; a snapshot-merge "
                                  "cannot be stopped half way")
        ks.set.abort()

    def status(self, name: str) -> dict[str, object]:
        """Kernel-side facts: devices, store usage of a dependent shadow, merge state."""
        ks = self.get(name)
        out: dict[str, object] = {"master_device": ks.master_device,
                                  "shadow_device": ks.shadow_device,
                                  "merging": ks.merging >= 0, "copying": ks.pending is not None,
                                  "out_of_space": ks.out_of_space}
        if ks.kind is Kind.DEPENDENT and ks.merging < 0:
            use = dm.snapshot_usage(f"ptcopy-{ks.name}-shadow")
            out.update(store_used=use.allocated * 512, store_size=use.total * 512,
                       extents=len(ks.record.extents))
        return out

    def poll(self) -> None:
        """One round of what the monitor thread does every ``poll`` seconds: finish copies and
        merges, grow compact stores, flag the ones that ran out of space."""
        with self._lock:
            self._tick()

    def _monitor(self) -> None:
        while not self._stop.wait(self._poll):
            with self._lock:
                try:
                    self._tick()
                except Exception:   # keep watching; the next round retries
                    log.exception("kernel data path monitor")

    def _tick(self) -> None:
        for ks in list(self._sets.values()):
            if ks.pending is not None and not ks.set.progress().active:
                self._dismantle(ks)
            elif ks.merging >= 0 and not ks.merge_failed:
                try:
                    left = self._merge_left(ks)
                except MergeFailed as e:
                    ks.merge_failed = str(e)
                    log.error("set %s: the kernel stopped merging its shadow into the master "
                              "(%s); the master is left as the kernel has it", ks.name, e)
                    continue
                if (left or 0) <= 0:
                    self._merge_done(ks)
            elif ks.kind is Kind.DEPENDENT and ks.merging < 0:
                self._watch_store(ks)

    def _watch_store(self, ks: KernelSet) -> None:
        """Grow a compact shadow's store into its overflow volume before it fills; flag the set
        out of space when it could not (the kernel then drops the snapshot, never a master
        write)."""
        use = dm.snapshot_usage(f"ptcopy-{ks.name}-shadow")
        if not use.valid or use.overflow:
            if not ks.out_of_space:
                log.warning("set %s: shadow out of space; its point in time is lost", ks.name)
            ks.out_of_space = True
            return
        if use.fraction < GROW_AT or not ks.overflow:
            return
        piece = self._allocate(ks, max(ks.chunk * 64, ks.shadow_size // 2))
        if piece is None:
            return
        ks.record.extents.append(piece)
        kernelmeta.write_record(ks.bitmap_fd, ks.layout, ks.record)   # before it is used
        dm.reload(ks.dev("cow"), self._cow_table(ks))
        log.info("set %s: exception store grown by %d bytes from %s", ks.name, piece[2],
                 ks.overflow)

    def _allocate(self, ks: KernelSet, want: int) -> tuple[str, int, int] | None:
        """First free range of the overflow volume (after the engine's header and slot map),
        across every served set's extents on it."""
        assert ks.overflow is not None and ks.overflow_fd >= 0
        total = _size(ks.overflow_fd) // 512 * 512
        mine = ks.blocks["overflow"].key
        used = sorted((off, n) for k in self._sets.values() for _, off, n in k.record.extents
                      if "overflow" in k.blocks and k.blocks["overflow"].key == mine)
        pos = kernelmeta.overflow_start(total)
        for off, n in [*used, (total, 0)]:
            if off - pos >= ks.chunk:
                return ks.overflow, pos, min(want, off - pos) // 512 * 512
            pos = max(pos, off + n)
        return None

    def attach_overflow(self, name: str, overflow: Volume) -> None:
        """Use this overflow volume (a path, or the descriptor the caller checked) for the
        set's store from now on."""
        ks = self.get(name)
        if not ks.compact:
            raise WrongKind(1007, f"set {name} is not a compact dependent set")
        with self._lock, _opened([overflow]) as (v,):
            assert v is not None
            block = _block(*v)
            fd = os.dup(v[1])
            os.set_inheritable(fd, False)
            old = ks.blocks.get("overflow")
            if ks.overflow_fd >= 0:
                os.close(ks.overflow_fd)
            ks.overflow, ks.overflow_fd = v[0], fd
            ks.blocks["overflow"] = block
            if old is not None:
                self._release_loops([old])

    def detach_overflow(self, name: str) -> None:
        """Refused while the set's exception store uses extents of the overflow volume (they go
        back at its next point in time)."""
        ks = self.get(name)
        with self._lock:
            if ks.record.extents:
                raise Dependency(1008, f"set {name}'s shadow uses {len(ks.record.extents)} "
                                       "extent(s) of its overflow volume; take a new point in "
                                       "time first")
            if ks.overflow_fd >= 0:
                os.close(ks.overflow_fd)
            ks.overflow, ks.overflow_fd = None, -1
            old = ks.blocks.pop("overflow", None)
            if old is not None:
                self._release_loops([old])

    def stop(self, *, force: bool = False) -> None:
        """Stop watching. The devices stay: the kernel keeps serving applications, and the next
        KernelPath takes them over (``force`` changes nothing; see teardown)."""
        del force
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def teardown(self) -> None:
        """Stop and dismantle every device (tests, and `ptcopyd --data-path kernel` stop with
        --release)."""
        self.stop()
        with self._lock:
            for name in list(self._sets):
                self.unserve(name, force=True)


class KernelCopy:
    """A set's copy as a job follows it (the engine Set's interface: closed, progress, abort),
    merges included."""

    def __init__(self, kp: KernelPath, name: str) -> None:
        self._kp = kp
        self._name = name

    @property
    def closed(self) -> bool:
        return self._name not in self._kp.served

    def progress(self) -> Progress:
        return self._kp.progress(self._name)

    def abort(self) -> None:
        self._kp.abort(self._name)


def _formatted(fd: int, lay: Layout) -> bool:
    """The kernel record area was written at least once (its magic is there)."""
    return os.pread(fd, 8, lay.record) == kernelmeta.MAGIC


def _chain_above(origin: str) -> list[str]:
    """The era devices (or pass-throughs left of them) stacked on a master's origin, bottom-up,
    read from the kernel's tables."""
    below_of: dict[str, str] = {}
    for name in engine.dm_list():
        if name.startswith("ptcopy-") and name.endswith("-mera"):
            fields = dm_status(name, table=True).split()
            # era <meta> <below> <block> | linear <below> <offset>
            below_of[fields[4] if fields[2] == "era" else fields[3]] = name
    chain, at = [], _ref(origin)
    while at in below_of:
        chain.append(below_of[at])
        at = _ref(below_of[at])
    return chain


def _is_passthrough(name: str) -> bool:
    fields = dm_status(name, table=True).split()
    return len(fields) > 2 and fields[2] == "linear"
