"""What ptcopyd manages, without D-Bus: sets, groups and overflow volumes, their state store,
the engine and the data path. One module per domain (``core``: state, lock, events, look-ups;
``volumes``: identity checks, finding again, bound descriptors, serving; ``sets``; ``groups``;
``overflows``; ``imports``: shadows that move between hosts); ``Service`` is all of them.
"""

from __future__ import annotations

from ptcopy.daemon.service.core import (
    DIRECTIONS,
    KINDS,
    SET_ROLES,
    Listener,
    ManagedOverflow,
    ManagedSet,
)
from ptcopy.daemon.service.groups import GroupOps
from ptcopy.daemon.service.imports import ImportOps
from ptcopy.daemon.service.overflows import OverflowOps
from ptcopy.daemon.service.volumes import open_check

__all__ = ["DIRECTIONS", "KINDS", "SET_ROLES", "Listener", "ManagedOverflow", "ManagedSet",
           "Service", "open_check"]


class Service(ImportOps, OverflowOps, GroupOps):
    """The daemon's domain: every operation the D-Bus objects offer, synchronous, one mutation
    at a time under ``lock``; the data path used only through its protocol."""
