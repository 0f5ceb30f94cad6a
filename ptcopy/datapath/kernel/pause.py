"""Suspending a copy on the kernel path, with its frozen view's store bounded.

A copy reads a frozen view: a transient snapshot of the source whose store, a sparse file in
the run directory, receives the old data of each chunk the source writes for the first time
since the point in time. A transient store holds each chunk at most once, so it never grows
past the source's size. A running copy ends long before it gets there; a suspension may last
long enough to reach it, and a store that cannot grow because the run directory is full
invalidates the view (the copy then fails). So a suspend first reserves the bound: the store
file is allocated to its full size (fallocate), or the suspend is refused naming the room it
needs. Then the engine's copy stops where it is; the target stays read-only and shows the
point in time, as during the copy.

The engine forgets a suspension at an open on this path (it folds an interrupted copy back
into the bitmap, to be copied again from a new frozen view), so the suspension is also
recorded in the set's kernel record: a restarted ptcopyd starts the copy from a new frozen
view and suspends it again at once.
"""

from __future__ import annotations

import os

from ptcopy.datapath.kernel import pit, record
from ptcopy.datapath.kernel.state import KernelSet, State
from ptcopy.engine import NoCopy, OutOfSpace, WrongKind
from ptcopy.engine.dm import dm_reserve


def suspend(ks: KernelSet, run_dir: str) -> None:
    """Reserve the frozen view's store, stop the engine's copy where it is, record it."""
    if ks.state in (State.MERGING, State.MERGE_FAILED):
        raise WrongKind(f"set {ks.name} is merging in the kernel; a snapshot-merge cannot be "
                        "suspended")
    if ks.state is not State.COPYING or not ks.set.progress().active:
        raise NoCopy(f"set {ks.name} has no copy running")
    path = pit.freeze_path(ks, run_dir)
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        try:
            dm_reserve(fd, size)
        except OutOfSpace:
            raise OutOfSpace(f"set {ks.name}: suspending its copy reserves its frozen view's "
                             f"store, {size} bytes (the source's size) in {run_dir}, and "
                             "there is not that much room; free some, or let the copy "
                             "finish") from None
    finally:
        os.close(fd)
    ks.set.suspend()
    ks.record.suspended = True
    record.write_record(ks.bitmap_fd, ks.layout, ks.record)


def resume(ks: KernelSet) -> None:
    """Go on with the suspended copy where it stopped (the same frozen view)."""
    if ks.state is not State.COPYING or not ks.set.suspended:
        raise NoCopy(f"set {ks.name} has no suspended copy")
    ks.set.resume()
    ks.record.suspended = False
    record.write_record(ks.bitmap_fd, ks.layout, ks.record)


def forget(ks: KernelSet) -> None:
    """The copy is over (done or aborted), or there is none to suspend again: nothing is
    suspended any more."""
    if ks.record.suspended:
        ks.record.suspended = False
        record.write_record(ks.bitmap_fd, ks.layout, ks.record)


def suspended(ks: KernelSet) -> bool:
    """The set's copy is suspended: its frozen view stays, nothing is copied."""
    return ks.state is State.COPYING and ks.set.suspended
