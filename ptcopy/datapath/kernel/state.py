"""What the kernel path holds for each served set and each master, and a set's state.

A set is in one ``State`` at a time, changed only by ``KernelSet.enter``, which refuses a change
the path never makes (a bug, not a user error)::

    SERVING ──copy (independent)──> COPYING ──copy over, aborted or failed──> SERVING
    SERVING ──update to the master (dependent)──> MERGING ──merged──> SERVING
                                                  MERGING ──kernel stopped it──> MERGE_FAILED
    SERVING ──compact store full, not grown──> OUT_OF_SPACE ──new point in time──> SERVING

MERGE_FAILED is left only by a restart (the origin then says how the merge stands).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum

from ptcopy.datapath.kernel import names
from ptcopy.datapath.kernel.blocks import Block
from ptcopy.datapath.kernel.record import Layout, Record
from ptcopy.datapath.kernel.tables import node
from ptcopy.engine import Direction, Kind, Set

log = logging.getLogger(__name__)


class State(Enum):
    SERVING = "serving"            # both devices usable, nothing running
    COPYING = "copying"            # an engine copy reads a frozen view; the target is read-only
    MERGING = "merging"            # a dependent shadow merges into its master in the kernel
    MERGE_FAILED = "merge failed"  # the kernel stopped that merge; the master is as it left it
    OUT_OF_SPACE = "out of space"  # the dependent shadow's store overflowed: its point in time
                                   # is lost until the next one


_NEXT = {
    State.SERVING: {State.COPYING, State.MERGING, State.MERGE_FAILED, State.OUT_OF_SPACE},
    State.COPYING: {State.SERVING},
    State.MERGING: {State.SERVING, State.MERGE_FAILED},
    State.MERGE_FAILED: set(),
    State.OUT_OF_SPACE: {State.SERVING},
}
# a copy or merge runs: the set refuses another, and unserving waits for it
BUSY = frozenset({State.COPYING, State.MERGING, State.MERGE_FAILED})


@dataclass(frozen=True)
class Phase:
    """A state and the facts that belong to it."""

    state: State = State.SERVING
    direction: Direction | None = None   # COPYING: the side being written
    total: int = 0                       # MERGING, MERGE_FAILED: store sectors to merge (>= 1)
    owner: int = 0                       # MERGING: the lock owner who started the merge
    why: str = ""                        # MERGE_FAILED: the kernel's status


@dataclass
class Master:
    """Devices shared by every set on one master."""

    path: str      # the master's block device node
    ref: str       # its device number, as tables name it
    size: int
    key: str
    sets: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)   # era devices, bottom-up

    @property
    def origin(self) -> str:
        return names.origin(self.key)

    @property
    def top(self) -> str:
        return self.chain[-1] if self.chain else self.origin


@dataclass
class KernelSet:
    """One set as the kernel path serves it (what ``KernelPath.serve`` returns)."""

    name: str
    set: Set
    kind: Kind
    chunk: int
    master: str          # the raw volumes' block device nodes
    shadow: str
    bitmap: str
    bitmap_fd: int
    master_size: int
    shadow_size: int
    layout: Layout
    record: Record
    uid: str
    stack: Master        # the devices this set shares with the other sets on its master
    overflow: str | None = None
    overflow_fd: int = -1
    blocks: dict[str, Block] = field(default_factory=dict)   # role -> what it is served from
    phase: Phase = Phase()

    @property
    def state(self) -> State:
        return self.phase.state

    @property
    def busy(self) -> bool:
        return self.phase.state in BUSY

    def enter(self, phase: Phase) -> None:
        """The one way a set's state changes."""
        if phase.state is not self.phase.state and phase.state not in _NEXT[self.phase.state]:
            raise RuntimeError(f"set {self.name}: the kernel path has no way from "
                               f"{self.phase.state.value} to {phase.state.value}")
        if phase.state is not self.phase.state:
            log.debug("set %s: %s -> %s", self.name, self.phase.state.value, phase.state.value)
        self.phase = phase

    def dev(self, which: names.Part | str) -> str:
        """The name of one device of this set's stack."""
        return names.part(self.uid, names.Part(which))

    def dm_uuid(self, role: str) -> str:
        """The dm uuid of the set's ``master`` or ``shadow`` device (kept by a rename)."""
        return names.dm_uuid(self.uid, role)

    @property
    def master_device(self) -> str:
        return node(names.master(self.name))

    @property
    def shadow_device(self) -> str:
        return node(names.shadow(self.name))

    @property
    def master_file(self) -> str | None:
        """No file: the kernel path serves devices only."""
        return None

    @property
    def shadow_file(self) -> str | None:
        return None

    @property
    def compact(self) -> bool:
        return self.kind is Kind.DEPENDENT and self.shadow_size < self.master_size
