"""The userspace data-path tests' harness (tests/integration/userspace) and trees of files.

Every test gets a :class:`Harness` (fixture ``dp`` in that directory's conftest.py). It owns the
engine, the UserspacePath objects and the mounts a test makes, and tears all of them down, in the
right order, whatever happened: file systems first, then the FUSE servers (which detach their loop
devices), then whatever a killed server left behind under the test's run directories, then the
engine.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.userspace import UserspacePath, cleanup_stale
from ptcopy.engine import Engine, Kind, Overflow, Set, bitmap_size
from tests.helpers.names import KIB, MIB
from tests.helpers.system import is_mounted, run

# ---- trees of files ---------------------------------------------------------------------------


def _payload(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def write_tree(root: Path, rng: random.Random, nfiles: int, *, max_size: int = 256 * KIB,
               prefix: str = "f") -> None:
    """Create ``nfiles`` files of random size and content in a few subdirectories."""
    for i in range(nfiles):
        d = root / f"d{rng.randrange(4)}"
        d.mkdir(exist_ok=True)
        (d / f"{prefix}{i}").write_bytes(_payload(rng, rng.randint(1, max_size)))


def mutate_tree(root: Path, rng: random.Random, *, new_files: int = 8) -> None:
    """Modify, delete and add files: afterwards the tree differs from before."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and "lost+found" not in p.parts)
    rng.shuffle(files)
    third = max(1, len(files) // 3)
    for p in files[:third]:                       # overwrite part of the file in place
        with p.open("r+b") as f:
            size = f.seek(0, os.SEEK_END)
            off = rng.randrange(size)
            f.seek(off)
            f.write(_payload(rng, min(size - off, 64 * KIB)))
    for p in files[third:2 * third]:
        p.unlink()
    (root / "newdir").mkdir(exist_ok=True)
    write_tree(root / "newdir", rng, new_files, prefix=f"n{rng.randrange(1 << 30)}_")


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file and a marker for every directory, by relative path."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames.sort()
        out[rel + "/"] = "dir"
        for name in sorted(filenames):
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return out


def tree_diff(got: dict[str, str], want: dict[str, str]) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    return f"missing {missing[:10]}, extra {extra[:10]}, changed {changed[:10]}"


# ---- the harness ------------------------------------------------------------------------------


class Harness:
    """Owns what a test creates; :meth:`close` tears it down even after a failure."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.engine = Engine()
        self.paths: list[UserspacePath] = []
        self.run_dirs: list[Path] = []
        self.mounts: list[Path] = []
        self._n = 0

    # -- volumes and sets --

    def file(self, name: str, size: int) -> Path:
        p = self.tmp / name
        with p.open("xb") as f:
            f.truncate(size)
        return p

    def volumes(self, master: int, shadow: int | None = None, *, chunk_size: int = 0,
                kind: Kind = Kind.DEPENDENT) -> tuple[Path, Path, Path]:
        self._n += 1
        shadow = master if shadow is None else shadow
        m = self.file(f"m{self._n}.img", master)
        s = self.file(f"s{self._n}.img", shadow)
        b = self.file(f"b{self._n}.img", bitmap_size(master, shadow, chunk_size, kind))
        return m, s, b

    def enable(self, kind: Kind, master: int = 64 * MIB, shadow: int | None = None, *,
               overflow: Overflow | None = None, **kw: int) -> tuple[Set, tuple[Path, Path, Path]]:
        vols = self.volumes(master, shadow, chunk_size=kw.get("chunk_size", 0), kind=kind)
        s = self.engine.enable(*vols, kind, overflow=overflow, **kw)
        return s, vols

    def userspace(self, run_dir: Path | None = None) -> UserspacePath:
        run_dir = run_dir or self.tmp / f"run{len(self.run_dirs)}"
        run_dir.mkdir(exist_ok=True)
        if run_dir not in self.run_dirs:
            self.run_dirs.append(run_dir)
        up = UserspacePath(self.engine, str(run_dir))
        self.paths.append(up)
        return up

    # -- file systems --

    def mount(self, dev: str, name: str, *, ro: bool = False) -> Path:
        mp = self.tmp / name
        mp.mkdir(exist_ok=True)
        opts = ["-o", "ro,noload"] if ro else []
        run("mount", *opts, dev, str(mp))
        self.mounts.append(mp)
        return mp

    def umount(self, mp: Path) -> None:
        run("umount", str(mp))
        if mp in self.mounts:
            self.mounts.remove(mp)

    # -- teardown --

    def close(self) -> None:
        errors: list[BaseException] = []

        def attempt(fn: Callable[..., object], *args: object, **kw: object) -> None:
            try:
                fn(*args, **kw)
            except BaseException as e:  # keep tearing down; report the first failure
                errors.append(e)

        for mp in reversed(self.mounts):
            if is_mounted(mp):
                r = subprocess.run(["umount", str(mp)], capture_output=True, check=False)
                if r.returncode != 0:
                    attempt(loopdev.lazy_unmount, str(mp))
        self.mounts.clear()
        for up in reversed(self.paths):
            n = len(errors)
            attempt(up.stop, force=True)
            if len(errors) > n:                  # still stop the FUSE server itself
                attempt(up._server.stop)
        self.paths.clear()
        for rd in self.run_dirs:       # what a killed server (or a failed stop) left behind
            attempt(cleanup_stale, str(rd / "volumes"))
        attempt(self.engine.close)
        if errors:
            raise errors[0]
