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

This module is the facade (``KernelPath``, the ``DataPath`` of ``ptcopy.datapath.base``); the
work is done by its parts: ``monitor`` (the thread that finishes copies and merges),
``copyjob`` (what a job follows), ``refusals`` (what is refused before anything changes),
``names`` (every device name), ``state`` (what is held per set, its state), ``tables``
(device-mapper text and devices), ``record`` (what is kept on the bitmap volume), ``blocks``
(volumes, loops, openers), ``stack`` (build, take over, take down), ``pit`` (the point-in-time
transaction, frozen views, era folding), ``merge`` (snapshot-merge and its end), ``store``
(compact-store growth, overflow extents), ``pause`` (suspend, resume), ``rename`` (a new name).

Differences from the userspace path users can see are in docs/kernel-path.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ptcopy import engine as engine_mod
from ptcopy.datapath.base import Capabilities, DataPath, HeldPoint, SetVolumes, Volume
from ptcopy.datapath.kernel import (
    blocks,
    merge,
    names,
    pause,
    pit,
    record,
    refusals,
    rename,
    stack,
    store,
    tables,
)
from ptcopy.datapath.kernel.copyjob import KernelCopy, running
from ptcopy.datapath.kernel.ended import EndSignal
from ptcopy.datapath.kernel.monitor import Monitor
from ptcopy.datapath.kernel.record import Layout, Record
from ptcopy.datapath.kernel.state import KernelSet, Master, State
from ptcopy.engine import (
    CopyInProgress,
    Direction,
    Engine,
    Flag,
    InUse,
    InvalidArgument,
    Kind,
    NoCopy,
    NotFound,
    Progress,
    Set,
    WrongKind,
)

log = logging.getLogger(__name__)

CAPS = Capabilities(name="kernel", bitmap_in_memory=False, exclusive_volumes=False,
                    target_writable_during_copy=False, group_restore_dependent=True,
                    suspend_copy=True, rename_served=True)


class KernelPath:
    """Serves sets through device-mapper; run_dir holds the frozen views' sparse stores."""

    def __init__(self, engine: Engine, run_dir: str, *, poll: float = 0.2) -> None:
        tables.require()
        # A ptcopyd that died inside a transaction can leave ptcopy devices suspended (every
        # application on them hangs) or with a table loaded and never resumed: undo that first,
        # as the transaction's own rollback would have, before this process runs any.
        recover = getattr(engine_mod, "dm_recover", None)   # the engine's, where it has it
        if recover is not None:
            for dev, what in recover(names.PREFIX).items():
                log.warning("device-mapper device %s left by an earlier ptcopyd: %s", dev, what)
        engine.defer_copies(True)
        self._engine = engine
        self._run_dir = os.path.join(os.path.abspath(run_dir), "kernel")
        # the frozen views' stores hold copies of the sources' data: root's alone
        os.makedirs(self._run_dir, mode=0o700, exist_ok=True)
        os.chmod(self._run_dir, 0o700)
        self._lock = threading.RLock()
        self._sets: dict[str, KernelSet] = {}
        # independent sets whose interrupted restore waits for their master's other sets
        self._waiting: set[str] = set()
        self._masters: dict[str, Master] = {}
        # each served set's copy-end signal for jobs (set by the copies and the monitor); the
        # lock guards the dict and the descriptors' lifetime, so the event loop never waits
        # for a device-mapper transaction to hand one out
        self._ends: dict[str, EndSignal] = {}
        self._ends_lock = threading.Lock()
        self._monitor = Monitor(self._lock, self._tick, self._sets, poll)

    @property
    def caps(self) -> Capabilities:
        return CAPS

    # ---- sizes ------------------------------------------------------------------------------

    @staticmethod
    def layout_for(master_size: int, shadow_size: int, chunk: int, kind: Kind) -> Layout:
        """Where the kernel path keeps its record and era metadata on the bitmap volume
        (``.total``: the size the bitmap volume needs)."""
        return record.layout(master_size, shadow_size, chunk, kind)

    @staticmethod
    def store_needed(master_size: int, chunk: int) -> int:
        """Bytes a full-size dependent shadow needs on this path."""
        return record.store_needed(master_size, chunk)

    @staticmethod
    def check_new(kind: Kind, chunk: int, master_size: int, shadow: tuple[str, int],
                  bitmap: tuple[str, int] | None) -> None:
        """Refuse volumes this path cannot serve a set on, naming the size needed; callers run
        it before the engine writes anything."""
        refusals.check_new(kind, chunk, master_size, shadow, bitmap)

    # ---- serving ----------------------------------------------------------------------------

    def serve(self, name: str, set_: Set, volumes: SetVolumes, *,
              loop: bool = True, shadow: bool = True) -> KernelSet:
        """Build (or after a reboot rebuild) the set's devices from the descriptors the caller
        checked: devices are named in tables by the descriptor's device number and files get
        the loop device bound to the open file, so nothing is resolved by path again. ``loop``
        changes nothing: devices are what this path serves. ``shadow=False`` is never asked
        (``caps.serve_one_side`` is False: docs/kernel-path.md says why)."""
        del loop
        if not shadow:
            raise InvalidArgument("the kernel data path serves a set's master and shadow "
                                  "together")
        b = volumes.bitmap
        if b is None:
            raise InvalidArgument("the kernel data path keeps each set's era metadata "
                                        "and store record on its bitmap volume: it needs one")
        with self._lock:
            if name in self._sets:
                raise InvalidArgument(f"set {name} is already served")
            st = set_.status()
            kind = Kind(st.kind)
            ov = volumes.overflow
            self.check_new(kind, st.chunk_size, st.master_size,
                           (volumes.shadow[0], st.shadow_size), None)
            lay = record.layout(st.master_size, st.shadow_size, st.chunk_size, kind)
            blks: dict[str, blocks.Block] = {}
            bfd = ofd = -1
            try:
                for role, v in (("master", volumes.master), ("shadow", volumes.shadow),
                                ("bitmap", b), ("overflow", ov)):
                    if v is not None:
                        blks[role] = blocks.block(*v)
                # the record is written where the engine writes its bitmaps: the volume as
                # given (its own descriptor, kept)
                bfd = blocks.kept(b[1])
                if ov is not None:
                    ofd = blocks.kept(ov[1])
                record.check_size(blocks.size(bfd), lay, b[0])
                rec = record.read_record(bfd, lay, b[0])
                # a record of an earlier set on a reused bitmap volume describes nothing
                fresh = not record.formatted(bfd, lay) or rec.uuid != st.uuid.hex
                if fresh:
                    rec = Record(uuid=st.uuid.hex)
                mb = blks["master"]
                key = names.master_key(mb.ref)
                ms = self._masters.get(key) or Master(mb.node, mb.ref, st.master_size, key)
                if fresh:
                    refusals.check_no_merge(ms, self._sets, f"enabling set {name}")
                ks = KernelSet(name, set_, kind, st.chunk_size, mb.node, blks["shadow"].node,
                               blks["bitmap"].node, bfd, st.master_size, st.shadow_size, lay,
                               rec, names.uid(st.uuid.hex), ms,
                               ov[0] if ov is not None else None, ofd, blks)
                ms.sets.append(name)
                try:
                    # devices a crash left mid-rename take back the name the caller serves
                    rename.claim(ks.uid, name)
                    stack.build(ks, fresh, self._run_dir)
                except BaseException:
                    ms.sets.remove(name)
                    raise
            except BaseException:
                for fd in (bfd, ofd):
                    if fd >= 0:
                        os.close(fd)
                self._release(blks.values())
                raise
            self._masters[key] = ms
            self._sets[name] = ks
            with self._ends_lock:
                self._ends[name] = EndSignal(idle=not running(ks))
            return ks

    def serve_shadow(self, name: str, on: bool) -> None:
        """Never asked (``caps.serve_one_side`` is False)."""
        raise InvalidArgument("the kernel data path serves a set's master and shadow "
                              "together")

    def started(self, name: str, *, new: bool) -> None:
        """A new independent set's first full copy (the engine deferred it: it reads a frozen
        view); after a restart, the copy a crash interrupted starts again from a new frozen
        view, as the userspace path resumes it (the engine folded what was left into the
        bitmap). A restore through the master's stack waits until every set its master had
        is served again (``record.restore_sets``), then resumes from the last of them."""
        with self._lock:
            ks = self.get(name)
            if ks.kind is Kind.INDEPENDENT:
                if new:
                    self.copy([name], Direction.TO_SHADOW, full=True)
                    return
                self._resume_interrupted(ks)
            for other in [n for n in ks.stack.sets if n in self._waiting]:
                if len(ks.stack.sets) >= self._sets[other].record.restore_sets:
                    self._waiting.discard(other)
                    try:
                        self._resume_interrupted(self._sets[other])
                    except engine_mod.PtcopyError as e:   # not this set's failure
                        log.error("set %s: its interrupted restore did not resume: %s",
                                  other, e)

    def _resume_interrupted(self, ks: KernelSet) -> None:
        """A copy of this independent set a crash interrupted starts again (or waits)."""
        name = ks.name
        if ks.busy:
            return
        flags = ks.set.status().flags
        if flags & Flag.INCOMPLETE:
            d = Direction.TO_MASTER if flags & Flag.TO_MASTER else Direction.TO_SHADOW
            if d is Direction.TO_MASTER and len(ks.stack.sets) < ks.record.restore_sets:
                log.info("set %s: its interrupted restore waits for the %d sets of its "
                         "master to be served again", name, ks.record.restore_sets)
                self._waiting.add(name)
                return
            log.info("set %s: resuming its interrupted copy to the %s", name,
                     "master" if d is Direction.TO_MASTER else "shadow")
            self.copy([name], d, full=False)
            if ks.record.suspended:   # suspended by the user: from a new frozen view
                try:
                    self.suspend(name)
                except NoCopy:   # over already
                    pause.forget(ks)
        else:
            pause.forget(ks)

    def get(self, name: str) -> KernelSet:
        """The served set of that name (NotFound otherwise)."""
        try:
            return self._sets[name]
        except KeyError:
            raise NotFound(f"set {name!r} is not served") from None

    @property
    def served(self) -> dict[str, KernelSet]:
        return dict(self._sets)

    def users(self, name: str, direction: Direction) -> list[str]:
        """Who holds the set's master or shadow device open (mounts, stacked devices)."""
        ks = self.get(name)
        return blocks.users(ks.master_device if direction is Direction.TO_MASTER
                            else ks.shadow_device)

    def unserve(self, name: str, *, force: bool = False) -> None:
        """Dismantle the set's devices; refused while one is open, unless ``force``."""
        with self._lock:
            ks = self.get(name)
            if ks.busy:
                raise CopyInProgress(f"set {name} is copying; wait for it first")
            refusals.check_no_merge(ks.stack, self._sets, f"disabling set {name}")
            if not force:
                for d in Direction:
                    busy = self.users(name, d)
                    if busy:
                        raise InUse(f"{name}'s devices are in use by {', '.join(busy)}")
            if stack.remove(ks):
                del self._masters[ks.stack.key]
            os.close(ks.bitmap_fd)
            if ks.overflow_fd >= 0:
                os.close(ks.overflow_fd)
            del self._sets[name]
            self._waiting.discard(name)
            with self._ends_lock:
                self._ends.pop(name).close()
            self._release(ks.blocks.values())

    def _release(self, gone: Iterable[blocks.Block]) -> None:
        """Detach the loop devices of these volumes that no served set uses any more."""
        blocks.release_loops(list(gone), {b.ref for k in self._sets.values()
                                          for b in k.blocks.values()})

    # ---- copies -----------------------------------------------------------------------------

    def copy(self, names_: Sequence[str], direction: Direction, *, full: bool,
             owner: int = 0) -> float:
        """Copy or update sets at one point in time; returns seconds the sources were held."""
        if not names_:
            raise InvalidArgument("no set named")
        with self._lock:
            kss = [self.get(n) for n in names_]
            if len({ks.name for ks in kss}) != len(kss):
                raise InvalidArgument("a set is named twice")
            # Everything that can refuse is asked of every set before anything changes.
            for ks in kss:
                pit.check(ks, direction, owner)
                refusals.check_no_merge(ks.stack, self._sets,
                                        f"copying or updating set {ks.name}")
            if direction is Direction.TO_MASTER:
                refusals.check_group_restore(kss)
            if direction is Direction.TO_MASTER and kss[0].kind is Kind.DEPENDENT:
                held = merge.start(kss, owner, {
                    ks.name: [self._sets[n] for n in ks.stack.sets
                              if n != ks.name and self._sets[n].kind is Kind.INDEPENDENT]
                    for ks in kss})
            else:
                held = pit.take(kss, direction, full=full, owner=owner, run_dir=self._run_dir,
                                before_restore=self._reserve_for_restore)
            for ks in kss:
                self._ends[ks.name].set(not running(ks))
            self._monitor.wake()   # it watches the new engine copies
            return held

    def _reserve_for_restore(self, ks: KernelSet) -> None:
        """A restore from an independent shadow writes the master through its stack, so
        dm-snapshot copies each chunk it changes into every dependent sibling's store: grow
        the compact ones for all of it first (store.reserve). Called once the restore's
        chunks are marked (a full copy marks every one)."""
        nbytes = min(ks.set.status().diff_chunks * ks.chunk, ks.master_size)
        for n in ks.stack.sets:
            sib = self._sets.get(n)
            if sib is not None and n != ks.name and sib.kind is Kind.DEPENDENT:
                store.reserve(sib, nbytes, self._sets.values())

    def hold(self, names_: Sequence[str], direction: Direction, *, full: bool, owner: int,
             timeout: float) -> HeldPoint:
        """Refused (``caps.group_hold`` is False): see docs/kernel-path.md."""
        for n in names_:
            self.get(n)
        raise WrongKind("the kernel data path cannot hold a group point in time across calls "
                        "(a group that spans hosts): its point in time is one device-mapper "
                        "transaction that suspends the sets' devices and resumes them in the "
                        "same call, and a resume driven by a watchdog at the hold's timeout is "
                        "not built; use the userspace data path for groups that span hosts")

    def copier(self, name: str) -> KernelCopy:
        """What a job follows for this set's copy (merges included)."""
        self.get(name)
        return KernelCopy(self, name)

    def done_fd(self, name: str) -> int:
        """A descriptor (the caller's to close) readable while the set's copy or merge is not
        running: the monitor sets it as it finishes them."""
        with self._ends_lock:
            end = self._ends.get(name)
            if end is None:
                raise NotFound(f"set {name!r} is not served")
            return end.dup()

    # ---- observing --------------------------------------------------------------------------

    def progress(self, name: str) -> Progress:
        """The copy's progress; for a merge, sectors merged of those to merge. Active until
        the target is writable again."""
        ks = self.get(name)
        if ks.state in (State.MERGING, State.MERGE_FAILED):
            return merge.progress(ks)
        p = ks.set.progress()
        return dataclasses.replace(p, active=True) if running(ks) else p

    def busy(self, name: str) -> bool:
        """A copy or merge runs (or failed half way): its target is not usable yet."""
        return self.get(name).busy

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
        """Stop the set's copy; a merge in the kernel cannot be stopped."""
        ks = self.get(name)
        if ks.state in (State.MERGING, State.MERGE_FAILED):
            raise WrongKind(f"set {name} is merging in the kernel; a snapshot-merge "
                                  "cannot be stopped half way")
        ks.set.abort()

    def suspend(self, name: str) -> None:
        """Stop the set's copy where it is, its frozen view's store reserved first (``pause``)."""
        with self._lock:
            ks = self.get(name)
            pause.suspend(ks, self._run_dir)
            self._ends[name].set(True)

    def resume(self, name: str) -> None:
        """Go on with the suspended copy from the same frozen view."""
        with self._lock:
            pause.resume(self.get(name))
            self._ends[name].set(False)
            self._monitor.wake()   # it watches the engine copy again

    def rename(self, name: str, new: str) -> None:
        """Serve the set as ``new``: its two devices are renamed in the kernel and keep
        serving (open descriptors and mounts keep working). The caller records the new name
        after this; a crash before that is undone at the next serve (``rename.claim``)."""
        with self._lock:
            ks = self.get(name)
            if new in self._sets:
                raise InvalidArgument(f"a set named {new!r} is served already")
            rename.rename(name, new)
            ks.name = new
            ms = ks.stack
            ms.sets[ms.sets.index(name)] = new
            self._sets[new] = self._sets.pop(name)
            with self._ends_lock:
                self._ends[new] = self._ends.pop(name)

    def status(self, name: str) -> dict[str, object]:
        """Kernel-side facts: devices, store usage of a dependent shadow, merge state."""
        ks = self.get(name)
        merging = ks.state in (State.MERGING, State.MERGE_FAILED)
        out: dict[str, object] = {"master_device": ks.master_device,
                                  "shadow_device": ks.shadow_device,
                                  "merging": merging, "copying": ks.state is State.COPYING,
                                  "out_of_space": ks.state is State.OUT_OF_SPACE}
        if ks.kind is Kind.DEPENDENT and not merging:
            use = tables.snapshot_usage(names.shadow(ks.name))
            out.update(store_used=use.allocated * 512, store_size=use.total * 512,
                       extents=len(ks.record.extents))
        return out

    def poll(self) -> None:
        """One round of what the monitor thread does every ``poll`` seconds: finish copies and
        merges, grow compact stores, flag the ones that ran out of space."""
        with self._lock:
            self._tick()

    def _tick(self) -> None:
        """The monitor's round (run under the lock)."""
        for ks in list(self._sets.values()):
            if ks.state is State.COPYING:
                if not ks.set.progress().active and not ks.set.suspended:
                    pit.dismantle(ks, self._run_dir)
                    pause.forget(ks)
            elif ks.state is State.MERGING:
                merge.follow(ks)
            elif ks.kind is Kind.DEPENDENT and ks.state is not State.MERGE_FAILED:
                store.watch(ks, self._sets.values())
            self._ends[ks.name].set(not running(ks))

    # ---- overflow volumes -------------------------------------------------------------------

    def attach_overflow(self, name: str, overflow: Volume) -> None:
        """Use this overflow volume (the descriptor the caller checked) for the set's store
        from now on."""
        ks = self.get(name)
        with self._lock:
            old = store.attach(ks, overflow)
            if old is not None:
                self._release([old])

    def detach_overflow(self, name: str) -> None:
        """Refused while the set's exception store uses extents of the overflow volume (they go
        back at its next point in time)."""
        ks = self.get(name)
        with self._lock:
            old = store.detach(ks)
            if old is not None:
                self._release([old])

    # ---- stopping ---------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop watching. The devices stay: the kernel keeps serving applications, and the next
        KernelPath takes them over (``force`` changes nothing; see teardown)."""
        del force
        self._monitor.stop()

    def teardown(self) -> None:
        """Stop and dismantle every device (tests, and `ptcopyd --data-path kernel` stop with
        --release)."""
        self.stop()
        with self._lock:
            for name in list(self._sets):
                self.unserve(name, force=True)


if TYPE_CHECKING:
    def _implements(kp: KernelPath) -> DataPath:   # mypy checks KernelPath against the protocol
        return kp
