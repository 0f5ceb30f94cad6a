"""What a volume is, independent of the name it has today (issue 11, review findings 3 and 15).

Device names are handed out by the kernel in the order devices appear: after a reboot, a
re-plug or a loop device re-attached, ``/dev/sdb`` or ``/dev/loop3`` may be another disk. So
ptcopyd records, for every volume of a set and every overflow volume, an ``Identity``: the
stable identifiers of the device or file, read from the open descriptor (its dev_t or inode),
never from the path. Every open compares the descriptor's identity with the record before the
engine touches the volume, and a block device that moved to another name is found again by its
identity (``find_block``).

Identifiers are *strong* (they name one device: WWN, serial, partition UUID, device-mapper or
md UUID, a loop device's backing file, a file's inode on its file system) or *weak* (size,
physical path, partition number and start: many devices share them). A ptcopy header (the set
UUID of a bitmap volume, the UUID of an overflow volume) is checked on top of the device
identity, never instead of it: a copy of a bitmap volume on another disk carries the same UUID
and must not be taken for the original.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import struct
import uuid as uuid_mod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pyudev

from ptcopy.daemon.discovery import read_attr

LOOP_GET_STATUS64 = 0x4C05            # <linux/loop.h>
LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")   # struct loop_info64, 232 bytes
LOOP_MAJOR = 7
HEADER_MAGIC = {"bitmap": b"PTCOPYBM", "overflow": b"PTCOPYOV"}   # docs/bitmap-format.md

UDEV_DB = "/run/udev/data"     # udev's database: one entry per device, b<major>:<minor>
FS_UUID_LINE = "E:ID_FS_UUID="  # a property line of an entry

# udev property -> key. Strong unless the disk is removable (then the serial and WWN are the
# reader's, not the medium's: a card swapped in the same reader keeps them).
UDEV_KEYS = {
    "ID_WWN_WITH_EXTENSION": "wwn", "ID_SERIAL": "serial", "ID_SERIAL_SHORT": "serial_short",
    "ID_PART_ENTRY_UUID": "part_uuid", "ID_PART_TABLE_UUID": "part_table_uuid",
    "DM_UUID": "dm_uuid", "MD_UUID": "md_uuid",
}
READER_KEYS = ("wwn", "serial", "serial_short", "sysfs_wwid", "sysfs_serial")

_context: pyudev.Context | None = None


def _udev() -> pyudev.Context:
    global _context
    if _context is None:
        _context = pyudev.Context()
    return _context


@dataclass(frozen=True)
class Identity:
    kind: str                                         # "block" or "file"
    strong: dict[str, str] = field(default_factory=dict)
    weak: dict[str, str] = field(default_factory=dict)
    header: str = ""                                  # UUID (hex) in a ptcopy header, if any

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "strong": self.strong, "weak": self.weak,
                           "header": self.header}, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Identity | None:
        """The recorded identity, or None when nothing was recorded (a state store from before
        identities were kept) or the record is unreadable."""
        if not text:
            return None
        try:
            d = json.loads(text)
            return Identity(str(d["kind"]), {str(k): str(v) for k, v in d["strong"].items()},
                            {str(k): str(v) for k, v in d["weak"].items()},
                            str(d.get("header", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def describe(self, keys: list[str] | None = None) -> str:
        """The identifiers as people read them (``keys``: only those)."""
        items = {**self.weak, **self.strong}
        shown = [f"{k}={items[k]}" for k in (keys if keys is not None else sorted(items))
                 if k in items]
        what = "a block device" if self.kind == "block" else "a file"
        return f"{what} ({', '.join(shown) or 'no identifier'})"

    def without_header(self) -> Identity:
        return Identity(self.kind, self.strong, self.weak)


# ---- reading identities --------------------------------------------------------------------

def _loop_file(fd: int) -> str:
    """A loop device's backing file as device:inode+offset (LOOP_GET_STATUS64 on the
    descriptor: the file the kernel uses, whatever its name is now); '' when unbound."""
    buf = bytearray(LOOP_INFO64.size)
    try:
        fcntl.ioctl(fd, LOOP_GET_STATUS64, buf, True)
    except OSError:
        return ""
    dev, ino, _rdev, offset, limit, *_ = LOOP_INFO64.unpack(bytes(buf))
    return f"{dev:x}:{ino}+{offset}" + (f"/{limit}" if limit else "")


def loop_backing(rdev: int) -> str:
    """The backing file a loop device names in sysfs ('' for anything else)."""
    return read_attr(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/loop/backing_file")


def _udev_props(rdev: int) -> Mapping[str, str]:
    try:
        dev = pyudev.Devices.from_device_number(_udev(), "block", rdev)
        return {str(k): str(v) for k, v in dev.properties.items()}
    except (pyudev.DeviceNotFoundError, OSError, ValueError):
        return {}


def block_identity(rdev: int, fd: int | None = None) -> Identity:
    """The identity of the block device ``rdev``; ``fd`` (open on it) for a loop device's
    backing file. Without a descriptor, a loop device is opened read-only to ask the kernel."""
    sys_dir = os.path.realpath(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    strong: dict[str, str] = {}
    weak: dict[str, str] = {}
    props = _udev_props(rdev)
    for prop, key in UDEV_KEYS.items():
        if props.get(prop):
            strong[key] = props[prop]
    if "wwn" not in strong and props.get("ID_WWN"):
        strong["wwn"] = props["ID_WWN"]
    is_part = os.path.exists(os.path.join(sys_dir, "partition"))
    disk_dir = os.path.dirname(sys_dir) if is_part else sys_dir
    # sysfs carries some identifiers without udev (at early boot, in containers)
    for f, key in (("device/wwid", "sysfs_wwid"), ("device/serial", "sysfs_serial")):
        v = read_attr(os.path.join(disk_dir, f))
        if v:
            strong[key] = v
    dm_uuid = read_attr(os.path.join(sys_dir, "dm/uuid"))
    if dm_uuid:
        strong["dm_uuid"] = dm_uuid
    if is_part:
        weak["part_start"] = (f"{read_attr(os.path.join(sys_dir, 'partition'))}@"
                              f"{read_attr(os.path.join(sys_dir, 'start'))}")
    if os.major(rdev) == LOOP_MAJOR and not is_part:
        lf = ""
        if fd is not None:
            lf = _loop_file(fd)
        else:
            # the kernel's own node (devtmpfs), not udev's /dev/block links, which lag
            # behind a device that just appeared; the number is checked below
            with contextlib.suppress(OSError):
                own = os.open(f"/dev/{os.path.basename(sys_dir)}",
                              os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
                try:
                    if os.fstat(own).st_rdev == rdev:
                        lf = _loop_file(own)
                finally:
                    os.close(own)
        if lf:
            strong["loop_file"] = lf
    if read_attr(os.path.join(disk_dir, "removable")) == "1":
        for k in READER_KEYS:
            if k in strong:
                weak[k] = strong.pop(k)
    if props.get("ID_PATH"):
        weak["id_path"] = props["ID_PATH"]
    weak["size"] = str(int(read_attr(os.path.join(sys_dir, "size")) or 0) * 512)
    return Identity("block", strong, weak)


def _fs_uuid(st_dev: int) -> str:
    """The UUID udev found on the file system holding a file: the ID_FS_UUID line of its
    device's entry in udev's database, read directly. pyudev's device object walks sysfs and
    reads the entry again per property (15 opens of a missing entry where udevd does not
    run): that was most of opening a file volume, three times per CreateSet."""
    if os.major(st_dev) == 0:   # tmpfs, overlay, nfs: no block device to ask
        return ""
    try:
        with open(os.path.join(UDEV_DB, f"b{os.major(st_dev)}:{os.minor(st_dev)}"),
                  encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(FS_UUID_LINE):
                    return line[len(FS_UUID_LINE):].rstrip("\n")
    except OSError:   # no entry: udevd does not run, or it has not seen the device
        pass
    return ""


def file_identity(st: os.stat_result) -> Identity:
    strong = {"inode": str(st.st_ino)}
    fs = _fs_uuid(st.st_dev)
    if fs:
        strong["fs_uuid"] = fs
    strong["st_dev"] = f"{st.st_dev:x}"
    return Identity("file", strong, {"size": str(st.st_size)})


def read_header(fd: int, role: str) -> str:
    """The UUID in the ptcopy header of a bitmap or overflow volume (hex); '' when the volume
    holds no such header. Read only: nothing is written."""
    magic = HEADER_MAGIC.get(role)
    if magic is None:
        return ""
    try:
        head = os.pread(fd, 32, 0)
    except OSError:
        return ""
    if len(head) < 32 or head[:8] != magic:
        return ""
    return uuid_mod.UUID(bytes=head[16:32]).hex


def of_fd(fd: int, role: str) -> Identity:
    """The identity of what ``fd`` is open on (the descriptor, not a path)."""
    st = os.fstat(fd)
    base = block_identity(st.st_rdev, fd) if stat.S_ISBLK(st.st_mode) else file_identity(st)
    header = read_header(fd, role)
    return Identity(base.kind, base.strong, base.weak, header) if header else base


def at_path(path: str, role: str) -> Identity | None:
    """What is at ``path`` now, opened read-only and not exclusively (a probe: the open that
    binds the volume checks its own descriptor again); None when nothing is there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode)):
            return None
        return of_fd(fd, role)
    finally:
        os.close(fd)


def of_devnum(rdev: int, role: str) -> Identity | None:
    """The identity of the block device with this number now (None: there is none)."""
    sys_dir = f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    if not os.path.exists(sys_dir):
        return None
    node = f"/dev/{os.path.basename(os.path.realpath(sys_dir))}"
    try:
        fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return block_identity(rdev)
    try:
        if os.fstat(fd).st_rdev != rdev:
            return block_identity(rdev)
        return of_fd(fd, role)
    finally:
        os.close(fd)


# ---- comparing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str = ""         # on a mismatch: expected ... found ...
    weak: bool = False    # matched by weak identifiers only (no stable identifier recorded)


def compare(recorded: Identity, found: Identity, header: str = "") -> Verdict:
    """Whether ``found`` is the volume ``recorded`` describes. ``header``: the UUID the volume's
    ptcopy header must carry (the state store's), checked whatever the device identity says.

    The rule: a strong identifier that both have must be equal (any difference refuses); at
    least one strong identifier recorded must be there to compare, else the volume is refused
    (it cannot be told apart). With no strong identifier recorded at all, the weak ones that
    both have must be equal (the size always is there) and the verdict says it was weak."""
    if header and found.header != header:
        got = f"set UUID {found.header}" if found.header else "no ptcopy header"
        return Verdict(False, f"expected a header with UUID {header}, found {got}")
    if recorded.kind != found.kind:
        return Verdict(False, f"expected {recorded.describe()}, found {found.describe()}")
    rs, fs = recorded.strong, found.strong
    if recorded.kind == "file":
        keys = ["inode", "fs_uuid"] if rs.get("fs_uuid") and fs.get("fs_uuid") \
            else ["inode", "st_dev"]
        differ = [k for k in keys if rs.get(k) != fs.get(k)]
        if differ:
            return Verdict(False, f"expected {recorded.describe(keys)}, "
                                  f"found {found.describe(keys)}")
        return Verdict(True)
    common = [k for k in sorted(rs) if k in fs]
    differ = [k for k in common if rs[k] != fs[k]]
    if differ:
        return Verdict(False, f"expected {recorded.describe(differ)}, "
                              f"found {found.describe(differ)}")
    if common:
        return Verdict(True)
    if rs:
        return Verdict(False, f"expected {recorded.describe(sorted(rs))}, found "
                              f"{found.describe()} which has none of these identifiers")
    wcommon = [k for k in sorted(recorded.weak) if k in found.weak]
    wdiffer = [k for k in wcommon if recorded.weak[k] != found.weak[k]]
    if wdiffer or not wcommon:
        return Verdict(False, f"expected {recorded.describe(wdiffer or None)}, "
                              f"found {found.describe(wdiffer or None)}")
    return Verdict(True, weak=True)


def strong_enough(recorded: Identity, header: str) -> bool:
    """Whether the identity can find the volume again under another name: a strong
    identifier, or (bitmap and overflow volumes) a header UUID on top of the weak ones."""
    return recorded.kind == "block" and (bool(recorded.strong) or bool(header))


# ---- finding a block device again ----------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    path: str       # what to open: /dev/mapper/<name> for device-mapper, else /dev/<name>
    rdev: int


def block_devices() -> Iterator[Candidate]:
    for name in sorted(os.listdir("/sys/class/block")):
        sys_dir = f"/sys/class/block/{name}"
        dev = read_attr(f"{sys_dir}/dev")
        try:
            major, minor = (int(x) for x in dev.split(":"))
        except ValueError:
            continue
        path = f"/dev/{name}"
        dm_name = read_attr(f"{sys_dir}/dm/name")
        if dm_name and os.path.exists(f"/dev/mapper/{dm_name}"):
            path = f"/dev/mapper/{dm_name}"
        yield Candidate(path, os.makedev(major, minor))


def _header_of(path: str, rdev: int, role: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return ""
    try:
        return read_header(fd, role) if os.fstat(fd).st_rdev == rdev else ""
    finally:
        os.close(fd)


def find_block(recorded: Identity, role: str, header: str = "",
               skip: frozenset[int] = frozenset()) -> list[str]:
    """The host's block devices that are the recorded volume (all of them: the caller uses
    one only when exactly one matches). ``skip``: device numbers not to consider."""
    if not strong_enough(recorded, header):
        return []
    found: list[str] = []
    for c in block_devices():
        if c.rdev in skip:
            continue
        ident = block_identity(c.rdev)
        if recorded.strong and not any(k in ident.strong for k in recorded.strong):
            continue   # cheap: nothing in common, never this one (and no header read)
        if not recorded.strong and ident.weak.get("size") != recorded.weak.get("size"):
            continue
        if not compare(recorded, ident).ok:
            continue
        if header and _header_of(c.path, c.rdev, role) != header:
            continue   # only a device that is the volume has its header read
        found.append(c.path)
    return found
