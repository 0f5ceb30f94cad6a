"""Device-mapper vocabulary for the kernel data path: probing, table lines, device nodes.

The ioctls themselves are C (``ptcopy.engine.dm_*``); this module only builds the text the
kernel takes and reads the text it gives back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass

from ptcopy import engine
from ptcopy.engine import DmOp, InvalidArgument, NotFound
from ptcopy.errnames import ErrorName

SECTOR = 512
TIMEOUT = 10.0          # seconds a transaction may hold devices suspended
MAPPER = "/dev/mapper"
# Targets the kernel path cannot work without, and the modules that provide them.
REQUIRED = {"linear": "dm-mod", "snapshot": "dm-snapshot", "snapshot-origin": "dm-snapshot",
            "snapshot-merge": "dm-snapshot", "era": "dm-era"}


class KernelPathUnavailable(InvalidArgument, name=ErrorName.DATA_PATH):
    """Device-mapper or one of the targets the kernel path needs is missing."""


def _modprobe(*modules: str) -> None:
    """Load modules where this system allows it; a failure is reported by the probe after."""
    if shutil.which("modprobe"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["modprobe", "-q", "-a", *modules], capture_output=True, timeout=30,
                           check=False)


def probe(load_modules: bool = True) -> str | None:
    """None when the kernel data path can run here, else why not (for logs and errors)."""
    if not os.path.exists(f"{MAPPER}/control") and load_modules:
        _modprobe("dm-mod")
    try:
        engine.dm_version()
        targets = engine.dm_targets()
    except engine.PtcopyError as e:
        return str(e)
    missing = [t for t in REQUIRED if t not in targets]
    if missing and load_modules:
        _modprobe(*sorted({REQUIRED[t] for t in missing}))
        targets = engine.dm_targets()
        missing = [t for t in REQUIRED if t not in targets]
    if missing:
        mods = " ".join(sorted({REQUIRED[t] for t in missing}))
        return f"device-mapper target(s) {', '.join(missing)} missing (modprobe {mods})"
    if not shutil.which("era_invalidate"):
        return "era_invalidate is missing (install Debian's thin-provisioning-tools)"
    return None


def require() -> None:
    """Raise KernelPathUnavailable naming what is missing."""
    why = probe()
    if why:
        raise KernelPathUnavailable(f"the kernel data path cannot run here: {why}")


# ---- tables ---------------------------------------------------------------------------------


def sectors(nbytes: int) -> int:
    if nbytes % SECTOR:
        raise InvalidArgument(f"{nbytes} bytes is not a whole number of sectors")
    return nbytes // SECTOR


def linear(device: str, length: int, offset: int = 0) -> str:
    """``length`` bytes of ``device`` starting at byte ``offset``."""
    return f"0 {sectors(length)} linear {device} {sectors(offset)}"


def concat(pieces: list[tuple[str, int, int]]) -> str:
    """Pieces (device, offset, length) end to end, like an LVM volume over several extents."""
    lines, start = [], 0
    for dev, off, length in pieces:
        lines.append(f"{start} {sectors(length)} linear {dev} {sectors(off)}")
        start += sectors(length)
    return "\n".join(lines)


def origin(device: str, length: int) -> str:
    return f"0 {sectors(length)} snapshot-origin {device}"


def snapshot(origin_dev: str, store: str, length: int, chunk: int, *,
             persistent: bool = True) -> str:
    """A dm-snapshot of ``origin_dev`` whose exceptions go to ``store``. Persistent stores
    survive a reboot; a transient one ("N") is for frozen views that live only during a copy."""
    mode = "P" if persistent else "N"
    return f"0 {sectors(length)} snapshot {origin_dev} {store} {mode} {sectors(chunk)}"


def merge(origin_dev: str, store: str, length: int, chunk: int) -> str:
    return f"0 {sectors(length)} snapshot-merge {origin_dev} {store} P {sectors(chunk)}"


def era(meta: str, device: str, length: int, chunk: int) -> str:
    return f"0 {sectors(length)} era {meta} {device} {sectors(chunk)}"


# ---- status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotUsage:
    """What a snapshot (or a merging origin) reports: sectors of its store in use."""

    valid: bool
    overflow: bool
    allocated: int = 0   # sectors
    total: int = 0       # sectors
    metadata: int = 0    # sectors

    @property
    def fraction(self) -> float:
        return self.allocated / self.total if self.total else 0.0


def snapshot_usage(name: str) -> SnapshotUsage:
    """Parse ``<alloc>/<total> <metadata>``, ``Invalid`` or ``Overflow`` (see dm-snapshot)."""
    fields = engine.dm_status(name).split()
    words = fields[3:]
    if not words or words[0] == "Invalid":
        return SnapshotUsage(False, False)
    if words[0] == "Overflow":
        return SnapshotUsage(True, True)
    alloc, total = (int(x) for x in words[0].split("/"))
    return SnapshotUsage(True, False, alloc, total, int(words[1]) if len(words) > 1 else 0)


def era_current(name: str) -> int:
    """The era an era device is in (never ask a suspended one: the kernel blocks)."""
    fields = engine.dm_status(name).split()
    # "<start> <len> era <md block size> <used>/<total> <current era> <held root|->"
    return int(fields[5])


def era_held(name: str) -> bool:
    """The era device holds a metadata snapshot (the last status field is its root)."""
    return engine.dm_status(name).split()[-1] != "-"


# ---- device nodes ---------------------------------------------------------------------------


def node(name: str) -> str:
    return f"{MAPPER}/{name}"


def _udev_running() -> bool:
    return os.path.exists("/run/udev/control")


NODE_MODE = 0o600   # nodes ptcopy makes: root's alone (udev's own rules apply where it runs)


def ensure_node(name: str, *, wait: float = 2.0) -> str:
    """``/dev/mapper/<name>`` for a live device. udev makes it where udev runs (with its rules'
    owner and mode: root:disk 0660 by default); elsewhere (a container, an initramfs) ptcopy
    makes the node itself, as libdevmapper does, root:root 0600."""
    info = engine.dm_info(name)
    if not info.exists:
        raise NotFound(f"device-mapper device {name} does not exist")
    path = node(name)
    want = os.makedev(info.major, info.minor)
    udev = _udev_running()
    deadline = time.monotonic() + (wait if udev else 0)
    while True:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(path)
            if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
                if not udev and not os.path.islink(path) and \
                        (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, 0, NODE_MODE):
                    # a node left by someone else: it must not open the device to others
                    os.chown(path, 0, 0, follow_symlinks=False)
                    os.chmod(path, NODE_MODE)
                return path
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        if not os.path.islink(path):
            os.unlink(path)   # a stale node of an earlier device with this name
    os.makedirs(MAPPER, exist_ok=True)
    os.mknod(path, NODE_MODE | stat.S_IFBLK, want)
    os.chown(path, 0, 0)   # the creator's group otherwise
    os.chmod(path, NODE_MODE)   # whatever the umask
    return path


def drop_node(name: str) -> None:
    """Remove a node ptcopy made; udev's symlinks are udev's to remove."""
    path = node(name)
    with contextlib.suppress(FileNotFoundError):
        if not os.path.islink(path) and not engine.dm_info(name).exists:
            os.unlink(path)


def exists(name: str) -> bool:
    return engine.dm_info(name).exists


def ref(name: str) -> str:
    """A dm device as tables name it: major:minor (no node needed)."""
    info = engine.dm_info(name)
    if not info.exists:
        raise NotFound(f"device-mapper device {name} does not exist")
    return f"{info.major}:{info.minor}"


def create(name: str, table: str, *, read_only: bool = False, uuid: str = "") -> str:
    """Create and activate one device (with that dm uuid, if any); returns its node."""
    engine.dm_run([DmOp("create", name, uuid=uuid), DmOp("load", name, table, read_only),
                   DmOp("resume", name)])
    return ensure_node(name)


def reload(name: str, table: str, *, read_only: bool = False) -> None:
    """Swap a device's table (suspend, load, resume as one transaction)."""
    engine.dm_run([DmOp("suspend", name), DmOp("load", name, table, read_only),
                   DmOp("resume", name)])


def remove(name: str) -> None:
    if engine.dm_info(name).exists:
        engine.dm_run([DmOp("remove", name)])
    drop_node(name)
