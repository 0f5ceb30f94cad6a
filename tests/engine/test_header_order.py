"""Security review finding 14: a stale bitmap header must never land over a newer one.

Overflow attach and detach wrote the set's header directly while a group-commit flush could
have encoded its header earlier and be waiting in fdatasync for its pages: the flush then wrote
its older header (naming the detached overflow, or not naming the attached one) over the newer
one. After a crash the set would reopen against the wrong overflow. Now every header write goes
through the group commit, one run at a time, each encoding the state when it starts.

The stress: one thread marks chunks (each mark is a flush with a page and a header) while the
test attaches or detaches the overflow; then the marker stops, so the flush it had in flight is
the last header write, and the header on disk must name the overflow exactly when the set has it.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

from ptcopy.engine import CHUNK_MIN, Engine, Kind, Set, bitmap_size
from tests.helpers.names import MakeVol

CHUNK = CHUNK_MIN
NCHUNKS = 16384
ROUNDS = 60


def disk_overflow_uuid(bitmap: Path) -> bytes:
    with bitmap.open("rb") as f:
        h = f.read(4096)
    return h[120:136]


def marker(s: Set, start: int, stop: threading.Event, errs: list[BaseException]) -> None:
    c = start
    try:
        while not stop.is_set():
            s.mark(c % NCHUNKS, 1)
            c += 1
    except BaseException as e:  # reported by the test
        errs.append(e)


def test_detach_header_is_not_overwritten_by_an_older_flush(tmp_vol: MakeVol) -> None:
    size, shadow = NCHUNKS * CHUNK, 64 * CHUNK
    m, sh = tmp_vol(size, "m"), tmp_vol(shadow, "s")
    bm = tmp_vol(bitmap_size(size, shadow, CHUNK, Kind.DEPENDENT), "b")
    with Engine() as eng:
        s = eng.enable(m, sh, bm, Kind.DEPENDENT, chunk_size=CHUNK)
        ovp = tmp_vol(2 << 20, "ov")
        ov = eng.init_overflow(ovp, CHUNK)
        want = {"attach": ov.status().uuid.bytes, "detach": b"\0" * 16}
        for r in range(ROUNDS):
            for step in ("attach", "detach"):
                stop = threading.Event()
                errs: list[BaseException] = []
                t = threading.Thread(target=marker, args=(s, r * 400, stop, errs), daemon=True)
                t.start()
                s.attach_overflow(ov) if step == "attach" else s.detach_overflow()
                stop.set()   # the marker's flush in flight, if any, is the last header write
                t.join(60)
                assert not t.is_alive() and not errs, errs
                assert disk_overflow_uuid(bm) == want[step], \
                    f"round {r}: a header encoded before the {step} landed after it"
        s.attach_overflow(ov)
        s.close()
        assert disk_overflow_uuid(bm) == ov.status().uuid.bytes
        ov.close()
        # the volumes agree with each other: the set reopens with its overflow
        ov = eng.open_overflow(ovp)
        s = eng.open(m, sh, bm, overflow=ov)
        assert s.status().overflow_uuid == ov.status().uuid
        assert struct.unpack_from("<I", bm.read_bytes()[:4096], 44)[0] == 2   # dirty: open
        s.close()
        ov.close()
