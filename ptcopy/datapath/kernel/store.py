"""A dependent shadow's exception store: the shadow volume, plus extents of the set's overflow
volume appended when a compact store fills (dm-snapshot cannot grow into another device, so the
store is a linear device over both, reloaded bigger before it is full)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from ptcopy.datapath.kernel import blocks, names, record, tables
from ptcopy.datapath.kernel.state import KernelSet, Phase, State
from ptcopy.engine import Dependency, Offline, WrongKind

log = logging.getLogger(__name__)

GROW_AT = 0.75          # a compact store this full gets another overflow extent


def cow_table(ks: KernelSet, extents: list[tuple[str, int, int]] | None = None) -> str:
    """The store device's table: the shadow volume, then ``extents`` (the recorded ones by
    default; [] at a new point in time, which frees them)."""
    pieces = [(ks.blocks["shadow"].ref, 0, ks.shadow_size // 512 * 512)]
    extents = ks.record.extents if extents is None else extents
    if extents and "overflow" not in ks.blocks:
        raise Offline(f"set {ks.name}'s shadow uses {len(extents)} extent(s) of its "
                            "overflow volume, which is not attached")
    # every extent is on the set's overflow volume (detaching it waits until none is used)
    pieces += [(ks.blocks["overflow"].ref, off, n) for _, off, n in extents]
    return tables.concat(pieces)


def watch(ks: KernelSet, served: Iterable[KernelSet]) -> None:
    """Grow a compact shadow's store into its overflow volume before it fills; flag the set
    out of space when it could not (the kernel then drops the snapshot, never a master
    write). ``served``: every served set (their extents share the overflow volumes)."""
    use = tables.snapshot_usage(names.shadow(ks.name))
    if not use.valid or use.overflow:
        if ks.state is not State.OUT_OF_SPACE:
            log.warning("set %s: shadow out of space; its point in time is lost", ks.name)
            ks.enter(Phase(State.OUT_OF_SPACE))
        return
    if use.fraction < GROW_AT or not ks.overflow:
        return
    piece = allocate(ks, max(ks.chunk * 64, ks.shadow_size // 2), served)
    if piece is None:
        return
    ks.record.extents.append(piece)
    record.write_record(ks.bitmap_fd, ks.layout, ks.record)   # before it is used
    tables.reload(ks.dev(names.Part.COW), cow_table(ks))
    log.info("set %s: exception store grown by %d bytes from %s", ks.name, piece[2],
             ks.overflow)


def reserve(ks: KernelSet, nbytes: int, served: Iterable[KernelSet]) -> None:
    """Grow a compact store now so that ``nbytes`` of the master more fit below GROW_AT. A
    restore through the master's stack copies every chunk it changes into this store, faster
    than the monitor's rounds grow it (a full restore of a small master takes less than one).
    As far as the overflow volume has room; beyond that, watch() as always."""
    if not ks.compact or not ks.overflow:
        return
    use = tables.snapshot_usage(names.shadow(ks.name))
    if not use.valid or use.overflow:
        return
    chunks = min(-(-nbytes // ks.chunk) + 1, -(-ks.master_size // ks.chunk))
    # each exception: its chunk, and 16 bytes in a metadata chunk (chunk/16 per metadata chunk)
    need = chunks * ks.chunk + -(-chunks * 16 // ks.chunk) * ks.chunk
    want = int((use.allocated * 512 + need) / GROW_AT) - use.total * 512
    want = -(-want // ks.chunk) * ks.chunk   # whole chunks (allocate rounds down to sectors)
    grown = 0
    while want > grown:
        piece = allocate(ks, want - grown, served)
        if piece is None or piece[2] <= 0:
            break
        ks.record.extents.append(piece)
        grown += piece[2]
    if grown:
        record.write_record(ks.bitmap_fd, ks.layout, ks.record)   # before it is used
        tables.reload(ks.dev(names.Part.COW), cow_table(ks))
        log.info("set %s: exception store grown by %d bytes from %s for a restore of its "
                 "master", ks.name, grown, ks.overflow)


def allocate(ks: KernelSet, want: int,
             served: Iterable[KernelSet]) -> tuple[str, int, int] | None:
    """First free range of the overflow volume (after the engine's header and slot map),
    across every served set's extents on it."""
    assert ks.overflow is not None and ks.overflow_fd >= 0
    total = blocks.size(ks.overflow_fd) // 512 * 512
    mine = ks.blocks["overflow"].key
    used = sorted((off, n) for k in served for _, off, n in k.record.extents
                  if "overflow" in k.blocks and k.blocks["overflow"].key == mine)
    pos = record.overflow_start(total)
    for off, n in [*used, (total, 0)]:
        if off - pos >= ks.chunk:
            return ks.overflow, pos, min(want, off - pos) // 512 * 512
        pos = max(pos, off + n)
    return None


def attach(ks: KernelSet, overflow: tuple[str, int]) -> blocks.Block | None:
    """Grow into this overflow volume from now on; returns the volume it replaces (whose loop
    the caller releases)."""
    if not ks.compact:
        raise WrongKind(f"set {ks.name} is not a compact dependent set")
    block = blocks.block(*overflow)
    fd = blocks.kept(overflow[1])
    old = ks.blocks.get("overflow")
    if ks.overflow_fd >= 0:
        os.close(ks.overflow_fd)
    ks.overflow, ks.overflow_fd = overflow[0], fd
    ks.blocks["overflow"] = block
    return old


def detach(ks: KernelSet) -> blocks.Block | None:
    """Let the overflow volume go; refused while the store uses extents of it (they go back at
    the next point in time). Returns the volume, whose loop the caller releases."""
    if ks.record.extents:
        raise Dependency(f"set {ks.name}'s shadow uses {len(ks.record.extents)} "
                               "extent(s) of its overflow volume; take a new point in "
                               "time first")
    if ks.overflow_fd >= 0:
        os.close(ks.overflow_fd)
    ks.overflow, ks.overflow_fd = None, -1
    return ks.blocks.pop("overflow", None)
