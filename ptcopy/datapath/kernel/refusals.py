"""What the kernel path refuses before anything changes: volumes it cannot serve a set on, a
new point in time or restore while its master is being restored, and group restores it cannot
make one point in time."""

from __future__ import annotations

from collections.abc import Mapping

from ptcopy.datapath.kernel import record
from ptcopy.datapath.kernel.state import KernelSet, Master, State
from ptcopy.engine import CopyInProgress, Direction, InvalidArgument, Kind, TooSmall, WrongKind


def check_new(kind: Kind, chunk: int, master_size: int, shadow: tuple[str, int],
              bitmap: tuple[str, int] | None) -> None:
    """Refuse volumes this path cannot serve a set on, naming the size needed; callers run
    it before the engine writes anything."""
    path, size = shadow
    need = record.store_needed(master_size, chunk)
    if kind is Kind.DEPENDENT and master_size <= size < need:
        # full-size but short of dm-snapshot's own metadata: it would run out of space
        # where the same set on the userspace path cannot; compact sets may spill
        raise TooSmall(f"shadow volume {path} has {size} bytes; on the kernel data "
                       f"path a full-size dependent shadow needs {need} (the master "
                       "plus dm-snapshot's metadata), or make it smaller than the "
                       "master and attach an overflow volume")
    if bitmap is not None:
        record.check_size(bitmap[1], record.layout(master_size, size, chunk, kind),
                          bitmap[0])


def check_no_merge(ms: Master, sets: Mapping[str, KernelSet], what: str) -> None:
    """While a set's shadow merges into this master, the master's devices show the merged
    image but its raw volume, which snapshots and frozen views are taken of, is half merged:
    a new point in time of it (or another restore) waits for the merge to end. So does a
    restore from an independent set through the master's stack (its copier holds the top
    of the era chain: no era may join or leave it meanwhile). ``sets``: the served sets."""
    for n in ms.sets:
        other = sets.get(n)
        if other is None:
            continue
        if other.state in (State.MERGING, State.MERGE_FAILED):
            raise CopyInProgress(f"master {ms.path} is being restored from set {n} (a merge "
                                 f"in the kernel); wait for it to end before {what}")
        if (other.state is State.COPYING and other.phase.direction is Direction.TO_MASTER
                and len(ms.sets) > 1):
            raise CopyInProgress(f"master {ms.path} is being restored from set {n}; wait "
                                 f"for it to end before {what}")


def check_group_restore(kss: list[KernelSet]) -> None:
    """A group restores each master from one shadow, and its members either all merge in the
    kernel (dependent) or are all copied by the engine (independent)."""
    seen: dict[str, str] = {}
    for ks in kss:
        if ks.stack.key in seen:
            raise InvalidArgument(f"sets {seen[ks.stack.key]} and {ks.name} share master "
                                  f"{ks.master}: a group restores a master from one of its "
                                  "shadows only")
        seen[ks.stack.key] = ks.name
    if len({ks.kind for ks in kss}) > 1:
        raise WrongKind("on the kernel data path a group restore cannot mix dependent and "
                        "independent sets: a dependent shadow merges into its master in the "
                        "kernel (one transaction for all of them), an independent one is "
                        "copied by the engine from a frozen view (another transaction), so "
                        "they would not share one point in time; restore the dependent "
                        "members and the independent members as two groups")
