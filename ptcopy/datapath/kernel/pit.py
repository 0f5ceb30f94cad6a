"""A new point in time: one device-mapper transaction for a set or a group, the frozen views
independent copies read, and folding what the era devices saw into the engine's bitmap.

Copies and updates of independent sets read a frozen snapshot of the source (``ptcopy-<u>-
freeze``, a transient snapshot whose store is a sparse file in the run directory) with the
engine's copier, after folding what the era devices saw into the engine's shadow bitmap. A
point in time is one C transaction that suspends every source origin, creates the frozen views
and resumes (``ptcopy.engine.dm_run``). Dependent sets are dm-snapshots: a new point in time
re-creates the snapshot on an emptied store.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable

from ptcopy import engine as engine_mod
from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.kernel import blocks, names, record, tables
from ptcopy.datapath.kernel.names import Part
from ptcopy.datapath.kernel.state import KernelSet, Phase, State
from ptcopy.datapath.kernel.store import cow_table
from ptcopy.engine import (
    CopyInProgress,
    Direction,
    DmOp,
    Flag,
    Incomplete,
    InUse,
    Kind,
    Offline,
    OutOfSpace,
    dm_message,
    dm_run,
    dm_status,
)


def check(ks: KernelSet, direction: Direction, owner: int) -> None:
    """Refuse what the copy would refuse, before anything changes: the transaction replaces
    dependent points in time at once, so a refusal after it would leave a group half copied."""
    if ks.busy or ks.set.progress().active:
        raise CopyInProgress(f"set {ks.name} is already copying; wait for it or "
                                   "abort it")
    # what the engine's copy would refuse (its own check comes after the transaction)
    st = ks.set.status()
    if st.lock_owner and st.lock_owner != owner:
        raise InUse(f"set {ks.name} is locked by another client; its point in time "
                          "cannot change until it is unlocked")
    offline = st.flags & (Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE
                          | Flag.OVERFLOW_OFFLINE)
    if offline:
        raise Offline(f"a volume of set {ks.name} is offline; reset the set first")
    incomplete_restore = bool(st.flags & Flag.INCOMPLETE and st.flags & Flag.TO_MASTER)
    if direction is Direction.TO_MASTER:
        if st.flags & Flag.OUT_OF_SPACE or ks.state is State.OUT_OF_SPACE:
            raise OutOfSpace(f"shadow of set {ks.name} lost chunks when it ran out "
                                   "of space; it cannot be copied to the master")
        if st.flags & Flag.INCOMPLETE and not incomplete_restore:
            raise Incomplete(f"shadow of set {ks.name} was left incomplete by an "
                                   "aborted copy; update it from the master first")
    elif incomplete_restore:
        raise Incomplete(f"master of set {ks.name} was left incomplete by an aborted "
                               "restore; finish it with an update to the master first")
    target = ks.shadow_device if direction is Direction.TO_SHADOW else ks.master_device
    busy = blocks.users(target)
    if busy:
        side = "shadow" if direction is Direction.TO_SHADOW else "master"
        raise InUse(f"cannot copy into the {side} of {ks.name}: it is in use by "
                          f"{', '.join(busy)}; unmount it first")
    # the merge takes the shadow away
    if (ks.kind is Kind.DEPENDENT and direction is Direction.TO_MASTER
            and blocks.settled_open_count(names.shadow(ks.name))):
        raise InUse(f"the shadow of {ks.name} is open; close it before merging "
                          "it into the master")
    if direction is Direction.TO_MASTER and len(ks.stack.sets) > 1:
        _check_siblings(ks)


def _check_siblings(ks: KernelSet) -> None:
    """A restore of a master that other sets share, allowed with every device of the master
    closed, since the master changes under all of them. From a dependent set it is
    dm-snapshot's merge, which copies on write into every other snapshot of the origin before
    it writes a chunk (merge.py marks what it changes for the independent ones). From an
    independent set it is the engine's copier writing through the top of the master's stack
    (``use_target``): the origin copies on write into every snapshot, the eras mark the chunks
    for the independent sets' next fold."""
    for other in ks.stack.sets:
        if other == ks.name:
            continue
        busy = blocks.users(tables.node(names.master(other)))
        if busy:
            raise InUse(f"cannot restore master {ks.master}: set {other}'s master device "
                        f"shows it too and is in use by {', '.join(busy)}; unmount it first")


def take(kss: list[KernelSet], direction: Direction, *, full: bool, owner: int,
         run_dir: str, before_restore: Callable[[KernelSet], None] | None = None) -> float:
    """Put a new point in time in force for these (checked) sets at once and start their
    copies; returns the seconds the sources were held. ``before_restore`` is called for a
    restore through the master's stack once its chunks are marked, before it starts."""
    try:
        ops, after = _freeze_ops(kss, direction, run_dir)
        held = dm_run(ops, timeout=tables.TIMEOUT)
        for fn in after:
            fn()
    except BaseException:
        for ks in kss:
            dismantle(ks, run_dir)
        raise
    for ks in kss:
        if ks.kind is Kind.DEPENDENT:
            ks.set.update(Direction.TO_SHADOW, owner=owner)
            ks.record.extents = []
            record.write_record(ks.bitmap_fd, ks.layout, ks.record)
            ks.enter(Phase())   # a new point in time: no longer out of space
            loopdev.flush_buffers(ks.shadow_device)
            continue
        _fold(ks, full=full)
        try:
            _use_frozen(ks)
            if direction is Direction.TO_MASTER and len(ks.stack.sets) > 1:
                if before_restore is not None:
                    before_restore(ks)
                use_target(ks)
            if full:
                ks.set.copy(direction, owner=owner)
            else:
                ks.set.update(direction, owner=owner)
        except BaseException:
            dismantle(ks, run_dir)
            raise
    return held


def _freeze_ops(kss: list[KernelSet], direction: Direction, run_dir: str
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
        ms = ks.stack
        # The source's top devices first: suspending a device freezes a file system
        # mounted on it (dm's lockfs), so the point in time is a consistent one. Then every
        # era of the master (writes pass them all), the origin, and the shadow's stack.
        tops = [names.master(n) for n in ms.sets]
        if ks.kind is Kind.INDEPENDENT and direction is Direction.TO_MASTER:
            tops.append(names.shadow(ks.name))
        for name in [*tops, *reversed(ms.chain), ms.origin] + (
                [ks.dev(Part.SERA), ks.dev(Part.SORIGIN)]
                if ks.kind is Kind.INDEPENDENT else []):
            if name not in suspend:
                suspend.append(name)
        if ks.kind is Kind.DEPENDENT:
            shadow = names.shadow(ks.name)
            cow = ks.dev(Part.COW)
            table = cow_table(ks, [])   # a new point in time frees the extents
            body += [DmOp("load", shadow, f"0 {ks.master_size // 512} error"),
                     DmOp("resume", shadow),
                     DmOp("load", cow, table), DmOp("resume", cow),
                     DmOp("zero", tables.node(cow), length=ks.chunk),
                     DmOp("load", shadow, tables.snapshot(ms.ref, tables.ref(cow),
                                                          ks.master_size, ks.chunk)),
                     DmOp("resume", shadow)]
        else:
            raw = ms.ref if direction is Direction.TO_SHADOW else ks.blocks["shadow"].ref
            store = _freeze_store(ks, run_dir)
            freeze = ks.dev(Part.FREEZE)
            body += [DmOp("create", freeze),
                     DmOp("load", freeze, tables.snapshot(raw, store, ks.master_size, ks.chunk,
                                                          persistent=False)),
                     DmOp("resume", freeze)]
            ks.enter(Phase(State.COPYING, direction=direction))
            after.append(functools.partial(_show_frozen, ks, direction))
    ops = [DmOp("suspend", s) for s in suspend] + body
    ops += [DmOp("resume", s) for s in reversed(suspend)]
    return ops, after


def freeze_path(ks: KernelSet, run_dir: str) -> str:
    """The sparse file in the run directory that stores the set's frozen view's changes."""
    return os.path.join(run_dir, names.freeze_file(ks.uid))


def _freeze_store(ks: KernelSet, run_dir: str) -> str:
    """A new sparse file in the run directory on a loop device bound to it by ioctl (no
    losetup process: under emulation each costs a tenth of a second); returns the loop's
    ``major:minor`` for the snapshot's table."""
    path = freeze_path(ks, run_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)   # a leftover: made again, never reused with its mode
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.ftruncate(fd, max(ks.master_size, 1 << 20))   # sparse: only changes are stored
        # the page cache of a run directory on tmpfs is where its data lives anyway
        lp = loopdev.attach_fd(fd, direct_io=False)
    finally:
        os.close(fd)
    return f"{os.major(lp.rdev)}:{os.minor(lp.rdev)}"


def _drop_freeze_store(ks: KernelSet, run_dir: str) -> None:
    """Unbind the store's loop device (found through the file itself, from sysfs: no process)
    and delete the file. A loop still held by a frozen view that could not be removed is
    detached by the kernel when its last opener goes (LOOP_CLR_FD's autoclear)."""
    path = freeze_path(ks, run_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        lp = loopdev.loop_over(fd)
    finally:
        os.close(fd)
    if lp is not None:
        blocks.unbind_loop(lp.device)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _use_frozen(ks: KernelSet) -> None:
    # opened here without O_EXCL: the target device stacked on the view holds it too
    node = tables.node(ks.dev(Part.FREEZE))
    fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ks.set.copy_source((node, fd))
    finally:
        os.close(fd)


def use_target(ks: KernelSet) -> None:
    """The restore writes the master through the top of its stack (the last era of the chain,
    or the origin), not the raw volume: dm-snapshot copies each chunk's old data into every
    dependent sibling's store before it changes, and every era above the origin marks it (on
    disk before the write is issued: dm-era commits its metadata first), so the independent
    siblings' next fold marks it in their bitmaps. The master's set count is recorded first:
    a restore a crash interrupted resumes only once that many sets are served again."""
    top = ks.stack.top
    tables.ensure_node(top)
    ks.record.restore_sets = len(ks.stack.sets)
    record.write_record(ks.bitmap_fd, ks.layout, ks.record)
    # read-write, without O_EXCL: the devices stacked on it hold it already
    fd = os.open(tables.node(top), os.O_RDWR | os.O_CLOEXEC)
    try:
        ks.set.copy_target((tables.node(top), fd))
    finally:
        os.close(fd)


def _show_frozen(ks: KernelSet, direction: Direction) -> None:
    """The target shows the new point in time at once, read-only until the copy ends. A
    restore shows it on every master device of that master: a write through another set's
    master device meanwhile would be overwritten by the copier (or mix with it)."""
    freeze = ks.dev(Part.FREEZE)
    tables.ensure_node(freeze)
    tops = [names.shadow(ks.name)] if direction is Direction.TO_SHADOW else \
        [names.master(n) for n in ks.stack.sets if tables.exists(names.master(n))]
    for top in tops:
        tables.reload(top, tables.linear(tables.ref(freeze), ks.master_size), read_only=True)
        loopdev.flush_buffers(tables.node(top))


def _showing(freeze: str) -> list[str]:
    """The master devices (any set's, served or not yet) whose table reads this frozen view:
    a crash can leave those of sets this process has not served yet."""
    if not tables.exists(freeze):
        return []
    ref = tables.ref(freeze)
    return [n for n in engine_mod.dm_list()
            if n.startswith(names.PREFIX) and n.endswith("-master")
            and dm_status(n, table=True).split()[3:4] == [ref]]


def _fold(ks: KernelSet, *, full: bool = False) -> None:
    """What the eras saw since the last baselines joins the shadow bitmap; then the new
    baselines are recorded. A crash in between only makes the next update copy more.
    Before a full copy every chunk is marked instead: the same bitmap the copy starts from,
    without reading the era metadata (a metadata snapshot and one era_invalidate process
    per era device: a second under emulation, and growing with the volume)."""
    nchunks = -(-ks.master_size // ks.chunk)
    runs: list[tuple[int, int]] = []
    new: dict[str, int] = {}
    for side, base in (("m", ks.record.master_era), ("s", ks.record.shadow_era)):
        era_dev, meta = ks.dev(f"{side}era"), ks.dev(f"{side}meta")
        new[side] = tables.era_current(era_dev)
        if tables.era_held(era_dev):
            # a crash inside an earlier fold left it; that fold's baseline was never
            # recorded, so this one reads everything since the old baseline again
            dm_message(era_dev, "drop_metadata_snap")
        if base is None or full:
            runs.append((0, nchunks))
            continue
        dm_message(era_dev, "take_metadata_snap")
        try:
            runs += record.written_since(tables.ensure_node(meta), base)
        finally:
            dm_message(era_dev, "drop_metadata_snap")
    for first, n in dict.fromkeys(runs):   # everything once, not once per side
        if first < nchunks:
            ks.set.mark(first, min(n, nchunks - first))
    ks.record.master_era, ks.record.shadow_era = new["m"], new["s"]
    record.write_record(ks.bitmap_fd, ks.layout, ks.record)


def copying_to(ks: KernelSet) -> Direction | None:
    """Which side a copy a crash interrupted was writing, from the devices it left (its frozen
    view is still there), or None."""
    if not tables.exists(ks.dev(Part.FREEZE)):
        return None
    freeze = tables.ref(ks.dev(Part.FREEZE))
    shadow_table = dm_status(names.shadow(ks.name), table=True)
    return Direction.TO_SHADOW if freeze in shadow_table else Direction.TO_MASTER


def leave(ks: KernelSet, direction: Direction, run_dir: str) -> None:
    """Take down the frozen view of a copy a crash interrupted (``direction``: the side it was
    writing); the copy itself is resumed by ``KernelPath.started`` (a restore's recorded set
    count stays for it)."""
    ks.enter(Phase(State.COPYING, direction=direction))
    dismantle(ks, run_dir, interrupted=True)


def dismantle(ks: KernelSet, run_dir: str, *, interrupted: bool = False) -> None:
    """After a copy (done, aborted or failed): the target is live and writable again."""
    direction = ks.phase.direction if ks.state is State.COPYING else None
    if ks.state is State.COPYING:
        ks.enter(Phase())
    with contextlib.suppress(Exception):
        ks.set.copy_source(None)
    with contextlib.suppress(Exception):
        ks.set.copy_target(None)
    if ks.record.restore_sets and not interrupted:
        ks.record.restore_sets = 0
        record.write_record(ks.bitmap_fd, ks.layout, ks.record)
    if direction is not None:
        if direction is Direction.TO_SHADOW:
            tops, below = [names.shadow(ks.name)], ks.dev(Part.SERA)
        else:
            tops = list(dict.fromkeys([names.master(ks.name),
                                       *_showing(ks.dev(Part.FREEZE))]))
            below = ks.stack.top
        for top in tops:
            tables.reload(top, tables.linear(tables.ref(below), ks.master_size))
            loopdev.flush_buffers(tables.ensure_node(top))
    tables.remove(ks.dev(Part.FREEZE))
    _drop_freeze_store(ks, run_dir)
