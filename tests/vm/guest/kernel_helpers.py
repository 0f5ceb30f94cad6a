"""Volumes, sets and data checks for the kernel data path tests that run inside the VM."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import random
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.base import SetVolumes
from ptcopy.datapath.kernel import KernelPath, KernelSet
from ptcopy.engine import Engine, Kind, Set, dm_list
from tests.helpers.bus import PrivateBus
from tests.helpers.daemon import Ptcopyd

MIB = 1 << 20
CHUNK = 64 * 1024


def remove_ptcopy_devices() -> None:
    """Take down the ptcopy device-mapper devices a test left, so the next test starts without
    them: in passes, each removing what nothing holds any more (the devices users open first,
    then what they were stacked on), so no removal waits out ``--retry`` on a device still
    held; what is left after that gets ``--retry``."""
    left = sorted((n for n in dm_list() if n.startswith("ptcopy-")),
                  key=lambda n: (not n.endswith(("-master", "-shadow")), n))
    while left:
        held = [n for n in left if subprocess.run(["dmsetup", "remove", n], check=False,
                                                  capture_output=True).returncode]
        if len(held) == len(left):
            break
        left = held
    for name in left:
        subprocess.run(["dmsetup", "remove", "--retry", name], check=False,
                       capture_output=True)


@dataclass
class Vol:
    """A block device: a loop device over a file in /tmp, or a virtio disk."""

    path: str
    fd: int
    size: int
    loop_file: str | None = None

    @property
    def spec(self) -> tuple[str, int]:
        return self.path, self.fd


@dataclass
class Pool:
    """Every volume a test made; all released at the end."""

    workdir: str
    vols: list[Vol] = field(default_factory=list)

    def loop(self, name: str, size: int, *, random_fill: bool = False) -> Vol:
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as f:
            if random_fill:
                f.write(random.randbytes(size))
            else:
                f.truncate(size)
        dev = loopdev.attach(path, direct_io=False)
        return self.device(dev, loop_file=path)

    def device(self, dev: str, *, loop_file: str | None = None) -> Vol:
        # not O_EXCL: device-mapper claims the volumes exclusively itself
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
        v = Vol(dev, fd, os.lseek(fd, 0, os.SEEK_END), loop_file)
        self.vols.append(v)
        return v

    def release(self) -> None:
        for v in reversed(self.vols):
            with contextlib.suppress(OSError):
                os.close(v.fd)
            if v.loop_file:
                with contextlib.suppress(loopdev.LoopError):
                    loopdev.detach(v.path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(v.loop_file)   # the guest's /tmp is RAM
        self.vols.clear()


def set_volumes(m: Vol, s: Vol, b: Vol, overflow: Vol | None = None) -> SetVolumes:
    """The volumes as ``KernelPath.serve`` takes them: each path with its open descriptor."""
    return SetVolumes(m.spec, s.spec, b.spec, overflow.spec if overflow else None)


def bitmap_bytes(master: int, shadow: int, kind: Kind) -> int:
    return KernelPath.layout_for(master, shadow, CHUNK, kind).total


def make_set(engine: Engine, kp: KernelPath, pool: Pool, name: str, kind: Kind, *,
             master: Vol | None = None, master_size: int = 32 * MIB,
             shadow_size: int | None = None, overflow: Vol | None = None) -> KernelSet:
    """Enable a set on fresh loop devices (a random master unless given) and serve it."""
    m = master or pool.loop(f"{name}.master", master_size, random_fill=True)
    full = KernelPath.store_needed(m.size, CHUNK) if kind is Kind.DEPENDENT else m.size
    s = pool.loop(f"{name}.shadow", shadow_size or full)
    b = pool.loop(f"{name}.bitmap", bitmap_bytes(m.size, s.size, kind))
    ov = engine.open_overflow(overflow.spec) if overflow else None
    st = engine.enable(m.spec, s.spec, b.spec, kind=kind, chunk_size=CHUNK, overflow=ov)
    return kp.serve(name, st, set_volumes(m, s, b, overflow))


def digest(path: str, length: int | None = None) -> str:
    """SHA-256 of a device's first ``length`` bytes, read with O_DIRECT (no stale cache)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END) if length is None else length
        h = hashlib.sha256()
        buf = mmap.mmap(-1, MIB)
        off = 0
        while off < size:
            n = os.preadv(fd, [buf], off)
            if n <= 0:
                raise OSError(f"short read of {path} at {off}")
            h.update(buf[:min(n, size - off)])
            off += n
        return h.hexdigest()
    finally:
        os.close(fd)


def write_at(path: str, offset: int, data: bytes, *, sync: bool = True) -> None:
    """One O_DIRECT write (aligned buffer), completed before this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        buf = mmap.mmap(-1, max(len(data), 4096))
        buf[:len(data)] = data
        assert os.pwritev(fd, [memoryview(buf)[:len(data)]], offset) == len(data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_at(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        buf = mmap.mmap(-1, max(length, 4096))
        n = os.preadv(fd, [buf], offset)
        return bytes(buf[:min(n, length)])
    finally:
        os.close(fd)


def scribble(path: str, size: int, count: int, seed: int) -> list[int]:
    """``count`` random chunk-sized writes; returns the chunk numbers written."""
    rng = random.Random(seed)
    chunks = sorted(rng.sample(range(size // CHUNK), count))
    for c in chunks:
        write_at(path, c * CHUNK, rng.randbytes(CHUNK), sync=False)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return chunks


@contextlib.contextmanager
def kernel_path(workdir: str) -> Iterator[tuple[Engine, KernelPath]]:
    """An engine and a kernel path whose devices are all gone afterwards."""
    engine = Engine()
    kp = KernelPath(engine, os.path.join(workdir, "run"))
    try:
        yield engine, kp
    finally:
        kp.teardown()
        engine.close()


def reopen(engine: Engine, kp: KernelPath, name: str, m: Vol, s: Vol, b: Vol,
           overflow: Vol | None = None) -> KernelSet:
    """Open an existing set from its volumes and serve it again (as after a reboot)."""
    ov = engine.open_overflow(overflow.spec) if overflow else None
    st: Set = engine.open(m.spec, s.spec, b.spec, overflow=ov)
    return kp.serve(name, st, set_volumes(m, s, b, overflow))


@contextlib.contextmanager
def served_daemon(workdir: str, data_path: str,
                  extra: Sequence[str] = ()) -> Iterator[tuple[Ptcopyd, Pool]]:
    """ptcopyd with ``--data-path data_path`` (and the ``extra`` arguments) on a private bus,
    and a pool of volumes in ``workdir``; afterwards the devices it left to the kernel (it
    leaves them when it stops) are taken down for the next test."""
    bus = PrivateBus.start()
    d = Ptcopyd(bus, Path(workdir), ["--data-path", data_path, *extra])
    pool = Pool(workdir)
    try:
        yield d, pool
    finally:
        if d.running:
            d.stop()
        remove_ptcopy_devices()
        subprocess.run(["dmsetup", "remove_all"], check=False, capture_output=True)
        pool.release()
        bus.stop()
