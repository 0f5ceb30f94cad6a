"""The seam to the compiled engine: the only importer of ``ptcopy._engine``.

Everything else in :mod:`ptcopy.engine` reaches C through ``ffi`` and ``lib`` from here, so a
change of how the extension is built or loaded touches one line. Constants come from ``lib``,
that is from the C header the cdef is read from, never copied by hand.
"""

from __future__ import annotations

import uuid
from typing import Any

from ptcopy._engine import ffi, lib

__all__ = ["ffi", "lib", "new_error", "to_uuid"]


def new_error() -> Any:
    """A fresh ``pt_error`` for one engine call to fill in."""
    return ffi.new("pt_error *")


def to_uuid(raw: Any) -> uuid.UUID:
    """The UUID in a C ``uint8_t[16]``."""
    return uuid.UUID(bytes=bytes(ffi.buffer(raw, 16)))
