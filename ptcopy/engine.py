"""Typed Python objects over ptcopy's C engine.

This module is the only importer of ``ptcopy._engine``. Every C handle is owned by an object
with ``close()`` and context-manager support; C error codes become :class:`PtcopyError`
subclasses; raw cffi data never leaves this module. C never calls back into Python: copies run
on engine threads and Python polls :meth:`Set.progress`.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import threading
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ptcopy._engine import ffi, lib

CHUNK_DEFAULT: int = lib.PT_CHUNK_DEFAULT
CHUNK_MIN: int = lib.PT_CHUNK_MIN
CHUNK_MAX: int = lib.PT_CHUNK_MAX


class Kind(enum.IntEnum):
    INDEPENDENT = lib.PT_INDEPENDENT
    DEPENDENT = lib.PT_DEPENDENT


class Side(enum.IntEnum):
    MASTER = lib.PT_MASTER
    SHADOW = lib.PT_SHADOW


class Direction(enum.IntEnum):
    TO_SHADOW = lib.PT_TO_SHADOW
    TO_MASTER = lib.PT_TO_MASTER


class VolumeRole(enum.IntEnum):
    MASTER = lib.PT_VOL_MASTER
    SHADOW = lib.PT_VOL_SHADOW
    BITMAP = lib.PT_VOL_BITMAP
    OVERFLOW = lib.PT_VOL_OVERFLOW


class Flag(enum.IntFlag):
    COPYING = lib.PT_F_COPYING
    TO_MASTER = lib.PT_F_TO_MASTER
    ABORT_REQUESTED = lib.PT_F_ABORT_REQUESTED
    COMPACT = lib.PT_F_COMPACT
    OUT_OF_SPACE = lib.PT_F_OUT_OF_SPACE
    SPILLED = lib.PT_F_SPILLED
    MASTER_OFFLINE = lib.PT_F_MASTER_OFFLINE
    SHADOW_OFFLINE = lib.PT_F_SHADOW_OFFLINE
    BITMAP_OFFLINE = lib.PT_F_BITMAP_OFFLINE
    OVERFLOW_OFFLINE = lib.PT_F_OVERFLOW_OFFLINE
    RECOVERED = lib.PT_F_RECOVERED
    INCOMPLETE = lib.PT_F_INCOMPLETE
    BITMAP_LOST = lib.PT_F_BITMAP_LOST
    UNRECORDED = lib.PT_F_UNRECORDED


# ---- errors ---------------------------------------------------------------------------------


class PtcopyError(Exception):
    """An engine call failed. ``code`` is the engine's code (errno or PT_E_*)."""

    name = "Failed"

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidArgument(PtcopyError):
    name = "InvalidArgument"


class TooSmall(PtcopyError):
    name = "TooSmall"


class BadHeader(PtcopyError):
    name = "BadHeader"


class SizeMismatch(PtcopyError):
    name = "SizeMismatch"


class InUse(PtcopyError):
    name = "InUse"


class CopyInProgress(PtcopyError):
    name = "Busy"


class WrongKind(PtcopyError):
    name = "WrongType"


class Dependency(PtcopyError):
    name = "Dependency"


class Offline(PtcopyError):
    name = "Offline"


class OutOfSpace(PtcopyError):
    name = "OutOfSpace"


class SameVolume(PtcopyError):
    name = "SameVolume"


class NotLocked(PtcopyError):
    name = "NotLocked"


class Incomplete(PtcopyError):
    name = "Incomplete"


class Timeout(PtcopyError):
    name = "Timeout"


class NotFound(PtcopyError):
    name = "NotFound"


class NoCopy(PtcopyError):
    name = "NoCopy"


class VolumeIOError(PtcopyError):
    name = "IOError"


class Closed(InvalidArgument):
    """The set, overflow volume or engine is closed, disabled or deleted, or being so: the call
    never reached it (or, for a wait, stopped waiting on it). On D-Bus the object is gone:
    ``NotFound``. A subclass of InvalidArgument, which closed handles raised before."""

    name = "NotFound"


_BY_CODE: dict[int, type[PtcopyError]] = {
    lib.PT_E_INVALID: InvalidArgument,
    lib.PT_E_TOO_SMALL: TooSmall,
    lib.PT_E_BAD_HEADER: BadHeader,
    lib.PT_E_SIZE_MISMATCH: SizeMismatch,
    lib.PT_E_IN_USE: InUse,
    lib.PT_E_COPY_IN_PROGRESS: CopyInProgress,
    lib.PT_E_WRONG_KIND: WrongKind,
    lib.PT_E_DEPENDENCY: Dependency,
    lib.PT_E_OFFLINE: Offline,
    lib.PT_E_OUT_OF_SPACE: OutOfSpace,
    lib.PT_E_SAME_VOLUME: SameVolume,
    lib.PT_E_NOT_LOCKED: NotLocked,
    lib.PT_E_INCOMPLETE: Incomplete,
    lib.PT_E_IO: VolumeIOError,
    lib.PT_E_TIMEOUT: Timeout,
    lib.PT_E_NOT_FOUND: NotFound,
    lib.PT_E_NO_COPY: NoCopy,
    lib.PT_E_CLOSED: Closed,
    errno.ENOENT: NotFound,
    errno.EIO: VolumeIOError,
    errno.EBUSY: InUse,
    errno.EINVAL: InvalidArgument,
}


def _new_error() -> Any:
    return ffi.new("pt_error *")


def _check(rc: int, err: Any) -> None:
    """Raise the exception for a failed engine call (rc < 0)."""
    if rc >= 0:
        return
    code = err.code or -rc
    message = ffi.string(err.msg).decode("utf-8", "replace") if err.code else ""
    if not message:
        message = os.strerror(code) if code < 1000 else f"engine error {code}"
    raise _BY_CODE.get(code, PtcopyError)(code, message)


class _Lifetime:
    """The lifetime of one C handle, shared by every thread that holds the Python object.

    The engine frees a set or overflow volume inside close, disable and delete, and its calls
    read the handle's memory: a status() from the daemon's event loop running into a disable on a
    worker thread was a use-after-free. So every call holds the handle through :meth:`use`, and
    :meth:`free` first turns new calls away (they raise :class:`Closed`), wakes the ones that may
    block for long (a wait on a copy), waits for those in flight to return, and only then lets
    the engine free the handle. The engine's own refusals (disable while copying, close of an
    overflow in use) happen before, through :meth:`use`, so :meth:`free` never has to undo.
    """

    def __init__(self, handle: Any, what: str) -> None:
        self._h: Any = handle
        self._what = what
        self._cv = threading.Condition(threading.Lock())
        self._users = 0
        self._closing = False

    @property
    def closed(self) -> bool:
        return self._h is None

    @contextlib.contextmanager
    def use(self) -> Iterator[Any]:
        with self._cv:
            if self._h is None or self._closing:
                raise Closed(lib.PT_E_CLOSED, f"the {self._what} is closed")
            self._users += 1
            h = self._h
        try:
            yield h
        finally:
            with self._cv:
                self._users -= 1
                if not self._users:
                    self._cv.notify_all()

    def free(self, wake: Callable[[Any], None] | None, fn: Callable[[Any], None]) -> bool:
        """Run ``fn(handle)``, which must free it, once no call is in flight. False (and
        nothing run) when the handle is already freed, or being freed by another thread, which
        this then waits for."""
        with self._cv:
            if self._h is None:
                return False
            if self._closing:
                while self._h is not None:
                    self._cv.wait()
                return False
            self._closing = True
            h = self._h
        if wake is not None:
            wake(h)   # still valid: nothing frees it but us
        with self._cv:
            while self._users:
                self._cv.wait()
        try:
            fn(h)
        finally:
            with self._cv:
                self._h = None
                self._closing = False
                self._cv.notify_all()
        return True


VolumeLike = str | os.PathLike[str] | int | tuple[str, int]
"""A path, an open descriptor, or both: (path used in messages, descriptor used for I/O)."""


class _Vol:
    """Keeps a pt_volspec and the bytes it points at alive for one call."""

    def __init__(self, vol: VolumeLike | None) -> None:
        self.spec = ffi.new("pt_volspec *")
        if vol is None:
            self._path = ffi.new("char[]", b"")
            self.spec.fd = -1
        elif isinstance(vol, tuple):
            label, fd = vol
            if fd < 0 or not label:
                raise InvalidArgument(lib.PT_E_INVALID, f"volume {vol!r} is not valid")
            self._path = ffi.new("char[]", os.fsencode(label))
            self.spec.fd = fd
        elif isinstance(vol, int):
            if vol < 0:
                raise InvalidArgument(lib.PT_E_INVALID, f"descriptor {vol} is not valid")
            self._path = ffi.new("char[]", f"/proc/self/fd/{vol}".encode())
            self.spec.fd = vol
        else:
            raw = os.fsencode(vol)
            if not raw or b"\0" in raw:
                raise InvalidArgument(lib.PT_E_INVALID, f"volume path {vol!r} is not valid")
            self._path = ffi.new("char[]", raw)
            self.spec.fd = -1
        self.spec.path = self._path


def bitmap_size(master_size: int, shadow_size: int, chunk_size: int = 0,
                kind: Kind = Kind.DEPENDENT) -> int:
    """Bytes a bitmap volume needs for a set with these volume sizes."""
    out = ffi.new("uint64_t *")
    err = _new_error()
    _check(lib.pt_bitmap_size(master_size, shadow_size, chunk_size, int(kind), out, err), err)
    return int(out[0])


# ---- observations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    active: bool
    direction: Direction
    aborting: bool
    result: int
    chunks_done: int
    chunks_total: int
    bytes_done: int
    bytes_total: int
    rate: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return 1.0 if self.chunks_total == 0 else self.chunks_done / self.chunks_total


@dataclass(frozen=True)
class SetStatus:
    kind: Kind
    flags: Flag
    chunk_size: int
    copy_delay_ms: int
    copy_units: int
    master_size: int
    shadow_size: int
    chunks: int
    diff_chunks: int
    copy_chunks: int
    shadow_slots: int
    shadow_slots_used: int
    overflow_used: int
    lost_chunks: int
    generation: int
    last_modified_ns: int
    lock_owner: int
    bitmap_size: int
    uuid: uuid_mod.UUID
    overflow_uuid: uuid_mod.UUID | None

    @property
    def difference_percent(self) -> float:
        return 100.0 * self.diff_chunks / self.chunks if self.chunks else 0.0


@dataclass(frozen=True)
class OverflowStatus:
    chunk_size: int
    counters_valid: bool
    offline: bool
    chunks_total: int
    chunks_used: int
    uuid: uuid_mod.UUID
    sets: tuple[uuid_mod.UUID, ...]


def _uuid(raw: Any) -> uuid_mod.UUID:
    return uuid_mod.UUID(bytes=bytes(ffi.buffer(raw, 16)))


# ---- the engine and its objects -------------------------------------------------------------


class Engine:
    """Owns every set and overflow volume opened through it."""

    def __init__(self) -> None:
        handle = lib.pt_engine_new()
        if handle == ffi.NULL:
            raise MemoryError("cannot create a ptcopy engine")
        self._life = _Lifetime(handle, "engine")
        self._lock = threading.Lock()
        self._objects: list[Set | Overflow] = []

    def _use(self) -> contextlib.AbstractContextManager[Any]:
        return self._life.use()

    def close(self) -> None:
        """Close every set (copies suspend, to resume on the next open) and overflow volume."""
        failures: list[PtcopyError] = []

        def close_all(h: Any) -> None:
            # no enable or open is in flight any more: every object is tracked
            with self._lock:
                objs = list(self._objects)
            # sets before overflow volumes: an overflow refuses to close while its sets are open
            for o in sorted(objs, key=lambda o: isinstance(o, Overflow)):
                try:
                    o.close()
                except PtcopyError as e:  # keep closing the rest; report the first failure
                    failures.append(e)
            lib.pt_engine_free(h)

        self._life.free(None, close_all)
        if failures:
            raise failures[0]

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def defer_copies(self, on: bool = True) -> None:
        """Kernel data path: copies start only when asked (from a frozen view); enabling an
        independent set marks every chunk instead of copying from the live master, and an
        interrupted copy is folded back into the shadow bitmap at open instead of resumed."""
        with self._use() as h:
            lib.pt_engine_defer_copies(h, int(on))

    def _track(self, obj: Set | Overflow) -> None:
        with self._lock:
            self._objects.append(obj)

    def _forget(self, obj: Set | Overflow) -> None:
        with self._lock:
            if obj in self._objects:
                self._objects.remove(obj)

    def enable(self, master: VolumeLike, shadow: VolumeLike, bitmap: VolumeLike | None,
               kind: Kind, *, chunk_size: int = 0, overflow: Overflow | None = None,
               set_uuid: uuid_mod.UUID | None = None, copy_delay_ms: int = 0,
               copy_units: int = 0) -> Set:
        """Enable a new set. ``bitmap=None`` keeps the bitmaps in memory only.

        An independent set starts its full copy to the shadow at once.
        """
        cfg = ffi.new("pt_set_config *")
        cfg.kind = int(kind)
        cfg.chunk_size = chunk_size
        cfg.bitmap_in_memory = 1 if bitmap is None else 0
        if set_uuid is not None:
            ffi.memmove(cfg.uuid, set_uuid.bytes, 16)
        cfg.copy_delay_ms = copy_delay_ms
        cfg.copy_units = copy_units
        m, s, b = _Vol(master), _Vol(shadow), _Vol(bitmap)
        out = ffi.new("pt_set **")
        err = _new_error()
        with self._use() as h, _use_optional(overflow) as ov:
            _check(lib.pt_set_enable(h, m.spec, s.spec, b.spec, cfg, ov, out, err), err)
            return Set(self, out[0], overflow)

    def open(self, master: VolumeLike, shadow: VolumeLike, bitmap: VolumeLike, *,
             overflow: Overflow | None = None) -> Set:
        """Open an existing set from its bitmap volume; an interrupted copy resumes."""
        m, s, b = _Vol(master), _Vol(shadow), _Vol(bitmap)
        out = ffi.new("pt_set **")
        err = _new_error()
        with self._use() as h, _use_optional(overflow) as ov:
            _check(lib.pt_set_open(h, m.spec, s.spec, b.spec, ov, out, err), err)
            return Set(self, out[0], overflow)

    def init_overflow(self, volume: VolumeLike, chunk_size: int = 0) -> Overflow:
        """Initialise a volume as an empty overflow volume."""
        v = _Vol(volume)
        out = ffi.new("pt_overflow **")
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_overflow_init(h, v.spec, chunk_size, out, err), err)
            return Overflow(self, out[0])

    def open_overflow(self, volume: VolumeLike) -> Overflow:
        """Open an initialised overflow volume."""
        v = _Vol(volume)
        out = ffi.new("pt_overflow **")
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_overflow_open(h, v.spec, out, err), err)
            return Overflow(self, out[0])

    def group_copy(self, sets: Sequence[Set], direction: Direction, *, full: bool = False,
                   owner: int = 0) -> float:
        """Copy or update several sets at one point in time, all or nothing.

        Returns how long writes were frozen, in seconds.
        """
        if not sets:
            raise InvalidArgument(lib.PT_E_INVALID, "a group copy needs at least one set")
        frozen = ffi.new("uint64_t *")
        err = _new_error()
        with contextlib.ExitStack() as stack:
            arr = ffi.new("pt_set *[]", [stack.enter_context(s._use()) for s in sets])
            rc = lib.pt_group_copy(arr, len(sets), int(direction), int(full), owner, frozen, err)
        _check(rc, err)
        return int(frozen[0]) / 1e9


class Overflow:
    """An overflow volume shared by compact dependent sets."""

    def __init__(self, engine: Engine, handle: Any) -> None:
        self._engine = engine
        self._life = _Lifetime(handle, "overflow volume")
        engine._track(self)

    def _use(self) -> contextlib.AbstractContextManager[Any]:
        return self._life.use()

    @property
    def closed(self) -> bool:
        return self._life.closed

    def status(self) -> OverflowStatus:
        st = ffi.new("pt_ov_status *")
        sets = []
        buf = ffi.new("uint8_t[16]")
        with self._use() as h:
            lib.pt_overflow_status(h, st)
            for i in range(st.nsets):
                if lib.pt_overflow_set_uuid(h, i, buf) == 0:
                    sets.append(_uuid(buf))
        return OverflowStatus(
            chunk_size=st.chunk_size, counters_valid=bool(st.counters_valid),
            offline=bool(st.offline), chunks_total=st.chunks_total,
            chunks_used=st.chunks_used, uuid=_uuid(st.uuid), sets=tuple(sets),
        )

    def _end(self, wipe: bool) -> None:
        err = _new_error()
        # the refusals (in use, sets attached) come first, with the handle still shared
        with self._use() as h:
            _check(lib.pt_overflow_retire(h, int(wipe), err), err)
        rc = 0

        def free(h: Any) -> None:
            nonlocal rc
            rc = (lib.pt_overflow_delete if wipe else lib.pt_overflow_close)(h, err)

        if self._life.free(None, free):
            self._engine._forget(self)
            _check(rc, err)

    def close(self) -> None:
        """Close the volume; refused while open sets use it."""
        if self._life.closed:
            return
        try:
            self._end(wipe=False)
        except Closed:
            return   # closed meanwhile by another thread: what was asked

    def delete(self) -> None:
        """Wipe the volume's header; refused while any set is attached."""
        self._end(wipe=True)

    def __enter__(self) -> Overflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _use_optional(ov: Overflow | None) -> Iterator[Any]:
    if ov is None:
        yield ffi.NULL
        return
    with ov._use() as h:
        yield h


class Set:
    """A master + shadow + bitmap volume set."""

    def __init__(self, engine: Engine, handle: Any, overflow: Overflow | None) -> None:
        self._engine = engine
        self._life = _Lifetime(handle, "set")
        self._overflow = overflow
        engine._track(self)

    def _use(self) -> contextlib.AbstractContextManager[Any]:
        return self._life.use()

    @property
    def closed(self) -> bool:
        return self._life.closed

    @property
    def overflow(self) -> Overflow | None:
        return self._overflow

    # -- I/O --

    def read(self, side: Side, offset: int, length: int) -> bytes:
        """Read through the set, with the point-in-time redirections applied."""
        if length < 0 or offset < 0:
            raise InvalidArgument(lib.PT_E_INVALID, "offset and length must not be negative")
        buf = ffi.new("char[]", length or 1)
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_read(h, int(side), offset, buf, length, err), err)
        return bytes(ffi.buffer(buf, length))

    def write(self, side: Side, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write through the set: copy-on-write and copy-on-demand happen first."""
        if offset < 0:
            raise InvalidArgument(lib.PT_E_INVALID, "offset must not be negative")
        src = ffi.from_buffer(data)
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_write(h, int(side), offset, src, len(src), err), err)

    def flush(self, side: Side | None = None) -> None:
        """Make every completed write durable on all the set's volumes; with ``side``, what
        that side needs, as a served file's fsync does (a master flush never fails because the
        shadow, bitmap or overflow volume is offline)."""
        err = _new_error()
        if side is None:
            with self._use() as h:
                _check(lib.pt_set_flush(h, err), err)
        else:
            with self._use() as h:
                _check(lib.pt_set_sync(h, int(side), err), err)

    # -- copies --

    def copy(self, direction: Direction, *, owner: int = 0) -> None:
        """Start a full copy in ``direction``; returns at once."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_copy(h, int(direction), 1, owner, err), err)

    def update(self, direction: Direction, *, owner: int = 0) -> None:
        """Start an update (only the chunks that differ) in ``direction``; returns at once."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_copy(h, int(direction), 0, owner, err), err)

    def abort(self) -> None:
        """Stop the running copy; the target is left consistent but incomplete."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_abort(h, err), err)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running copy. False on timeout; raises if the copy failed."""
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        err = _new_error()
        with self._use() as h:
            # a close or disable wakes this (pt_set_closing) before it frees the handle
            rc = lib.pt_set_wait(h, ms, err)
        if rc == -lib.PT_E_TIMEOUT:
            return False
        _check(rc, err)
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

    def set_copy_params(self, delay_ms: int, units: int) -> None:
        """Throttle copies: pause ``delay_ms`` after every ``units`` chunks (takes effect now)."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_set_params(h, delay_ms, units, err), err)

    # -- state --

    def status(self) -> SetStatus:
        st = ffi.new("pt_status *")
        with self._use() as h:
            lib.pt_set_status(h, st)
        ov = _uuid(st.overflow_uuid)
        return SetStatus(
            kind=Kind(st.kind), flags=Flag(st.flags), chunk_size=st.chunk_size,
            copy_delay_ms=st.copy_delay_ms, copy_units=st.copy_units,
            master_size=st.master_size, shadow_size=st.shadow_size, chunks=st.chunks,
            diff_chunks=st.diff_chunks, copy_chunks=st.copy_chunks,
            shadow_slots=st.shadow_slots, shadow_slots_used=st.shadow_slots_used,
            overflow_used=st.overflow_used, lost_chunks=st.lost_chunks,
            generation=st.generation, last_modified_ns=st.last_modified_ns,
            lock_owner=st.lock_owner, bitmap_size=st.bitmap_size, uuid=_uuid(st.uuid),
            overflow_uuid=None if ov.int == 0 else ov,
        )

    def bits(self, which: str = "shadow") -> list[int]:
        """Indexes of the chunks whose ``shadow`` or ``copy`` bit is set."""
        if which not in ("shadow", "copy"):
            raise InvalidArgument(lib.PT_E_INVALID, "which must be 'shadow' or 'copy'")
        nchunks = self.status().chunks
        n = (nchunks + 7) // 8
        buf = ffi.new("uint8_t[]", n or 1)
        err = _new_error()
        w = lib.PT_BITS_SHADOW if which == "shadow" else lib.PT_BITS_COPY
        with self._use() as h:
            _check(lib.pt_set_get_bits(h, w, buf, n, err), err)
        raw = bytes(ffi.buffer(buf, n))
        return [i for i in range(nchunks) if raw[i >> 3] >> (i & 7) & 1]

    def lock(self, owner: int) -> None:
        """PID lock: copies by any other owner are refused until unlocked."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_lock(h, owner, err), err)

    def unlock(self, owner: int = 0) -> None:
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_unlock(h, owner, err), err)

    def reset(self, *, owner: int = 0) -> None:
        """Bring offline volumes back and start the resync they need."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_reset(h, owner, err), err)

    def attach_overflow(self, overflow: Overflow) -> None:
        err = _new_error()
        with self._use() as h, overflow._use() as ov:
            _check(lib.pt_set_attach_overflow(h, ov, err), err)
        self._overflow = overflow

    def detach_overflow(self) -> None:
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_detach_overflow(h, err), err)
        self._overflow = None

    def join(self, bitmap: VolumeLike) -> None:
        """OR another host's shadow bitmap for this set's exported shadow into this set's, so
        the next update resyncs the chunks written there."""
        b = _Vol(bitmap)
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_join(h, b.spec, err), err)

    def mark(self, first: int, count: int) -> None:
        """Kernel data path: chunks changed outside the engine join the shadow bitmap
        (durable on return)."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_mark(h, first, count, err), err)

    def copy_source(self, source: VolumeLike | None) -> None:
        """Kernel data path: copies read their source side from ``source`` (a frozen snapshot
        of the live volume); None goes back to the live volume."""
        err = _new_error()
        if source is None:
            with self._use() as h:
                _check(lib.pt_set_copy_source(h, ffi.NULL, err), err)
            return
        v = _Vol(source)
        with self._use() as h:
            _check(lib.pt_set_copy_source(h, v.spec, err), err)

    def set_fallback(self, fd: int) -> bool:
        """Give the set its fallback record: ``fd`` is an open descriptor (the engine keeps a
        duplicate) of a root-only regular file outside the bitmap volume, one per set. When the
        bitmap goes offline, the record durably says so before the next master write is issued.
        True when the record said the bitmap had been lost (a crash while it was offline): every
        chunk then counts as changed, the shadow is offline (flag BITMAP_LOST) and a reset makes
        the full copy. Call it right after enable or open, before the set is served."""
        err = _new_error()
        recovered = ffi.new("int *")
        with self._use() as h:
            _check(lib.pt_set_fallback(h, fd, recovered, err), err)
        return bool(recovered[0])

    def inject_error(self, volume: VolumeRole, on: bool = True, *,
                     error: int = errno.EIO) -> None:
        """Test hook: fail every I/O to one of the set's volumes while on, with errno
        ``error`` (EIO; ENOSPC for a full disk)."""
        err = _new_error()
        with self._use() as h:
            _check(lib.pt_set_inject_error(h, int(volume), int(on), error, err), err)

    # -- lifetime --

    def close(self) -> None:
        """Stop serving the set; a running copy is suspended and resumes on the next open."""
        err = _new_error()
        rc = 0

        def free(h: Any) -> None:
            nonlocal rc
            rc = lib.pt_set_close(h, err)

        if self._life.free(lib.pt_set_closing, free):
            self._engine._forget(self)
            _check(rc, err)

    def disable(self) -> None:
        """End the set for good; refused while a copy runs."""
        err = _new_error()
        # the refusal (copying) and the disabled header come first, with the handle still shared
        with self._use() as h:
            _check(lib.pt_set_retire(h, err), err)
        if self._life.free(lib.pt_set_closing, lambda h: lib.pt_set_disable(h, ffi.NULL)):
            self._engine._forget(self)

    def __enter__(self) -> Set:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Server:
    """A FUSE mount serving sets' masters and shadows as files (the userspace data path).

    ``<mountpoint>/<name>/master`` and ``.../shadow`` are served by engine threads straight
    from the sets' I/O path; files open with direct I/O, so the kernel caches nothing of them.
    """

    def __init__(self, engine: Engine, mountpoint: str | os.PathLike[str], *,
                 max_threads: int = 16) -> None:
        out = ffi.new("pt_server **")
        err = _new_error()
        path = ffi.new("char[]", os.fsencode(mountpoint))
        with engine._use() as h:
            _check(lib.pt_server_start(h, path, max_threads, out, err), err)
        self._h: Any = out[0]
        self.mountpoint = os.fspath(mountpoint)
        self._exports: dict[str, Set] = {}

    def _handle(self) -> Any:
        if self._h is None:
            raise InvalidArgument(lib.PT_E_INVALID, "the server is stopped")
        return self._h

    def export(self, name: str, set_: Set) -> tuple[str, str]:
        """Serve ``set_`` under ``name``; returns the master and shadow file paths."""
        err = _new_error()
        with set_._use() as h:
            _check(lib.pt_server_export(self._handle(), name.encode(), h, err), err)
        self._exports[name] = set_
        base = os.path.join(self.mountpoint, name)
        return os.path.join(base, "master"), os.path.join(base, "shadow")

    def unexport(self, name: str, *, force: bool = False) -> None:
        """Stop serving ``name``; refused while its files are open unless ``force``."""
        err = _new_error()
        _check(lib.pt_server_unexport(self._handle(), name.encode(), int(force), err), err)
        self._exports.pop(name, None)

    def invalidate(self, name: str) -> None:
        """Drop what the kernel caches of ``name``'s files."""
        err = _new_error()
        _check(lib.pt_server_invalidate(self._handle(), name.encode(), err), err)

    @property
    def exports(self) -> dict[str, Set]:
        return dict(self._exports)

    def stop(self) -> None:
        """Unexport everything and unmount."""
        if self._h is None:
            return
        for name in list(self._exports):
            self.unexport(name, force=True)
        err = _new_error()
        h, self._h = self._h, None
        _check(lib.pt_server_stop(h, err), err)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- device-mapper (the kernel data path's ioctls; tables and policy live in ptcopy.dm) ------


@dataclass(frozen=True)
class DmInfo:
    exists: bool
    suspended: bool = False
    read_only: bool = False
    live_table: bool = False
    inactive_table: bool = False
    open_count: int = 0
    target_count: int = 0
    major: int = 0
    minor: int = 0
    event_nr: int = 0


@dataclass(frozen=True)
class DmOp:
    """One step of a device-mapper transaction (see dm_run)."""

    kind: str        # create, load, suspend, resume, remove, zero
    name: str        # device name, or a block device path for zero
    table: str = ""  # load: "<start> <length> <target> <args>" lines
    read_only: bool = False
    length: int = 0  # zero: bytes


_DM_KINDS = {"create": 0, "load": 1, "suspend": 2, "resume": 3, "remove": 4, "zero": 5}


def _dm_text(fn: Any, *args: Any, size: int = 1 << 16) -> str:
    buf = ffi.new("char[]", size)
    err = _new_error()
    _check(fn(*args, buf, size, err), err)
    text: str = ffi.string(buf).decode("utf-8", "replace")
    return text


def dm_version() -> tuple[int, int, int]:
    """The kernel's device-mapper interface version; raises NotFound without device-mapper."""
    out = ffi.new("uint32_t[3]")
    err = _new_error()
    _check(lib.pt_dm_version(out, err), err)
    return int(out[0]), int(out[1]), int(out[2])


def dm_targets() -> dict[str, str]:
    """Loaded device-mapper targets and their versions."""
    text = _dm_text(lib.pt_dm_targets)
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def dm_list() -> list[str]:
    return _dm_text(lib.pt_dm_list, size=1 << 20).splitlines()


def dm_info(name: str) -> DmInfo:
    out = ffi.new("pt_dm_info *")
    err = _new_error()
    _check(lib.pt_dm_query(name.encode(), out, err), err)
    if not out.exists:
        return DmInfo(False)
    return DmInfo(True, bool(out.suspended), bool(out.read_only), bool(out.live_table),
                  bool(out.inactive_table), out.open_count, out.target_count, out.major,
                  out.minor, out.event_nr)


def dm_status(name: str, *, table: bool = False) -> str:
    """Status (or with ``table`` the live table) lines of a device. Never on a suspended era
    device: the kernel blocks until it is resumed."""
    return _dm_text(lib.pt_dm_status, name.encode(), int(table))


def dm_message(name: str, message: str) -> str:
    return _dm_text(lib.pt_dm_message, name.encode(), message.encode())


def dm_run(ops: Sequence[DmOp], *, timeout: float = 10.0) -> float:
    """Run ``ops`` as one transaction in C with memory locked; on failure or timeout everything
    it did is undone and nothing stays suspended. Returns seconds the first suspended device
    was held."""
    arr = ffi.new("pt_dm_op[]", len(ops))
    keep = []
    for i, op in enumerate(ops):
        if op.kind not in _DM_KINDS:
            raise InvalidArgument(lib.PT_E_INVALID, f"unknown device-mapper step {op.kind!r}")
        name = ffi.new("char[]", os.fsencode(op.name))
        table = ffi.new("char[]", op.table.encode())
        keep += [name, table]
        arr[i].kind = _DM_KINDS[op.kind]
        arr[i].name = name
        arr[i].table = table
        arr[i].read_only = int(op.read_only)
        arr[i].length = op.length
    held = ffi.new("uint64_t *")
    err = _new_error()
    _check(lib.pt_dm_run(arr, len(ops), max(1, int(timeout * 1000)), held, err), err)
    return int(held[0]) / 1e9


def dm_recover(prefix: str = "ptcopy-") -> dict[str, str]:
    """After a crash inside a device-mapper transaction (the daemon died with devices
    suspended): for every device named ``prefix...``, a table loaded but never resumed is cleared
    and a suspended device with a live table is resumed, as the transaction's rollback would
    have left them. Returns {name: "cleared" | "resumed" | "cleared+resumed"} for the devices it
    changed. Devices without a live table are left for the caller to remove or rebuild. Call it
    once at start, before any transaction of this process runs: a transaction in flight would
    be undone under its feet."""
    if not prefix or "\0" in prefix:
        raise InvalidArgument(lib.PT_E_INVALID, "a device-mapper name prefix is needed")
    text = _dm_text(lib.pt_dm_recover, prefix.encode(), size=1 << 20)
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def all_sets(engine: Engine) -> Iterable[Set]:
    """The sets currently open in ``engine``."""
    with engine._lock:
        return [o for o in engine._objects if isinstance(o, Set)]
