"""The :class:`Engine`: the owner of every set and overflow volume opened through it. It enables,
opens and imports sets, initialises and opens overflow volumes, starts group copies and holds,
and closes everything with itself.

Each :class:`~ptcopy.engine.sets.Set` and :class:`~ptcopy.engine.overflow.Overflow` holds its
handle through a :class:`~ptcopy.engine.lifetime.Lifetime`, so a call from one thread never runs
into a close, disable or delete from another.
"""

from __future__ import annotations

import contextlib
import threading
import uuid as uuid_mod
from collections.abc import Iterable, Sequence
from typing import Any

from ptcopy.engine._ffi import ffi, lib, new_error
from ptcopy.engine.errors import InvalidArgument, PtcopyError, check
from ptcopy.engine.hold import Hold, group_hold
from ptcopy.engine.lifetime import Lifetime
from ptcopy.engine.overflow import Overflow, use_optional
from ptcopy.engine.sets import Set
from ptcopy.engine.tracked import Tracked
from ptcopy.engine.types import Direction, Kind, VolumeLike
from ptcopy.engine.volspec import VolSpec

__all__ = ["Engine", "all_sets"]


class Engine:
    """Owns every set and overflow volume opened through it."""

    def __init__(self) -> None:
        handle = lib.pt_engine_new()
        if handle == ffi.NULL:
            raise MemoryError("cannot create a ptcopy engine")
        self._life = Lifetime(handle, "engine")
        self._lock = threading.Lock()
        self._objects: list[Tracked] = []

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

    def _track(self, obj: Tracked) -> None:
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
        m, s, b = VolSpec(master), VolSpec(shadow), VolSpec(bitmap)
        out = ffi.new("pt_set **")
        err = new_error()
        with self._use() as h, use_optional(overflow) as ov:
            check(lib.pt_set_enable(h, m.spec, s.spec, b.spec, cfg, ov, out, err), err)
            return Set(self, out[0], overflow)

    def open(self, master: VolumeLike, shadow: VolumeLike, bitmap: VolumeLike, *,
             overflow: Overflow | None = None) -> Set:
        """Open an existing set from its bitmap volume; an interrupted copy resumes."""
        m, s, b = VolSpec(master), VolSpec(shadow), VolSpec(bitmap)
        out = ffi.new("pt_set **")
        err = new_error()
        with self._use() as h, use_optional(overflow) as ov:
            check(lib.pt_set_open(h, m.spec, s.spec, b.spec, ov, out, err), err)
            return Set(self, out[0], overflow)

    def import_shadow(self, volume: VolumeLike, bitmap: VolumeLike, *,
                      chunk_size: int = 0) -> Set:
        """Import a shadow another host exported: ``volume`` is served through ``Side.SHADOW``
        and every chunk written to it is marked in a new bitmap on ``bitmap`` (durable before
        the write), for the exporting host's ``join``. Kind ``IMPORTED``: no copies here."""
        v, b = VolSpec(volume), VolSpec(bitmap)
        out = ffi.new("pt_set **")
        err = new_error()
        with self._use() as h:
            check(lib.pt_import_create(h, v.spec, b.spec, chunk_size, out, err), err)
            return Set(self, out[0], None)

    def open_imported(self, volume: VolumeLike, bitmap: VolumeLike) -> Set:
        """Open an imported shadow again from its bitmap (after a stop or a crash)."""
        v, b = VolSpec(volume), VolSpec(bitmap)
        out = ffi.new("pt_set **")
        err = new_error()
        with self._use() as h:
            check(lib.pt_import_open(h, v.spec, b.spec, out, err), err)
            return Set(self, out[0], None)

    def init_overflow(self, volume: VolumeLike, chunk_size: int = 0) -> Overflow:
        """Initialise a volume as an empty overflow volume."""
        v = VolSpec(volume)
        out = ffi.new("pt_overflow **")
        err = new_error()
        with self._use() as h:
            check(lib.pt_overflow_init(h, v.spec, chunk_size, out, err), err)
            return Overflow(self, out[0])

    def open_overflow(self, volume: VolumeLike) -> Overflow:
        """Open an initialised overflow volume."""
        v = VolSpec(volume)
        out = ffi.new("pt_overflow **")
        err = new_error()
        with self._use() as h:
            check(lib.pt_overflow_open(h, v.spec, out, err), err)
            return Overflow(self, out[0])

    def group_copy(self, sets: Sequence[Set], direction: Direction, *, full: bool = False,
                   owner: int = 0) -> float:
        """Copy or update several sets at one point in time, all or nothing.

        Returns how long writes were frozen, in seconds.
        """
        if not sets:
            raise InvalidArgument("a group copy needs at least one set")
        frozen = ffi.new("uint64_t *")
        err = new_error()
        with contextlib.ExitStack() as stack:
            arr = ffi.new("pt_set *[]", [stack.enter_context(s._use()) for s in sets])
            rc = lib.pt_group_copy(arr, len(sets), int(direction), int(full), owner, frozen, err)
        check(rc, err)
        return int(frozen[0]) / 1e9

    def group_hold(self, sets: Sequence[Set], direction: Direction, *, full: bool = False,
                   owner: int = 0, timeout: float = 10.0) -> Hold:
        """:func:`ptcopy.engine.hold.group_hold`: the point in time of ``group_copy`` in two
        calls, writes frozen in between (at most ``timeout`` seconds)."""
        with self._use():
            return group_hold(sets, direction, full=full, owner=owner, timeout=timeout)


def all_sets(engine: Engine) -> Iterable[Set]:
    """The sets currently open in ``engine``."""
    with engine._lock:
        return [o for o in engine._objects if isinstance(o, Set)]
