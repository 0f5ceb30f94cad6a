"""A short tour of the ptcopy engine on small file-backed volumes.

    python -m ptcopy.demo [--dir DIR] [--keep]

It makes a few sparse files in a temporary directory (or in DIR) and shows, with checksums read
through the sets:

1. a dependent (copy-on-write) set: the shadow keeps the point in time while the master changes,
   and an update gives it a new one;
2. an independent set: the full copy runs in the background, with progress, and the shadow gets
   the master as it was when the set was enabled even though the master is written meanwhile;
3. a compact dependent shadow, smaller than its master, spilling into an overflow volume;
4. a group update of two sets at one point in time.

Exit status: 0 when every check holds, 1 for a usage problem or a failed check, 2 when the engine
(or the file system) refuses an operation; the message says why.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ptcopy.engine import (
    Direction,
    Engine,
    Flag,
    Kind,
    Overflow,
    PtcopyError,
    Set,
    Side,
    bitmap_size,
)

KIB = 1024
MIB = 1024 * KIB
CHUNK = 32 * KIB


class CheckFailed(Exception):
    """Something the demo shows did not hold (this would be an engine bug)."""


def say(line: str = "") -> None:
    print(line, flush=True)


def digest(s: Set, side: Side) -> str:
    """Short SHA-256 of a whole logical volume, read through the set."""
    size = s.status().master_size
    return hashlib.sha256(s.read(side, 0, size)).hexdigest()[:12]


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


def flag_names(flags: Flag) -> str:
    names = [f.name or "" for f in Flag if f in flags]
    return "|".join(names) if names else "-"


class Volumes:
    """Makes sparse volume files in one directory and remembers them for clean-up."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.made: list[Path] = []

    def make(self, name: str, size: int, fill_seed: int | None = None) -> Path:
        path = self.where / name
        with path.open("xb") as f:  # never overwrite a file that is already there
            self.made.append(path)
            f.truncate(size)
            if fill_seed is not None:
                f.write(random.Random(fill_seed).randbytes(size))
        return path

    def bitmap_for(self, name: str, master: Path, shadow: Path, kind: Kind) -> Path:
        need = bitmap_size(master.stat().st_size, shadow.stat().st_size, CHUNK, kind)
        return self.make(name, need)

    def remove(self) -> None:
        for path in reversed(self.made):
            path.unlink(missing_ok=True)


def wait_with_progress(s: Set, label: str) -> None:
    """Poll the copy's progress (C keeps the counters; nothing calls back into Python)."""
    last = -1.0
    while not s.wait(timeout=0.1):
        p = s.progress()
        if p.chunks_done and p.fraction - last >= 0.2:
            last = p.fraction
            say(f"   {label}: {p.fraction:4.0%}  ({p.chunks_done}/{p.chunks_total} chunks)")
    p = s.progress()
    say(f"   {label}: done, {p.bytes_done // KIB} KiB in {p.elapsed_s:.2f} s")


# ---- the four scenes -------------------------------------------------------------------------


def dependent_set(eng: Engine, vols: Volumes) -> Set:
    say("1. Dependent set: copy-on-write, nothing copied up front")
    master = vols.make("dep-master.img", 8 * MIB, fill_seed=1)
    shadow = vols.make("dep-shadow.img", 8 * MIB)
    bitmap = vols.bitmap_for("dep-bitmap.img", master, shadow, Kind.DEPENDENT)
    s = eng.enable(master, shadow, bitmap, Kind.DEPENDENT, chunk_size=CHUNK)
    pit = digest(s, Side.SHADOW)
    say(f"   enabled: master {digest(s, Side.MASTER)}  shadow {pit}  (the point in time)")
    check(digest(s, Side.MASTER) == pit, "a new dependent shadow equals its master")

    s.write(Side.MASTER, 1 * MIB, b"\xab" * MIB)
    st = s.status()
    say(f"   wrote 1 MiB to the master: master {digest(s, Side.MASTER)}  "
        f"shadow {digest(s, Side.SHADOW)}")
    say(f"   the shadow still holds the point in time: the old data of {st.diff_chunks} chunks "
        "was copied to it first")
    check(digest(s, Side.SHADOW) == pit, "the dependent shadow kept its point in time")

    s.update(Direction.TO_SHADOW)
    s.wait()
    say(f"   update to shadow: master {digest(s, Side.MASTER)}  shadow {digest(s, Side.SHADOW)}"
        f"  -> match, {s.status().diff_chunks} chunks differ")
    check(digest(s, Side.SHADOW) == digest(s, Side.MASTER), "update makes shadow = master")
    return s


def independent_set(eng: Engine, vols: Volumes) -> Set:
    say("2. Independent set: a full copy in the background, master writable meanwhile")
    master = vols.make("ind-master.img", 16 * MIB, fill_seed=2)
    shadow = vols.make("ind-shadow.img", 16 * MIB)
    bitmap = vols.bitmap_for("ind-bitmap.img", master, shadow, Kind.INDEPENDENT)
    # Throttled (50 ms pause every 32 chunks) only so that the progress is visible.
    s = eng.enable(master, shadow, bitmap, Kind.INDEPENDENT, chunk_size=CHUNK,
                   copy_delay_ms=50, copy_units=32)
    pit = digest(s, Side.MASTER)
    say(f"   enabled: master {pit}; the copy runs on an engine thread")
    s.write(Side.MASTER, 12 * MIB, b"\xcd" * (2 * MIB))
    say(f"   wrote 2 MiB to the master during the copy: master {digest(s, Side.MASTER)}")
    wait_with_progress(s, "full copy")
    say(f"   shadow {digest(s, Side.SHADOW)}: the master as it was at enable, not the later "
        "writes")
    check(digest(s, Side.SHADOW) == pit, "the background copy kept the point in time")

    s.update(Direction.TO_SHADOW)
    say(f"   update to shadow: {s.progress().chunks_total} chunks to copy")
    wait_with_progress(s, "update")
    say(f"   master {digest(s, Side.MASTER)}  shadow {digest(s, Side.SHADOW)}  -> match")
    check(digest(s, Side.SHADOW) == digest(s, Side.MASTER), "update makes shadow = master")
    return s


def compact_set(eng: Engine, vols: Volumes) -> tuple[Set, Overflow]:
    say("3. Compact dependent shadow (256 KiB for an 8 MiB master) with an overflow volume")
    master = vols.make("cmp-master.img", 8 * MIB, fill_seed=3)
    shadow = vols.make("cmp-shadow.img", 256 * KIB)
    ov_path = vols.make("overflow.img", 1 * MIB)
    bitmap = vols.bitmap_for("cmp-bitmap.img", master, shadow, Kind.DEPENDENT)
    ov = eng.init_overflow(ov_path, CHUNK)
    s = eng.enable(master, shadow, bitmap, Kind.DEPENDENT, chunk_size=CHUNK, overflow=ov)
    pit = digest(s, Side.SHADOW)
    st = s.status()
    say(f"   enabled: {st.shadow_slots} chunk slots on the shadow, "
        f"{ov.status().chunks_total} on the overflow volume")

    s.write(Side.MASTER, 0, b"\xef" * (16 * CHUNK))
    st = s.status()
    say(f"   wrote 16 chunks to the master: {st.shadow_slots_used} saved on the shadow, "
        f"{st.overflow_used} spilled to the overflow (flags {flag_names(st.flags)})")
    say(f"   shadow {digest(s, Side.SHADOW)}: still the point in time")
    check(digest(s, Side.SHADOW) == pit, "the compact shadow kept its point in time")
    check(st.overflow_used == 16 - st.shadow_slots, "the chunks beyond the shadow spilled")

    s.update(Direction.TO_SHADOW)
    s.wait()
    st = s.status()
    say(f"   update to shadow: chunks freed; shadow {st.shadow_slots_used} used, "
        f"overflow {ov.status().chunks_used} used")
    check(digest(s, Side.SHADOW) == digest(s, Side.MASTER), "update makes shadow = master")
    return s, ov


def group_update(eng: Engine, sets: list[Set]) -> None:
    say("4. Group update of sets 1 and 2: one point in time for both, all or nothing")
    for i, s in enumerate(sets):
        s.write(Side.MASTER, 0, bytes([0x10 + i]) * (4 * CHUNK))
    say("   wrote to both masters: " + "  ".join(
        f"set {i + 1} differs in {s.status().diff_chunks} chunks" for i, s in enumerate(sets)))
    frozen = eng.group_copy(sets, Direction.TO_SHADOW)
    for s in sets:
        s.wait()
    say(f"   group update done; writes were held for {frozen * 1000:.1f} ms")
    for i, s in enumerate(sets):
        m, sh = digest(s, Side.MASTER), digest(s, Side.SHADOW)
        say(f"   set {i + 1}: master {m}  shadow {sh}  -> match")
        check(m == sh, "a group update makes every shadow = its master")


# ---- the bitmap volume, as docs/bitmap-format.md describes it --------------------------------


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def show_header(path: Path) -> None:
    with path.open("rb") as f:
        h = f.read(4096)
    magic = h[:8].decode("ascii", "replace")
    (version,) = struct.unpack_from("<I", h, 8)
    chunk, kind, _flags, state = struct.unpack_from("<IIII", h, 32)
    states = {1: "clean", 2: "dirty", 3: "disabled"}
    crc_ok = struct.unpack_from("<I", h, 4092)[0] == crc32c(h[:4092])
    say(f"   {path.name}: magic {magic}, version {version}, state {states.get(state, '?')}, "
        f"{Kind(kind).name.lower()}, chunk {chunk // KIB} KiB, "
        f"CRC-32C {'ok' if crc_ok else 'BAD'}")
    check(magic == "PTCOPYBM" and version == 1 and state == 1 and crc_ok,
          "a closed set leaves a clean, valid bitmap header")


# ---- main ------------------------------------------------------------------------------------


@contextmanager
def workdir(given: Path | None, keep: bool) -> Iterator[tuple[Volumes, bool]]:
    """Yields the volume maker and whether the files are left behind."""
    if given is None:
        with tempfile.TemporaryDirectory(prefix="ptcopy-demo-") as tmp:
            yield Volumes(Path(tmp)), False
        return
    vols = Volumes(given)
    try:
        yield vols, keep
    finally:
        if not keep:
            vols.remove()


def run(vols: Volumes) -> None:
    t0 = time.monotonic()
    say(f"ptcopy demo: volumes are sparse files in {vols.where}")
    with Engine() as eng:
        say()
        dep = dependent_set(eng, vols)
        say()
        ind = independent_set(eng, vols)
        say()
        compact_set(eng, vols)
        say()
        group_update(eng, [dep, ind])
    say()
    say("Closed every set; each bitmap volume now has a clean header (docs/bitmap-format.md):")
    show_header(vols.where / "dep-bitmap.img")
    say()
    say(f"ptcopy demo: all checks passed in {time.monotonic() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ptcopy.demo",
                                 description="Show ptcopy's engine on small file volumes.")
    ap.add_argument("--dir", type=Path, help="make the volumes here instead of a temporary "
                    "directory (the files must not exist yet)")
    ap.add_argument("--keep", action="store_true",
                    help="with --dir: leave the volumes there to inspect them")
    args = ap.parse_args(argv)
    if args.keep and args.dir is None:
        ap.error("--keep needs --dir")
    if args.dir is not None and not args.dir.is_dir():
        ap.error(f"--dir {args.dir}: not a directory")
    try:
        with workdir(args.dir, args.keep) as (vols, kept):
            run(vols)
            if kept:
                say(f"volumes left in {vols.where}")
    except PtcopyError as e:
        print(f"ptcopy demo: engine error ({e.name}): {e.message}", file=sys.stderr)
        return 2
    except FileExistsError as e:
        print(f"ptcopy demo: {e.filename} already exists; use an empty --dir", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"ptcopy demo: {e}", file=sys.stderr)
        return 2
    except CheckFailed as e:
        print(f"ptcopy demo: CHECK FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
