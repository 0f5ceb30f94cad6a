"""An overflow volume shared by compact dependent sets: :class:`Overflow`, the object that owns
its engine handle (status, close, delete)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ptcopy.engine._ffi import ffi, lib, new_error, to_uuid
from ptcopy.engine.errors import Closed, check
from ptcopy.engine.tracked import Tracked
from ptcopy.engine.types import OverflowStatus

if TYPE_CHECKING:
    from ptcopy.engine.owner import Engine

__all__ = ["Overflow", "use_optional"]


class Overflow(Tracked):
    """An overflow volume shared by compact dependent sets."""

    def __init__(self, engine: Engine, handle: Any) -> None:
        super().__init__(engine, handle, "overflow volume")

    def status(self) -> OverflowStatus:
        st = ffi.new("pt_ov_status *")
        sets = []
        buf = ffi.new("uint8_t[16]")
        with self._use() as h:
            lib.pt_overflow_status(h, st)
            for i in range(st.nsets):
                if lib.pt_overflow_set_uuid(h, i, buf) == 0:
                    sets.append(to_uuid(buf))
        return OverflowStatus(
            chunk_size=st.chunk_size, counters_valid=bool(st.counters_valid),
            offline=bool(st.offline), chunks_total=st.chunks_total,
            chunks_used=st.chunks_used, uuid=to_uuid(st.uuid), sets=tuple(sets),
        )

    def _end(self, wipe: bool) -> None:
        err = new_error()
        # the refusals (in use, sets attached) come first, with the handle still shared
        with self._use() as h:
            check(lib.pt_overflow_retire(h, int(wipe), err), err)
        rc = 0

        def free(h: Any) -> None:
            nonlocal rc
            rc = (lib.pt_overflow_delete if wipe else lib.pt_overflow_close)(h, err)

        if self._life.free(None, free):
            self._engine._forget(self)
            check(rc, err)

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
def use_optional(ov: Overflow | None) -> Iterator[Any]:
    """The overflow's handle for one call, or NULL without one."""
    if ov is None:
        yield ffi.NULL
        return
    with ov._use() as h:
        yield h
