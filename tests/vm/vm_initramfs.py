"""The VM test tier's initramfs: busybox, the kernel modules the guest loads, and ``/init``
(guest-init.sh), as an uncompressed cpio archive (the "newc" format the kernel unpacks).

Uncompressed because unpacking costs the guest nothing while decompressing under TCG would.
``run_archive()`` makes the small second archive each boot appends (the kernel unpacks concatenated
archives in order): the command to run and its markers, so one base archive serves every boot.
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "guest-init.sh"

# What the guest needs, dependencies left out (they are found with modinfo and loaded first).
# crc32c_generic is listed first by hand: libcrc32c's dependency on a crc32c provider is only a soft
# one ("softdep pre: crc32c"), which `depends` leaves out, and without it libcrc32c, and with it
# dm-persistent-data and dm-era, fail to load with a bare "Unknown symbol".
GUEST_MODULES = (
    "crc32c_generic",
    "dm-snapshot",  # snapshot, snapshot-origin, snapshot-merge (linear is part of dm-mod)
    "dm-era",
    "loop",
    "virtio_pci",  # the virtio devices qemu offers sit on PCI
    "virtio_blk",  # the disks: /dev/vda, /dev/vdb, ...
    "9pnet_virtio",  # the host's root and the repository, shared over 9p
    "9p",
    "ext4",  # file systems on served devices (the demo, mounted-target refusals)
)


def _norm(name: str) -> str:
    # The kernel treats '-' and '_' in module names alike; file names and `depends` mix them.
    return name.replace("-", "_")


def module_load_order(modules_dir: Path, wanted: Iterable[str] = GUEST_MODULES) -> list[Path]:
    """The ``.ko`` files for ``wanted`` and everything they depend on, each after its dependencies
    (the guest has no depmod and no modprobe: it runs insmod down this list)."""
    files = {_norm(p.name.removesuffix(".ko")): p for p in modules_dir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = _norm(name)
        if key in seen:
            return
        seen.add(key)
        if key not in files:
            raise FileNotFoundError(f"kernel module {name}.ko not found under {modules_dir}")
        path = files[key]
        depends = subprocess.run(["modinfo", "-F", "depends", str(path)], check=True,
                                 capture_output=True, text=True).stdout.strip()
        for dep in filter(None, depends.split(",")):
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


class Cpio:
    """Writes a newc cpio archive: directories, regular files, one character device."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               ) -> None:
        self._ino += 1
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        self._out += b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out += name.encode() + b"\0"
        self._pad()
        self._out += data
        self._pad()

    def _pad(self) -> None:
        self._out += b"\0" * (-len(self._out) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self._out)


def base_archive(busybox: Path, modules: list[Path]) -> bytes:
    """The archive every boot shares. Modules go flat into /lib/modules, listed in load order in
    /lib/modules/order."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "host", "lib", "lib/modules", "ptvm"):
        c.directory(d)
    c.chardev("dev/console", 5, 1)  # /init's stdin/stdout, before devtmpfs is mounted
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    c.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    for ko in modules:
        c.file(f"lib/modules/{ko.name}", ko.read_bytes())
    c.file("lib/modules/order", "".join(f"{ko.name}\n" for ko in modules).encode())
    return c.finish()


def run_archive(files: Mapping[str, str]) -> bytes:
    """The per-boot archive: ``files`` (name -> text) in /ptvm."""
    c = Cpio()
    for name, text in files.items():
        c.file(f"ptvm/{name}", text.encode())
    return c.finish()
