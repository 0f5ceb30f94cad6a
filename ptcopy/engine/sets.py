"""A set (master + shadow + bitmap volume) as Python holds it: :class:`Set`, the object that
owns its engine handle (I/O, copies, state, overflow, export and lifetime), and
:func:`bitmap_size`. The :class:`~ptcopy.engine.owner.Engine` makes sets and closes them with
itself.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from ptcopy.engine._ffi import ffi, lib, new_error, to_uuid
from ptcopy.engine.errors import InvalidArgument, check
from ptcopy.engine.overflow import Overflow
from ptcopy.engine.tracked import Tracked
from ptcopy.engine.types import (
    Direction,
    Flag,
    Kind,
    Progress,
    SetStatus,
    Side,
    VolumeLike,
    VolumeRole,
)
from ptcopy.engine.volspec import VolSpec

if TYPE_CHECKING:
    from ptcopy.engine.owner import Engine

__all__ = ["Set", "bitmap_size"]


def bitmap_size(master_size: int, shadow_size: int, chunk_size: int = 0,
                kind: Kind = Kind.DEPENDENT) -> int:
    """Bytes a bitmap volume needs for a set with these volume sizes."""
    out = ffi.new("uint64_t *")
    err = new_error()
    check(lib.pt_bitmap_size(master_size, shadow_size, chunk_size, int(kind), out, err), err)
    return int(out[0])


class Set(Tracked):
    """A master + shadow + bitmap volume set."""

    def __init__(self, engine: Engine, handle: Any, overflow: Overflow | None) -> None:
        self._overflow = overflow
        super().__init__(engine, handle, "set")

    @property
    def overflow(self) -> Overflow | None:
        return self._overflow

    # -- I/O --

    def read(self, side: Side, offset: int, length: int) -> bytes:
        """Read through the set, with the point-in-time redirections applied."""
        if length < 0 or offset < 0:
            raise InvalidArgument("offset and length must not be negative")
        buf = ffi.new("char[]", length or 1)
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_read(h, int(side), offset, buf, length, err), err)
        return bytes(ffi.buffer(buf, length))

    def write(self, side: Side, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write through the set: copy-on-write and copy-on-demand happen first."""
        if offset < 0:
            raise InvalidArgument("offset must not be negative")
        src = ffi.from_buffer(data)
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_write(h, int(side), offset, src, len(src), err), err)

    def flush(self, side: Side | None = None) -> None:
        """Make every completed write durable on all the set's volumes; with ``side``, what
        that side needs, as a served file's fsync does (a master flush never fails because the
        shadow, bitmap or overflow volume is offline)."""
        err = new_error()
        if side is None:
            with self._use() as h:
                check(lib.pt_set_flush(h, err), err)
        else:
            with self._use() as h:
                check(lib.pt_set_sync(h, int(side), err), err)

    # -- copies --

    def copy(self, direction: Direction, *, owner: int = 0) -> None:
        """Start a full copy in ``direction``; returns at once."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_copy(h, int(direction), 1, owner, err), err)

    def update(self, direction: Direction, *, owner: int = 0) -> None:
        """Start an update (only the chunks that differ) in ``direction``; returns at once."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_copy(h, int(direction), 0, owner, err), err)

    def abort(self) -> None:
        """Stop the running (or suspended) copy; the target is left consistent but
        incomplete."""
        err = new_error()
        with self._use() as h:
            rc = lib.pt_set_abort(h, err)
            if rc == -lib.PT_E_NO_COPY and self.suspended:
                err = new_error()
                rc = lib.pt_set_resume(h, 1, err)
            check(rc, err)

    def suspend(self) -> None:
        """Suspend the running copy: it keeps its place (copy bits, progress) and the set
        stays copying (reads and writes as during the copy) until :meth:`resume`, also
        across a close and open. NoCopy when none runs."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_suspend(h, err), err)

    def resume(self) -> None:
        """Resume a suspended copy where it stopped; returns at once. NoCopy when the set
        has no suspended copy."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_resume(h, 0, err), err)

    @property
    def cancelable(self) -> bool:
        """An engine copy can always be aborted (the Copy protocol's question)."""
        return True

    @property
    def suspended(self) -> bool:
        """Whether the set's copy is suspended."""
        return bool(self.status().flags & Flag.SUSPENDED)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running copy. False on timeout; raises if the copy failed."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        err = new_error()
        with self._use() as h:
            # a close or disable wakes this (pt_set_closing) before it frees the handle
            rc = lib.pt_set_wait(h, ms, err)
        if rc == -lib.PT_E_TIMEOUT:
            return False
        check(rc, err)
        return True

    def progress(self) -> Progress:
        p = ffi.new("pt_progress *")
        with self._use() as h:
            lib.pt_set_progress(h, p)
        return Progress(
            active=bool(p.active), direction=Direction(p.direction), aborting=bool(p.aborting),
            result=p.result, chunks_done=p.chunks_done, chunks_total=p.chunks_total,
            bytes_done=p.bytes_done, bytes_total=p.bytes_total, rate=p.rate,
            elapsed_s=p.elapsed_ns / 1e9,
        )

    def done_fd(self) -> int:
        """A new descriptor (the caller closes it) that is readable exactly while no copy of
        this set runs: watch it (``loop.add_reader``, poll) to learn that a copy ended, then
        read :meth:`progress`; never read it. It stays valid after the set is closed."""
        with self._use() as h:
            return os.dup(lib.pt_set_done_fd(h))

    def set_copy_params(self, delay_ms: int, units: int) -> None:
        """Throttle copies: pause ``delay_ms`` after every ``units`` chunks (takes effect now)."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_set_params(h, delay_ms, units, err), err)

    # -- state --

    def status(self) -> SetStatus:
        st = ffi.new("pt_status *")
        with self._use() as h:
            lib.pt_set_status(h, st)
        ov = to_uuid(st.overflow_uuid)
        return SetStatus(
            kind=Kind(st.kind), flags=Flag(st.flags), chunk_size=st.chunk_size,
            copy_delay_ms=st.copy_delay_ms, copy_units=st.copy_units,
            master_size=st.master_size, shadow_size=st.shadow_size, chunks=st.chunks,
            diff_chunks=st.diff_chunks, copy_chunks=st.copy_chunks,
            shadow_slots=st.shadow_slots, shadow_slots_used=st.shadow_slots_used,
            overflow_used=st.overflow_used, lost_chunks=st.lost_chunks,
            generation=st.generation, last_modified_ns=st.last_modified_ns,
            lock_owner=st.lock_owner, bitmap_size=st.bitmap_size, uuid=to_uuid(st.uuid),
            overflow_uuid=None if ov.int == 0 else ov,
        )

    def bits(self, which: str = "shadow") -> list[int]:
        """Indexes of the chunks whose ``shadow`` or ``copy`` bit is set."""
        if which not in ("shadow", "copy"):
            raise InvalidArgument("which must be 'shadow' or 'copy'")
        nchunks = self.status().chunks
        n = (nchunks + 7) // 8
        buf = ffi.new("uint8_t[]", n or 1)
        err = new_error()
        w = lib.PT_BITS_SHADOW if which == "shadow" else lib.PT_BITS_COPY
        with self._use() as h:
            check(lib.pt_set_get_bits(h, w, buf, n, err), err)
        raw = bytes(ffi.buffer(buf, n))
        return [i for i in range(nchunks) if raw[i >> 3] >> (i & 7) & 1]

    def lock(self, owner: int) -> None:
        """PID lock: copies by any other owner are refused until unlocked."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_lock(h, owner, err), err)

    def unlock(self, owner: int = 0) -> None:
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_unlock(h, owner, err), err)

    def reset(self, *, owner: int = 0) -> None:
        """Bring offline volumes back and start the resync they need."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_reset(h, owner, err), err)

    def attach_overflow(self, overflow: Overflow) -> None:
        err = new_error()
        with self._use() as h, overflow._use() as ov:
            check(lib.pt_set_attach_overflow(h, ov, err), err)
        self._overflow = overflow

    def detach_overflow(self) -> None:
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_detach_overflow(h, err), err)
        self._overflow = None

    def join(self, bitmap: VolumeLike) -> None:
        """OR another host's shadow bitmap for this set's exported shadow into this set's, so
        the next update resyncs the chunks written there."""
        b = VolSpec(bitmap)
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_join(h, b.spec, err), err)

    def mark(self, first: int, count: int) -> None:
        """Kernel data path: chunks changed outside the engine join the shadow bitmap
        (durable on return)."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_mark(h, first, count, err), err)

    def copy_source(self, source: VolumeLike | None) -> None:
        """Kernel data path: copies read their source side from ``source`` (a frozen snapshot
        of the live volume); None goes back to the live volume."""
        err = new_error()
        if source is None:
            with self._use() as h:
                check(lib.pt_set_copy_source(h, ffi.NULL, err), err)
            return
        v = VolSpec(source)
        with self._use() as h:
            check(lib.pt_set_copy_source(h, v.spec, err), err)

    def copy_target(self, target: VolumeLike | None) -> None:
        """Kernel data path: copies to the master (restores) write it through ``target`` (the
        master's device-mapper stack, so the other sets' snapshots and eras see the writes)
        instead of the raw volume; None goes back to the raw volume. Refused while a copy runs
        and for a compact set."""
        err = new_error()
        if target is None:
            with self._use() as h:
                check(lib.pt_set_copy_target(h, ffi.NULL, err), err)
            return
        v = VolSpec(target)
        with self._use() as h:
            check(lib.pt_set_copy_target(h, v.spec, err), err)

    def set_fallback(self, fd: int) -> bool:
        """Give the set its fallback record: ``fd`` is an open descriptor (the engine keeps a
        duplicate) of a root-only regular file outside the bitmap volume, one per set. When the
        bitmap goes offline, the record durably says so before the next master write is issued.
        True when the record said the bitmap had been lost (a crash while it was offline): every
        chunk then counts as changed, the shadow is offline (flag BITMAP_LOST) and a reset makes
        the full copy. Call it right after enable or open, before the set is served."""
        err = new_error()
        recovered = ffi.new("int *")
        with self._use() as h:
            check(lib.pt_set_fallback(h, fd, recovered, err), err)
        return bool(recovered[0])

    def inject_error(self, volume: VolumeRole, on: bool = True, *,
                     error: int = errno.EIO) -> None:
        """Test hook: fail every I/O to one of the set's volumes while on, with errno
        ``error`` (EIO; ENOSPC for a full disk)."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_inject_error(h, int(volume), int(on), error, err), err)

    # -- lifetime --

    def close(self) -> None:
        """Stop serving the set; a running copy is suspended and resumes on the next open."""
        err = new_error()
        rc = 0

        def free(h: Any) -> None:
            nonlocal rc
            rc = lib.pt_set_close(h, err)

        if self._life.free(lib.pt_set_closing, free):
            self._engine._forget(self)
            check(rc, err)

    def export(self) -> None:
        """Export the shadow to another host (independent sets whose shadow holds its point
        in time whole): its I/O, copies and resets are refused until ``join``; durable."""
        err = new_error()
        with self._use() as h:
            check(lib.pt_set_export(h, err), err)

    def release(self) -> None:
        """Hand an imported shadow back: I/O stops, the volume and bitmap are flushed, the
        bitmap says "released" (the exporting host's ``join`` takes it; no open does), and
        the set is closed."""
        err = new_error()
        with self._use() as h:   # the refusable part, with the handle still shared
            check(lib.pt_import_release(h, err), err)
        self.close()

    def disable(self) -> None:
        """End the set for good; refused while a copy runs."""
        err = new_error()
        # the refusal (copying) and the disabled header come first, with the handle still shared
        with self._use() as h:
            check(lib.pt_set_retire(h, err), err)
        if self._life.free(lib.pt_set_closing, lambda h: lib.pt_set_disable(h, ffi.NULL)):
            self._engine._forget(self)

    def __enter__(self) -> Set:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
