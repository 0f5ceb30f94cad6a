"""A volume as the engine's C calls take it: a ``pt_volspec`` (a path or label, and an open
descriptor or -1) built from a :data:`~ptcopy.engine.types.VolumeLike`, checked first."""

from __future__ import annotations

import os

from ptcopy.engine._ffi import ffi
from ptcopy.engine.errors import InvalidArgument
from ptcopy.engine.types import VolumeLike


class VolSpec:
    """Keeps a pt_volspec and the bytes it points at alive for one call."""

    def __init__(self, vol: VolumeLike | None) -> None:
        self.spec = ffi.new("pt_volspec *")
        if vol is None:
            self._path = ffi.new("char[]", b"")
            self.spec.fd = -1
        elif isinstance(vol, tuple):
            label, fd = vol
            if fd < 0 or not label:
                raise InvalidArgument(f"volume {vol!r} is not valid")
            self._path = ffi.new("char[]", os.fsencode(label))
            self.spec.fd = fd
        elif isinstance(vol, int):
            if vol < 0:
                raise InvalidArgument(f"descriptor {vol} is not valid")
            self._path = ffi.new("char[]", f"/proc/self/fd/{vol}".encode())
            self.spec.fd = vol
        else:
            raw = os.fsencode(vol)
            if not raw or b"\0" in raw:
                raise InvalidArgument(f"volume path {vol!r} is not valid")
            self._path = ffi.new("char[]", raw)
            self.spec.fd = -1
        self.spec.path = self._path
