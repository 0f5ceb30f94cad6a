"""Renaming a served set's devices, and putting their names right after a crash mid-rename.

The devices users open, ``ptcopy-<set>-master`` and ``-shadow``, are the only ones named after
the set. Each also carries a dm uuid made of the set's uid (``names.dm_uuid``), which no rename
changes. A rename renames them with DM_DEV_RENAME: each keeps its device number, its table and
its openers, so open descriptors and mounts keep working; only ``/dev/mapper``'s name changes.

The daemon records the new name after the path renamed the devices. A crash between the two
(or between the two devices' renames) leaves some devices under the new name while the store
has the old one. So at every serve, ``claim`` finds each of the set's devices by its uuid and
renames it to the name it is served under, which is the store's: the store always wins, and
the rename is either done (recorded) or undone (not recorded).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from ptcopy.datapath.kernel import names, tables
from ptcopy.engine import InUse
from ptcopy.engine.dm import dm_find_uuid, dm_info, dm_rename, dm_set_uuid

log = logging.getLogger(__name__)

ROLES: tuple[tuple[str, Callable[[str], str]], ...] = (("master", names.master),
                                                       ("shadow", names.shadow))


def _move(old: str, new: str) -> None:
    """Rename one device and its node (udev moves its own links where it runs)."""
    dm_rename(old, new)
    tables.ensure_node(new)
    tables.drop_node(old)


def rename(name: str, new: str) -> None:
    """Rename the set's devices from ``name``'s to ``new``'s; on a failure the ones renamed go
    back. A device that is not there (a dependent shadow during a merge) is skipped: it is
    made under the set's new name."""
    for _, name_of in ROLES:
        if tables.exists(name_of(new)):
            raise InUse(f"device-mapper device {name_of(new)} exists already; set {name} "
                          f"cannot take the name {new}")
    done: list[tuple[str, str]] = []
    try:
        for _, name_of in ROLES:
            old_dev, new_dev = name_of(name), name_of(new)
            if tables.exists(old_dev):
                _move(old_dev, new_dev)
                done.append((old_dev, new_dev))
    except BaseException:
        for old_dev, new_dev in reversed(done):
            with contextlib.suppress(Exception):
                _move(new_dev, old_dev)
        raise


def claim(set_uid: str, name: str) -> list[str]:
    """Before a set is served as ``name``: each of its devices found by its dm uuid under
    another name (a crash mid-rename) is renamed to ``name``'s; one found under ``name``
    without a uuid (made before devices had one) gets it. Returns what it changed."""
    changed = []
    for role, name_of in ROLES:
        want, uuid = name_of(name), names.dm_uuid(set_uid, role)
        have = dm_find_uuid(uuid)
        if have is None:
            info = dm_info(want)
            if info.exists and not info.uuid:
                dm_set_uuid(want, uuid)
                changed.append(f"{want}: given the uuid {uuid}")
            continue
        if have == want:
            continue
        if tables.exists(want):
            raise InUse(f"set {name}'s {role} device {have} (uuid {uuid}) cannot take back "
                          f"its name: a device-mapper device {want} exists already")
        _move(have, want)
        changed.append(f"{have} renamed back to {want}")
        log.warning("set %s: its %s device was left named %s (a rename a crash interrupted "
                    "before it was recorded); renamed back to %s", name, role, have, want)
    return changed
