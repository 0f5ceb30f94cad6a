"""Volume discovery: the block devices of this host (pyudev), what each one is, and whether it
could serve a new set.

``Discovery`` keeps a table of ``BlockDev`` by kernel name. ``scan()`` enumerates everything
(at start and on Manager.Refresh); ``handle()`` applies one udev/kernel event incrementally (the
device itself, its parent disk and the devices below it), so a synthetic ``remove`` event is
honoured until the device announces itself again. Nothing here knows about sets: the daemon
adds who uses a device (see ``app.Daemon._sync_volumes``).

Where systemd-udevd runs, events come from it (``source='udev'``) with the file-system
signature (ID_FS_TYPE, ID_FS_UUID) already probed; otherwise events are the kernel's own
uevents and ``blkid`` probes the signature (cached until the device changes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyudev

from ptcopy.datapath.kernel.names import PREFIX as DM_PREFIX

log = logging.getLogger(__name__)

UDEV_CONTROL = "/run/udev/control"


def udevd_running() -> bool:
    """Whether systemd-udevd answers on its control socket (a stale socket file is not
    enough: its database would be stale too)."""
    if not os.path.exists(UDEV_CONTROL):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(UDEV_CONTROL)
        return True
    except OSError:
        return False
    finally:
        s.close()


@dataclass(frozen=True)
class BlockDev:
    name: str                       # kernel name: sda1, loop3, dm-0
    node: str                       # /dev/<name>
    path: str                       # what users give: /dev/mapper/<name> for dm, else node
    devnum: int                     # st_rdev
    size: int
    type: str                       # disk, part, loop, lvm, dm, md
    fstype: str = ""
    fs_uuid: str = ""
    serial: str = ""
    read_only: bool = False
    holders: tuple[str, ...] = ()   # kernel names of devices stacked on it
    slaves: tuple[str, ...] = ()    # kernel names of devices it is stacked on
    parent: str = ""                # the whole disk of a partition
    partitions: tuple[str, ...] = ()
    backing_file: str = ""          # loop devices


@dataclass
class Host:
    """What applies across devices: mounts, swap, the root file system."""
    mounts: dict[int, list[str]] = field(default_factory=dict)   # devnum -> mount points
    swaps: set[int] = field(default_factory=set)
    root: set[int] = field(default_factory=set)                   # devnum holding /
    mountinfo: str = ""

    @staticmethod
    def read() -> Host:
        h = Host()
        try:
            with open("/proc/self/mountinfo", encoding="utf-8") as f:
                h.mountinfo = f.read()
        except OSError:
            h.mountinfo = ""
        for line in h.mountinfo.splitlines():
            fields = line.split()
            if len(fields) > 4 and ":" in fields[2]:
                major, minor = fields[2].split(":", 1)
                with contextlib.suppress(ValueError):
                    dev = os.makedev(int(major), int(minor))
                    h.mounts.setdefault(dev, []).append(fields[4].replace("\\040", " "))
        with contextlib.suppress(OSError), open("/proc/swaps", encoding="utf-8") as f:
            for line in f.read().splitlines()[1:]:
                name = line.split()[0] if line.split() else ""
                with contextlib.suppress(OSError):
                    h.swaps.add(os.stat(name).st_rdev)
        with contextlib.suppress(OSError):
            h.root.add(os.stat("/").st_dev)
        return h


def read_attr(path: str) -> str:
    """A sysfs attribute (or any small text file), stripped; "" when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _list(path: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir(path)))
    except OSError:
        return ()


class Discovery:
    """The host's block devices, kept current by a pyudev monitor."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = os.path.join(os.path.realpath(run_dir), "")
        self.context = pyudev.Context()
        self.devices: dict[str, BlockDev] = {}
        self.host = Host.read()
        self.source = "udev" if udevd_running() else "kernel"
        self.monitor: Any = None
        self._blkid: dict[tuple[str, int, int, str], tuple[str, str]] = {}

    # ---- monitor ---------------------------------------------------------------------------

    def start_monitor(self) -> int:
        """Start listening for block events; returns the descriptor to watch for reading."""
        self.monitor = pyudev.Monitor.from_netlink(self.context, source=self.source)
        self.monitor.filter_by("block")
        self.monitor.start()
        log.info("volume discovery: %s events, %d block device(s)", self.source,
                 len(self.devices))
        return int(self.monitor.fileno())

    def pending(self) -> list[tuple[str, str, Mapping[str, str]]]:
        """The events that arrived: (action, kernel name, properties)."""
        out: list[tuple[str, str, Mapping[str, str]]] = []
        if self.monitor is None:
            return out
        while True:
            try:
                dev = self.monitor.poll(timeout=0)
            except (OSError, pyudev.DeviceNotFoundError):
                log.debug("monitor", exc_info=True)
                continue
            if dev is None:
                return out
            out.append((str(dev.action or "change"), str(dev.sys_name),
                        {str(k): str(v) for k, v in dev.properties.items()}))

    def close(self) -> None:
        self.monitor = None

    # ---- probing ---------------------------------------------------------------------------

    def _udev_props(self, name: str) -> Mapping[str, str]:
        if self.source != "udev":
            return {}
        try:
            dev = pyudev.Devices.from_name(self.context, "block", name)
            return {str(k): str(v) for k, v in dev.properties.items()}
        except (pyudev.DeviceNotFoundError, OSError, ValueError):
            return {}

    def _probe_fs(self, node: str, name: str, devnum: int, size: int,
                  backing: str) -> tuple[str, str]:
        key = (name, devnum, size, backing)
        if key in self._blkid:
            return self._blkid[key]
        found = ("", "")
        try:
            r = subprocess.run(["blkid", "-p", "-o", "export", "--", node], capture_output=True,
                               text=True, timeout=5, check=False)
            vals = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
            found = (vals.get("TYPE", ""), vals.get("UUID", ""))
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._blkid[key] = found
        return found

    def served(self, backing_file: str) -> bool:
        """A loop device over ptcopyd's run directory: a volume ptcopy serves."""
        return bool(backing_file) and backing_file.startswith(self.run_dir)

    def probe(self, name: str, props: Mapping[str, str] | None = None) -> BlockDev | None:
        """What the device is now, or None when it is no volume (gone, an unattached loop
        device, a ram disk, no medium)."""
        sys_dir = f"/sys/class/block/{name}"
        dev_txt = read_attr(f"{sys_dir}/dev")
        if not dev_txt:
            return None
        try:
            major, minor = (int(x) for x in dev_txt.split(":"))
        except ValueError:
            return None
        devnum = os.makedev(major, minor)
        size = int(read_attr(f"{sys_dir}/size") or 0) * 512
        is_part = os.path.exists(f"{sys_dir}/partition")
        backing = ""
        parent = ""
        if is_part:
            parent = os.path.basename(os.path.dirname(os.path.realpath(sys_dir)))
        if name.startswith("loop") and not is_part:
            backing = read_attr(f"{sys_dir}/loop/backing_file").removesuffix(" (deleted)")
            if not backing:
                return None   # an unattached loop device is no volume
        if size == 0:
            return None       # no medium
        if is_part:
            kind = "part"
        elif name.startswith("loop"):
            kind = "loop"
        elif name.startswith("dm-"):
            kind = "lvm" if read_attr(f"{sys_dir}/dm/uuid").startswith("LVM-") else "dm"
        elif name.startswith("md"):
            kind = "md"
        else:
            kind = "disk"
        node = f"/dev/{name}"
        path = node
        dm_name = read_attr(f"{sys_dir}/dm/name") if kind in ("dm", "lvm") else ""
        if dm_name and os.path.exists(f"/dev/mapper/{dm_name}"):
            path = f"/dev/mapper/{dm_name}"
        if props is None or self.source != "udev":
            props = self._udev_props(name)
        fstype, fs_uuid = props.get("ID_FS_TYPE", ""), props.get("ID_FS_UUID", "")
        # Never probe what ptcopyd serves (its FUSE loop devices, the kernel path's ptcopy-*
        # devices): blkid holds the device open for a moment, and a restore refuses to merge
        # a shadow somebody has open.
        ours = self.served(backing) or dm_name.startswith(DM_PREFIX)
        if self.source != "udev" and not ours:
            fstype, fs_uuid = self._probe_fs(node, name, devnum, size, backing)
        partitions: tuple[str, ...] = ()
        if not is_part:
            partitions = tuple(p for p in _list(sys_dir)
                               if p.startswith(name) and os.path.exists(f"{sys_dir}/{p}/partition"))
        return BlockDev(
            name=name, node=node, path=path, devnum=devnum, size=size, type=kind,
            fstype=fstype, fs_uuid=fs_uuid,
            serial=props.get("ID_SERIAL", "") or read_attr(f"{sys_dir}/device/serial"),
            read_only=read_attr(f"{sys_dir}/ro") == "1",
            holders=_list(f"{sys_dir}/holders"), slaves=_list(f"{sys_dir}/slaves"),
            parent=parent, partitions=partitions, backing_file=backing)

    # ---- the table -------------------------------------------------------------------------

    def enumerate(self) -> dict[str, BlockDev]:
        """Every block device that is a volume, probed now."""
        found: dict[str, BlockDev] = {}
        for dev in self.context.list_devices(subsystem="block"):
            name = str(dev.sys_name)
            info = self.probe(name)
            if info is not None:
                found[name] = info
        return found

    def scan(self, *, forget_probes: bool = False) -> set[str]:
        """Re-enumerate from scratch; the names whose information changed."""
        if forget_probes:
            self._blkid.clear()
        self.source = "udev" if udevd_running() else "kernel"
        self.host = Host.read()
        found = self.enumerate()
        changed = {n for n in set(found) | set(self.devices)
                   if found.get(n) != self.devices.get(n)}
        self.devices = found
        return changed

    def handle(self, events: Iterable[tuple[str, str, Mapping[str, str]]]) -> set[str]:
        """Apply events; the names whose information changed (added, removed or different).
        Works on a copy of the table and puts it in place at the end: it runs in a worker
        thread while the loop reads the table."""
        changed: set[str] = set()
        devices = dict(self.devices)
        for action, name, props in events:
            related = {name}
            old = devices.get(name)
            if old is not None:
                related |= {old.parent, *old.slaves, *old.holders, *old.partitions}
            if action == "remove":
                if devices.pop(name, None) is not None:
                    changed.add(name)
                related.discard(name)
            else:
                self._blkid = {k: v for k, v in self._blkid.items() if k[0] != name}
                info = self.probe(name, props)
                if info is not None:
                    related |= {info.parent, *info.slaves, *info.holders}
                if info != devices.get(name):
                    changed.add(name)
                    if info is None:
                        devices.pop(name, None)
                    else:
                        devices[name] = info
                related.discard(name)
            for other in related - {""}:
                if other not in devices:
                    continue   # only refresh what we have: a removed device stays removed
                info = self.probe(other)
                if info != devices.get(other):
                    changed.add(other)
                    if info is None:
                        del devices[other]
                    else:
                        devices[other] = info
        self.devices = devices
        return changed

    def mounts_changed(self) -> bool:
        """Re-read the mount table; whether it differs (mounts send no uevent)."""
        h = Host.read()
        if h.mountinfo == self.host.mountinfo and h.swaps == self.host.swaps:
            return False
        self.host = h
        return True

    # ---- judging ---------------------------------------------------------------------------

    def by_devnum(self) -> dict[int, BlockDev]:
        return {d.devnum: d for d in self.devices.values()}

    def holds_root(self, d: BlockDev) -> bool:
        """Whether the root file system lives on this device or on something stacked on it."""
        seen: set[str] = set()
        todo = [d.name]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            cur = self.devices.get(n)
            if cur is None:
                continue
            if cur.devnum in self.host.root:
                return True
            todo.extend(cur.holders)
            todo.extend(cur.partitions)
        return False

    def problems(self, d: BlockDev) -> list[str]:
        """Why this device could not serve a new set, as far as the host is concerned."""
        why: list[str] = []
        if self.served(d.backing_file):
            why.append("is a device ptcopy serves (never a volume of a set)")
        if self.holds_root(d):
            why.append("holds the root file system")
        mps = self.host.mounts.get(d.devnum, [])
        if mps:
            why.append("mounted at " + ", ".join(mps))
        if d.devnum in self.host.swaps:
            why.append("is in use as swap")
        if d.partitions:
            why.append("has partitions (" + ", ".join(d.partitions) + ")")
        if d.holders:
            why.append("held by " + ", ".join(f"/dev/{h}" for h in d.holders))
        if d.read_only:
            why.append("is read-only")
        if d.fstype in ("LVM2_member", "linux_raid_member", "crypto_LUKS") and not d.holders:
            why.append(f"is a {d.fstype} (part of a volume group, array or encrypted volume)")
        return why


@dataclass(frozen=True)
class VolumeView:
    """The properties of one Volume object."""
    path: str
    size: int = 0
    type: str = "file"
    fstype: str = ""
    mounted: bool = False
    holders: tuple[str, ...] = ()
    used_by: str = "/"
    available: bool = False
    unsuitable: str = ""
    devnum: int = 0       # 0 for files


_PLAIN_PATH = re.compile(r"/[A-Za-z0-9]+(?:/[A-Za-z0-9]+)*")


def bus_label_escape(text: str) -> str:
    """An object path element for any string, as systemd's sd_bus_path_encode makes it: every
    byte (UTF-8, or the raw bytes of an undecodable file name) other than an ASCII letter, or
    a digit after the first byte, becomes _XX in lowercase hex; '' becomes '_'."""
    raw = os.fsencode(text)
    if not raw:
        return "_"
    out = []
    for i, byte in enumerate(raw):
        c = chr(byte)
        if c.isascii() and (c.isalpha() or (i > 0 and c.isdigit())):
            out.append(c)
        else:
            out.append(f"_{byte:02x}")
    return "".join(out)


def volume_id(path: str) -> str:
    """A stable object id from a device node or a file's path, valid whatever the name.

    A path made only of ASCII letters and digits between single slashes (every /dev node:
    /dev/loop3 -> dev_loop3) keeps the short id it always had; any other path is escaped as
    sd_bus_path_encode does (/vols/v1.img -> _2fvols_2fv1_2eimg), which cannot collide with
    the short form (that never starts with '_') nor with another escaped path."""
    if _PLAIN_PATH.fullmatch(path):
        return path[1:].replace("/", "_")
    return bus_label_escape(path)
