"""Object paths: built in one place, and read back (with a check) from what callers send."""

from __future__ import annotations

from ptcopy.daemon.dbus.bus import ROOT
from ptcopy.daemon.errors import invalid

NONE = "/"   # the path a method or property gives for "no object"


def set_path(set_id: str) -> str:
    """The IISet object of a set."""
    return f"{ROOT}/sets/{set_id}"


def group_path(group_id: str) -> str:
    """The IIGroup object of a group."""
    return f"{ROOT}/groups/{group_id}"


def overflow_path(ov_id: str) -> str:
    """The IIOverflow object of an overflow volume."""
    return f"{ROOT}/overflow/{ov_id}"


def volume_path(vid: str) -> str:
    """The Volume object of a volume (vid: discovery.volume_id)."""
    return f"{ROOT}/volumes/{vid}"


def job_path(number: int) -> str:
    """The Job object of job ``number``."""
    return f"{ROOT}/jobs/{number}"


def id_of(path: str, kind: str) -> str:
    """The id in a caller's object path of this kind ('sets', 'groups', 'overflow')."""
    prefix = f"{ROOT}/{kind}/"
    if not path.startswith(prefix) or "/" in path[len(prefix):] or len(path) == len(prefix):
        raise invalid(f"{path!r} is not a {kind.rstrip('s')} object path")
    return path[len(prefix):]
