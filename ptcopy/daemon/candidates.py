"""Manager.Candidates: the volumes that could be the shadow or bitmap of a new set.

Anyone may ask, so a caller other than root learns nothing about a path it could not stat
itself: such a path gets the answer a missing one gets.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ptcopy import engine as eng
from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.volumes import under
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)

VISIBLE_TIMEOUT = 10.0   # seconds a "may the caller see this path" check may take
Key = tuple[int, int, int]   # (1, rdev, 0) for a block device, (2, dev, ino) for a file


@dataclass(frozen=True)
class CandidateView:
    """What Candidates needs of a Volume object, copied on the loop for a worker thread."""
    vid: str
    size: int
    available: bool
    devnum: int


def stat_key(path: str) -> Key | None:
    """What a volume path is: (1, rdev, 0) for a block device, (2, dev, ino) for a file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (1, st.st_rdev, 0) if stat.S_ISBLK(st.st_mode) else (2, st.st_dev, st.st_ino)


def path_visible_to(path: str, uid: int) -> bool:
    """Whether the user ``uid`` (with its primary and supplementary groups) can stat ``path``
    itself: checked by a child running as that user, so every directory's permissions, ACLs
    and symbolic links count exactly as they would for the user."""
    try:
        pw = pwd.getpwuid(uid)
        gid, groups = pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid)
    except (KeyError, OSError):
        gid, groups = 65534, []
    exe = shutil.which("test") or "/usr/bin/test"
    try:
        r = subprocess.run([exe, "-e", path], user=uid, group=gid, extra_groups=groups,
                           capture_output=True, timeout=VISIBLE_TIMEOUT, check=False,
                           env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("cannot check whether uid %d sees %s: %s", uid, path, e)
        return False
    return r.returncode == 0


def _size_of(p: str, what: str, uid: int, file_dirs: Sequence[str]) -> tuple[int, Key]:
    """A block device's or an allowed file's size (no other paths) and identity."""
    if uid != 0 and not path_visible_to(p, uid):
        raise ServiceError(ErrorName.NOT_FOUND,
                           f"{what} {p}: no such volume that uid {uid} can see")
    try:
        st = os.stat(p)
    except OSError as e:
        raise ServiceError(ErrorName.NOT_FOUND, f"{what} {p}: {e.strerror}") from e
    key: Key = (1, st.st_rdev, 0) if stat.S_ISBLK(st.st_mode) else (2, st.st_dev, st.st_ino)
    if stat.S_ISBLK(st.st_mode):
        sys_size = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/size"
        try:
            with open(sys_size, encoding="ascii") as f:
                return int(f.read()) * 512, key
        except (OSError, ValueError) as e:
            raise ServiceError(ErrorName.NOT_FOUND, f"{what} {p}: no size") from e
    if stat.S_ISREG(st.st_mode) and under(os.path.realpath(p), file_dirs):
        return st.st_size, key
    raise ServiceError(ErrorName.INVALID_ARGUMENT,
                       f"{what} {p} is neither a block device nor a file in the directories "
                       "for file volumes")


def candidates(views: Sequence[CandidateView], master: str, role: str, kind: str,
               chunk_size: int, shadow: str, uid: int, file_dirs: Sequence[str]) -> list[str]:
    """In a worker thread: the ids of the volumes that could be the shadow or bitmap of a set
    with this master, smallest first."""
    msize, mkey = _size_of(master, "master", uid, file_dirs)
    if role == "shadow":
        need = msize if kind == "independent" else 1
    else:
        ssize = _size_of(shadow, "shadow", uid, file_dirs)[0] if shadow else msize
        k = eng.Kind.INDEPENDENT if kind == "independent" else eng.Kind.DEPENDENT
        try:
            need = eng.bitmap_size(msize, ssize, chunk_size, k)
        except eng.PtcopyError as e:
            raise ServiceError(ErrorName.INVALID_ARGUMENT, str(e)) from e
    fits = [(v.size, v.vid) for v in views
            if v.available and v.size >= need and (1, v.devnum, 0) != mkey]
    return [vid for _s, vid in sorted(fits)]
