"""Figure faults: the engine's fault hooks on the shadow, bitmap and overflow volumes of sets
served over FUSE."""

from __future__ import annotations

import contextlib
import errno
import inspect
import mmap
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

from ptcopy.engine import (
    Direction,
    Engine,
    Flag,
    Kind,
    PtcopyError,
    Server,
    Set,
    VolumeRole,
    bitmap_size,
)
from tests.reliability.figure import BLOCK, Figure, say


def inject(s: Set, role: VolumeRole, on: bool, err: int) -> bool:
    """Set.inject_error with the errno when the engine takes one; False when it cannot inject
    ``err`` (an engine without the errno choice fails with EIO only)."""
    params = inspect.signature(s.inject_error).parameters
    for name in ("errno", "error", "err", "code", "errnum"):
        if name in params:
            s.inject_error(role, on, **{name: err})
            return True
    if err != errno.EIO:
        return False
    s.inject_error(role, on)
    return True


class StepFailed(OSError):
    """An I/O step on a served file failed: ``step`` says which (write, fsync, read, close)."""

    def __init__(self, step: str, e: OSError, landed: bool = False) -> None:
        super().__init__(e.errno, f"{step}: {e.strerror or e}")
        self.step = step
        self.landed = landed    # the data was written before the step that failed


def _pwrite_sync(path: str, off: int, data: bytes) -> None:
    """One O_DIRECT write, its fsync and the close (FUSE flush): each must succeed."""
    fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    step, landed = "write", False
    try:
        n = os.pwritev(fd, [buf], off)
        if n != len(data):
            raise OSError(errno.EIO, f"short write {n} of {len(data)}")
        step, landed = "fsync", True
        os.fsync(fd)
        step = "close"
        fd, closing = -1, fd
        os.close(closing)
    except OSError as e:
        raise StepFailed(step, e, landed) from e
    finally:
        buf.close()
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    step = "read"
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        buf = mmap.mmap(-1, size)
        got = 0
        while got < size:
            n = os.preadv(fd, [memoryview(buf)[got:]], got)
            if n <= 0:
                raise OSError(errno.EIO, f"short read of {path} at {got}")
            got += n
        out = bytes(buf)
        buf.close()
        step = "close"
        fd, closing = -1, fd
        os.close(closing)
        return out
    except OSError as e:
        raise StepFailed(step, e) from e
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


FAULT_SETS = ("dependent", "independent", "compact")
FLAG_OF = {VolumeRole.SHADOW: Flag.SHADOW_OFFLINE, VolumeRole.BITMAP: Flag.BITMAP_OFFLINE,
           VolumeRole.OVERFLOW: Flag.OVERFLOW_OFFLINE}
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | \
    Flag.OVERFLOW_OFFLINE


def fault_case(base: Path, kind: str, role: VolumeRole, err: int, seed: int) -> list[str]:
    """One case; the problems found (empty: passed; ["SKIP"]: the engine cannot inject it)."""
    chunk = 32 * 1024
    size = 64 * chunk
    rng = random.Random(seed)
    problems: list[str] = []
    image = bytearray(rng.randbytes(size))
    vols = {}
    for name, n in (("master", size), ("shadow", 4 * chunk if kind == "compact" else size),
                    ("overflow", 64 * chunk)):
        p = base / f"{name}.img"
        with p.open("wb") as f:
            f.write(bytes(image) if name == "master" else b"")
            f.truncate(n)
        vols[name] = str(p)
    k = Kind.INDEPENDENT if kind == "independent" else Kind.DEPENDENT
    shadow_size = os.path.getsize(vols["shadow"])
    bm = base / "bitmap.img"
    with bm.open("wb") as f:
        f.truncate(bitmap_size(size, shadow_size, chunk, k))
    mnt = base / "mnt"
    mnt.mkdir()
    eng = Engine()
    srv: Server | None = None
    try:
        ov = eng.init_overflow(vols["overflow"], chunk) if kind == "compact" else None
        s = eng.enable(vols["master"], vols["shadow"], str(bm), k, chunk_size=chunk, overflow=ov)
        if k is Kind.INDEPENDENT:
            s.wait(30)
        srv = Server(eng, mnt)
        master, shadow = srv.export("s", s)
        # changed chunks before the fault, so that the shadow side has work to do; a compact
        # shadow whose own volume is to fail keeps free slots (else it spills to the overflow
        # and never touches the failing volume again)
        pre = 1 if kind == "compact" and role is VolumeRole.SHADOW else 16
        write_master(master, image, rng, pre, problems, "before the fault")
        if not inject(s, role, True, err):
            return ["SKIP"]
        if k is Kind.INDEPENDENT:     # only a copy reaches an independent shadow
            with contextlib.suppress(PtcopyError):
                s.update(Direction.TO_SHADOW)
                s.wait(30)
        write_master(master, image, rng, 32, problems, f"with the {role.name.lower()} failing")
        flags = s.status().flags
        if not flags & FLAG_OF[role]:
            problems.append(f"the {role.name.lower()} failed but the flags are {flags!r}")
        if flags & Flag.MASTER_OFFLINE:
            problems.append(f"the master was flagged offline: {flags!r}")
        check_master(master, vols["master"], image, problems)
        inject(s, role, False, err)
        try:
            s.reset()
            s.wait(60)
        except PtcopyError as e:
            problems.append(f"reset after the fault cleared: {type(e).__name__}: {e}")
        flags = s.status().flags
        if flags & OFFLINE:
            problems.append(f"still offline after reset: {flags!r}")
        write_master(master, image, rng, 8, problems, "after the reset")
        try:
            s.update(Direction.TO_SHADOW)
            s.wait(60)
        except PtcopyError as e:
            problems.append(f"update after the reset: {type(e).__name__}: {e}")
        check_master(master, vols["master"], image, problems)
        try:
            if _read_file(shadow) != bytes(image):
                problems.append("after reset and update the shadow differs from the master")
        except OSError as e:
            problems.append(f"reading the served shadow after reset and update: {e}")
    except PtcopyError as e:
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        try:
            if srv is not None:
                srv.stop()
            eng.close()
        except PtcopyError as e:
            if not problems:    # after a failed case, closing may fail too: already counted
                problems.append(f"closing after the recovery: {type(e).__name__}: {e}")
    return problems


def write_master(master: str, image: bytearray, rng: random.Random, count: int,
                 problems: list[str], when: str) -> None:
    """Random writes through the served master file, each with its fsync and close; ``image``
    follows what was acknowledged."""
    failed = Counter[str]()
    for _ in range(count):
        n = rng.randint(1, 8)
        off = rng.randrange(len(image) // BLOCK - n + 1) * BLOCK
        data = rng.randbytes(n * BLOCK)
        try:
            _pwrite_sync(master, off, data)
        except StepFailed as e:
            failed[e.strerror or str(e)] += 1
            if e.landed:    # written, only its fsync or close failed
                image[off:off + len(data)] = data
            continue
        image[off:off + len(data)] = data
    for why, k in failed.items():
        problems.append(f"{k} of {count} master writes {when} failed at {why}")


def check_master(master: str, raw: str, image: bytearray, problems: list[str]) -> None:
    try:
        if _read_file(master) != bytes(image):
            problems.append("the served master does not hold every acknowledged write")
    except OSError as e:
        problems.append(f"reading the served master failed: {e}")
    with open(raw, "rb") as f:
        if f.read() != bytes(image):
            problems.append("the master volume does not hold every acknowledged write")


def fig_faults(fig: Figure, seed: int, repeat: int) -> None:
    cases: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    i = 0
    for _ in range(repeat):
        for kind in FAULT_SETS:
            roles = [VolumeRole.SHADOW, VolumeRole.BITMAP]
            if kind == "compact":
                roles.append(VolumeRole.OVERFLOW)
            for role in roles:
                for err in (errno.EIO, errno.ENOSPC):
                    i += 1
                    what = f"{kind} {role.name.lower()} {errno.errorcode[err]}"
                    with tempfile.TemporaryDirectory(prefix="ptcopy-rel-fault-") as tmp:
                        try:
                            problems = fault_case(Path(tmp), kind, role, err, seed + i)
                        except Exception as e:
                            problems = [f"{type(e).__name__}: {e}"]
                    if problems == ["SKIP"]:
                        skipped[what] += 1
                        say(f"faults {what}: skipped (the engine injects EIO only)")
                        continue
                    fig.runs += 1
                    cases[what] += 1
                    say(f"faults {what} seed {seed + i}: {'ok' if not problems else 'FAILED'}")
                    if problems:
                        fig.fail(f"fault case {what} seed {seed + i}: " + "; ".join(problems))
    fig.counts.update(cases=fig.runs, failed_cases=len(fig.failures), by_case=dict(cases),
                      skipped=dict(skipped))
