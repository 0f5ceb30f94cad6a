"""A set's device stack: build it, take it over after a restart, take it down; the era chain
of a master's independent sets.

Sets on one master share its snapshot-origin and stack their era devices on it in a chain;
each set's master device is a linear device over the top of the chain.
"""

from __future__ import annotations

import contextlib
import logging
import os

from ptcopy import engine
from ptcopy.datapath.kernel import merge, names, pit, record, tables
from ptcopy.datapath.kernel.names import Part
from ptcopy.datapath.kernel.state import KernelSet, Master
from ptcopy.datapath.kernel.store import cow_table
from ptcopy.engine import DmOp, Kind, dm_info, dm_run, dm_status

log = logging.getLogger(__name__)


def build(ks: KernelSet, fresh: bool, run_dir: str) -> None:
    """Make the set's devices, or take over the ones a previous ptcopyd left (``fresh``: a
    new set, or a bitmap volume whose record is not this set's)."""
    ms = ks.stack
    if not fresh and tables.exists(names.master(ks.name)):
        _adopt(ks, run_dir)
        return
    made: list[str] = []
    try:
        if not tables.exists(ms.origin):
            tables.create(ms.origin, tables.origin(ms.ref, ms.size))
            made.append(ms.origin)
        if ks.kind is Kind.INDEPENDENT:
            _build_independent(ks, fresh, made)
        else:
            _build_dependent(ks, fresh, made)
        top = names.master(ks.name)
        tables.create(top, tables.linear(tables.ref(ms.top), ms.size),
                      uuid=ks.dm_uuid("master"))
        made.append(top)
        if fresh:   # from now on the era metadata and the store hold what they record
            record.write_record(ks.bitmap_fd, ks.layout, ks.record)
    except BaseException:
        for name in reversed(made):
            with contextlib.suppress(Exception):
                tables.remove(name)
        if ks.kind is Kind.INDEPENDENT and ks.dev(Part.MERA) in ms.chain:
            ms.chain.remove(ks.dev(Part.MERA))
        raise


def _adopt(ks: KernelSet, run_dir: str) -> None:
    """The devices outlived the process that built them (ptcopyd restarted or was killed):
    take them over as they are, finishing what a copy or merge left."""
    ms = ks.stack
    ms.chain = _chain_above(ms.origin)
    for name in (names.master(ks.name), names.shadow(ks.name)):
        if tables.exists(name):
            tables.ensure_node(name)
    if merge.merging(ks):
        merge.adopt(ks)
    elif ks.kind is Kind.DEPENDENT and not dm_info(names.shadow(ks.name)).live_table:
        _reload_shadow(ks)
    else:
        left = pit.copying_to(ks)
        if left is not None:
            pit.leave(ks, left, run_dir)
    log.info("set %s: took over its device-mapper devices", ks.name)


def _reload_shadow(ks: KernelSet) -> None:
    """A dependent shadow a crash left without its snapshot (at a merge's start or end):
    load it over the store as the store is, never reset. A header still valid keeps the
    point in time (the merge had not started, or had emptied the store); one zeroed by the
    end of a merge starts the new point in time, as that merge meant to."""
    ms = ks.stack
    shadow = names.shadow(ks.name)
    ops = [DmOp("suspend", ms.origin)]
    if not tables.exists(shadow):
        ops.append(DmOp("create", shadow, uuid=ks.dm_uuid("shadow")))
    ops += [DmOp("load", shadow, tables.snapshot(ms.ref, tables.ref(ks.dev(Part.COW)),
                                                 ks.master_size, ks.chunk)),
            DmOp("resume", shadow), DmOp("resume", ms.origin)]
    dm_run(ops, timeout=tables.TIMEOUT)
    tables.ensure_node(shadow)
    log.warning("set %s: its shadow device was rebuilt over its store", ks.name)


def _build_independent(ks: KernelSet, fresh: bool, made: list[str]) -> None:
    ms, lay = ks.stack, ks.layout
    if fresh:   # an all-zero superblock makes era format its metadata
        for off in (lay.master_era, lay.shadow_era):
            os.pwrite(ks.bitmap_fd, b"\0" * record.MIB, off)
        os.fsync(ks.bitmap_fd)
    bitmap = ks.blocks["bitmap"].ref
    steps = [
        (ks.dev(Part.MMETA), tables.linear(bitmap, lay.era_size, lay.master_era)),
        (ks.dev(Part.SMETA), tables.linear(bitmap, lay.era_size, lay.shadow_era)),
        (ks.dev(Part.SORIGIN), tables.origin(ks.blocks["shadow"].ref, ks.master_size)),
    ]
    for name, table in steps:
        tables.create(name, table)
        made.append(name)
    for name, meta, below in ((ks.dev(Part.MERA), ks.dev(Part.MMETA), ms.top),
                              (ks.dev(Part.SERA), ks.dev(Part.SMETA), ks.dev(Part.SORIGIN))):
        tables.create(name, tables.era(tables.ref(meta), tables.ref(below), ks.master_size,
                                       ks.chunk))
        made.append(name)
    ms.chain.append(ks.dev(Part.MERA))
    relink(ms)
    shadow = names.shadow(ks.name)
    tables.create(shadow, tables.linear(tables.ref(ks.dev(Part.SERA)), ks.master_size),
                  uuid=ks.dm_uuid("shadow"))
    made.append(shadow)


def _build_dependent(ks: KernelSet, fresh: bool, made: list[str]) -> None:
    ms = ks.stack
    cow = ks.dev(Part.COW)
    tables.create(cow, cow_table(ks))
    made.append(cow)
    if fresh:   # an all-zero header makes dm-snapshot start an empty store
        dm_run([DmOp("zero", tables.node(cow), length=ks.chunk)])
    shadow = names.shadow(ks.name)
    dm_run([DmOp("suspend", ms.origin), DmOp("create", shadow, uuid=ks.dm_uuid("shadow")),
            DmOp("load", shadow, tables.snapshot(ms.ref, tables.ref(cow), ks.master_size,
                                                 ks.chunk)),
            DmOp("resume", shadow), DmOp("resume", ms.origin)], timeout=tables.TIMEOUT)
    tables.ensure_node(shadow)
    made.append(shadow)


def relink(ms: Master) -> None:
    """Every set's master device over the top of its master's chain."""
    for name in ms.sets:
        if tables.exists(names.master(name)):   # the set being built has none yet
            tables.reload(names.master(name), tables.linear(tables.ref(ms.top), ms.size))


def remove(ks: KernelSet) -> bool:
    """Take the set's devices down (and its master's, when it was the last set on it);
    True when the master's shared devices went too."""
    ms = ks.stack
    tables.remove(names.master(ks.name))
    ms.sets.remove(ks.name)
    tables.remove(names.shadow(ks.name))
    if ks.kind is Kind.INDEPENDENT:
        _unchain(ms, ks.dev(Part.MERA))
        for part in (Part.SERA, Part.SORIGIN, Part.MMETA, Part.SMETA):
            tables.remove(ks.dev(part))
    else:
        tables.remove(ks.dev(Part.COW))
    if ms.sets:
        return False
    for era_dev in reversed(ms.chain):
        tables.remove(era_dev)
    ms.chain.clear()
    tables.remove(ms.origin)
    return True


def _unchain(ms: Master, era_dev: str) -> None:
    """Take one era out of the master's chain. One in the middle becomes a pass-through
    (era tables are never reloaded in place: two instances would share its metadata)."""
    i = ms.chain.index(era_dev)
    if i == len(ms.chain) - 1:
        ms.chain.pop()
        relink(ms)
        tables.remove(era_dev)
        while ms.chain and _is_passthrough(ms.chain[-1]):
            dead = ms.chain.pop()
            relink(ms)
            tables.remove(dead)
        return
    below = ms.chain[i - 1] if i else ms.origin
    # a suspended era must not be queried: the transaction only loads and resumes it
    dm_run([DmOp("suspend", era_dev),
            DmOp("load", era_dev, tables.linear(tables.ref(below), ms.size)),
            DmOp("resume", era_dev)], timeout=tables.TIMEOUT)


def _chain_above(origin: str) -> list[str]:
    """The era devices (or pass-throughs left of them) stacked on a master's origin, bottom-up,
    read from the kernel's tables."""
    below_of: dict[str, str] = {}
    for name in engine.dm_list():
        if names.is_master_era(name):
            fields = dm_status(name, table=True).split()
            # era <meta> <below> <block> | linear <below> <offset>
            below_of[fields[4] if fields[2] == "era" else fields[3]] = name
    chain, at = [], tables.ref(origin)
    while at in below_of:
        chain.append(below_of[at])
        at = tables.ref(below_of[at])
    return chain


def _is_passthrough(name: str) -> bool:
    fields = dm_status(name, table=True).split()
    return len(fields) > 2 and fields[2] == "linear"
