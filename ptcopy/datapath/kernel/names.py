"""Every device-mapper device name the kernel path makes, built here and nowhere else.

A set's own devices (what users open) carry the set's name, and a dm uuid made of the set's
uid that a rename keeps (how a restart finds them whatever a crash left them named); the
devices under them carry the set's uid (the first 12 hex digits of its uuid: unique, and the
same after a rename or a reboot) or, for the devices one master's sets share, the master's
device number. The prefix is what tells ptcopy's devices apart from everyone else's
(ptcopyd's discovery and volume checks, ``ptcopy/daemon/discovery.py`` and ``volumes.py``,
recognise it too).
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "ptcopy-"


class Part(StrEnum):
    """The devices of one set's stack, named ``ptcopy-<uid>-<part>``."""

    MERA = "mera"          # era over the master (independent sets; chained per master)
    MMETA = "mmeta"        # its metadata: a slice of the bitmap volume
    SERA = "sera"          # era over the shadow's origin
    SMETA = "smeta"
    SORIGIN = "sorigin"    # snapshot-origin over the raw shadow
    COW = "cow"            # a dependent shadow's exception store: shadow + overflow extents
    FREEZE = "freeze"      # the frozen view a running copy reads (transient snapshot)


def master(name: str) -> str:
    """The master device users open: ``ptcopy-<set>-master``."""
    return f"{PREFIX}{name}-master"


def shadow(name: str) -> str:
    """The shadow device users open: ``ptcopy-<set>-shadow``."""
    return f"{PREFIX}{name}-shadow"


UUID_PREFIX = "PTCOPY-"


def dm_uuid(set_uid: str, role: str) -> str:
    """The dm uuid of a set's ``master`` or ``shadow`` device: ``PTCOPY-<uid>-<role>``."""
    if role not in ("master", "shadow"):
        raise ValueError(f"no device role {role!r}")
    return f"{UUID_PREFIX}{set_uid}-{role}"


def uid(uuid_hex: str) -> str:
    """The part of a set's uuid its stack's names carry."""
    return uuid_hex[:12]


def part(set_uid: str, which: Part) -> str:
    """One device of a set's stack: ``ptcopy-<uid>-<part>``."""
    return f"{PREFIX}{set_uid}-{Part(which)}"


def master_key(ref: str) -> str:
    """What names a master's shared devices: its device number ``major:minor`` as ``mMxN``."""
    major, minor = ref.split(":")
    return f"m{int(major)}x{int(minor)}"


def origin(key: str) -> str:
    """The snapshot-origin over a raw master, shared by its sets: ``ptcopy-m<M>x<N>-origin``."""
    return f"{PREFIX}{key}-origin"


def is_master_era(name: str) -> bool:
    """A set's era over its master (or the pass-through one became)."""
    return name.startswith(PREFIX) and name.endswith(f"-{Part.MERA}")


def freeze_file(set_uid: str) -> str:
    """The sparse file in the run directory that stores a frozen view's changes."""
    return f"{set_uid}.freeze"
