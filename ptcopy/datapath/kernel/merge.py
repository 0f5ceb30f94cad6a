"""A dependent set's update to its master: dm-snapshot's snapshot-merge, and its end.

The merge runs in the kernel: the origin is reloaded as a merge target over the shadow's store,
the monitor follows the store emptying, and at the end the origin goes back to a plain origin
and the shadow starts a new, empty point in time.
"""

from __future__ import annotations

import errno
import logging

from ptcopy import engine
from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.kernel import exceptions, names, record, tables
from ptcopy.datapath.kernel.state import KernelSet, Phase, State
from ptcopy.datapath.kernel.store import cow_table
from ptcopy.engine import Direction, DmOp, OutOfSpace, Progress, dm_run, dm_status

log = logging.getLogger(__name__)

class MergeFailed(Exception):
    """The kernel stopped a snapshot-merge before its end (its status says why)."""


def start(kss: list[KernelSet], owner: int = 0,
          independents: dict[str, list[KernelSet]] | None = None) -> float:
    """Merge each set's shadow into its master (one master each), all in one transaction: one
    point in time for a group. independents: per set, the independent sets on its master; the
    chunks the merge writes are marked in their bitmaps first. Returns the seconds writes were
    held."""
    uses = {}
    for ks in kss:
        use = tables.snapshot_usage(names.shadow(ks.name))
        if not use.valid or use.overflow:
            raise OutOfSpace(f"shadow of set {ks.name} ran out of space; it cannot be "
                             "merged into the master")
        uses[ks.name] = use
    for ks in kss:
        _mark_independents(ks, (independents or {}).get(ks.name, []))
    ops = [DmOp("remove", names.shadow(ks.name)) for ks in kss]
    ops += [DmOp("suspend", ks.stack.origin) for ks in kss]
    ops += [DmOp("load", ks.stack.origin,
                 tables.merge(ks.stack.ref, tables.ref(ks.dev(names.Part.COW)), ks.stack.size,
                              ks.chunk)) for ks in kss]
    ops += [DmOp("resume", ks.stack.origin) for ks in reversed(kss)]
    held = dm_run(ops, timeout=tables.TIMEOUT)
    for ks in kss:
        tables.drop_node(names.shadow(ks.name))
        use = uses[ks.name]
        ks.enter(Phase(State.MERGING, total=max(use.allocated - use.metadata, 1), owner=owner))
        # every master device shows the shadow's data from now on: no cached old blocks
        for n in ks.stack.sets:
            if tables.exists(names.master(n)):
                loopdev.flush_buffers(tables.node(names.master(n)))
    return held


def _mark_independents(ks: KernelSet, independents: list[KernelSet]) -> None:
    """dm-snapshot's merge copies on write into the other snapshots of the origin before it
    writes a chunk (snapshot_merge_next_chunks), so dependent siblings keep their points in
    time; but it writes the raw volume beneath the era devices. The chunks it will write, the
    ones its store holds now, are marked in the independent siblings' bitmaps (durably) before
    it starts. A chunk that enters the store later does so because the master was written
    through the stack, where every era saw the write."""
    if not independents:
        return
    chunks = exceptions.stored_chunks(tables.node(ks.dev(names.Part.COW)), ks.chunk)
    for first, count in exceptions.runs(chunks):
        for other in independents:
            other.set.mark(first, count)


def merging(ks: KernelSet) -> bool:
    """The master's origin is a merge target (what a restarted ptcopyd finds)."""
    table = dm_status(ks.stack.origin, table=True).split()
    return len(table) > 2 and table[2] == "snapshot-merge"


def left(ks: KernelSet) -> int | None:
    """Sectors still to merge, None when the origin is not merging. A merge the kernel
    stopped (invalid store, failed write) raises MergeFailed: it is not over."""
    fields = dm_status(ks.stack.origin).split()
    if len(fields) < 3 or fields[2] != "snapshot-merge":
        return None
    if len(fields) < 5 or "/" not in fields[3]:
        raise MergeFailed(" ".join(fields[3:]) or "no status")
    return int(fields[3].split("/")[0]) - int(fields[4])


def adopt(ks: KernelSet) -> None:
    """Follow a merge a restarted ptcopyd finds running (or stopped) in the kernel."""
    try:
        n = left(ks)
    except MergeFailed as e:
        ks.enter(Phase(State.MERGE_FAILED, total=1, why=str(e)))
        return
    ks.enter(Phase(State.MERGING, total=max(n or 0, 1)))


def follow(ks: KernelSet) -> None:
    """One look at a running merge (the monitor's): end it when the store is empty, or mark it
    failed when the kernel stopped it."""
    try:
        n = left(ks)
    except MergeFailed as e:
        ks.enter(Phase(State.MERGE_FAILED, total=ks.phase.total, why=str(e)))
        log.error("set %s: the kernel stopped merging its shadow into the master "
                  "(%s); the master is left as the kernel has it", ks.name, e)
        return
    if (n or 0) <= 0:
        done(ks)


def done(ks: KernelSet) -> None:
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
    ms = ks.stack
    shadow = names.shadow(ks.name)
    cow = ks.dev(names.Part.COW)
    tops = [names.master(n) for n in ms.sets if tables.exists(names.master(n))]
    hold = [*tops, *reversed(ms.chain)]
    ops = [DmOp("suspend", d) for d in hold]
    ops += [DmOp("suspend", ms.origin),
            DmOp("load", ms.origin, tables.origin(ms.ref, ms.size)),
            DmOp("resume", ms.origin),
            DmOp("suspend", ms.origin),
            # a new point in time frees the overflow extents, as a copy to the shadow does
            DmOp("load", cow, cow_table(ks, [])), DmOp("resume", cow),
            DmOp("zero", tables.node(cow), length=ks.chunk)]
    if not tables.exists(shadow):
        ops.append(DmOp("create", shadow, uuid=ks.dm_uuid("shadow")))
    ops += [DmOp("load", shadow, tables.snapshot(ms.ref, tables.ref(cow), ks.master_size,
                                                 ks.chunk)),
            DmOp("resume", shadow), DmOp("resume", ms.origin)]
    ops += [DmOp("resume", d) for d in reversed(hold)]
    dm_run(ops, timeout=tables.TIMEOUT)
    tables.ensure_node(shadow)
    try:   # the engine's view: a new point in time (the devices already have it)
        ks.set.update(Direction.TO_SHADOW, owner=ks.phase.owner)
    except engine.PtcopyError as e:
        log.warning("set %s: merged, but the engine did not record the new point in "
                    "time: %s", ks.name, e)
    ks.record.extents = []
    record.write_record(ks.bitmap_fd, ks.layout, ks.record)
    loopdev.flush_buffers(ks.master_device)
    loopdev.flush_buffers(ks.shadow_device)
    # last: a job following the merge ends only now, with the new point in time in force
    ks.enter(Phase())


def progress(ks: KernelSet) -> Progress:
    """Sectors merged of those to merge; a failed merge reports EIO and is not active."""
    total = ks.phase.total
    if ks.state is State.MERGE_FAILED:
        return Progress(False, Direction.TO_MASTER, False, errno.EIO, 0, total, 0,
                        total * 512, 0, 0.0)
    try:
        n = left(ks) or 0
    except MergeFailed:
        n = total
    merged = max(total - n, 0)
    return Progress(True, Direction.TO_MASTER, False, 0, merged, total, merged * 512,
                    total * 512, 0, 0.0)
