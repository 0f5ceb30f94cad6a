"""Child process for the imported shadow's crash test (tests/engine/test_imported.py).

Usage: ``python tests/engine/import_crash_child.py VOLUME BITMAP JOURNAL SEED THREADS``: imports
VOLUME (or opens the import again when BITMAP already holds one), then THREADS threads write
random ranges of random bytes through its shadow side until the process is killed. The journal
gets ``READY`` once the import is served, then ``W <off> <len>`` before each write and
``D <off> <len>`` once it returned (one O_APPEND write per line).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time

from ptcopy.engine import Engine, Side


def main() -> None:
    volume, bitmap, journal, seed, threads = sys.argv[1:6]
    eng = Engine()
    with open(bitmap, "rb") as f:
        fresh = f.read(8) != b"PTCOPYBM"
    s = eng.import_shadow(volume, bitmap) if fresh else eng.open_imported(volume, bitmap)
    size = s.status().master_size
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"READY\n")

    def work(t: int) -> None:
        rng = random.Random(f"{seed}:{t}")
        while True:
            length = rng.randint(1, 96 * 1024)
            off = rng.randrange(0, size - length)
            os.write(fd, f"W {off} {length}\n".encode())
            s.write(Side.SHADOW, off, rng.randbytes(length))
            os.write(fd, f"D {off} {length}\n".encode())

    for t in range(int(threads)):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
