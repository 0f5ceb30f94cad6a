"""The writer process of figure sigkill: random extents to the served masters with O_DIRECT,
an fsync after each, every write logged before it starts and once it was acknowledged.

    .venv/bin/python -m tests.reliability.writer LOG SEED DEVICE...
"""

from __future__ import annotations

import mmap
import os
import random
import sys
import time

BLOCK = 4096


def block_data(seed: int, seq: int, length: int) -> bytes:
    return random.Random(seed * 1_000_003 + seq).randbytes(length)


def writer_main(log_path: str, seed: int, devs: list[str]) -> int:
    """Write random extents to ``devs`` with O_DIRECT, fsync after each; log 'A seq dev off len'
    before a write and 'K seq' once it and its fsync returned. Stops at the first error (the
    daemon was killed) or SIGTERM."""
    rng = random.Random(seed)
    fds = [os.open(d, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC) for d in devs]
    sizes = [os.lseek(fd, 0, os.SEEK_END) for fd in fds]
    buf = mmap.mmap(-1, 16 * BLOCK)
    with open(log_path, "a", buffering=1) as log:
        seq = 0
        while True:
            seq += 1
            i = rng.randrange(len(fds))
            n = rng.randint(1, 16)
            off = rng.randrange(sizes[i] // BLOCK - n + 1) * BLOCK
            data = block_data(seed, seq, n * BLOCK)
            buf[:len(data)] = data
            log.write(f"A {seq} {i} {off} {len(data)}\n")
            try:
                if os.pwritev(fds[i], [memoryview(buf)[:len(data)]], off) != len(data):
                    log.write(f"E {seq} short\n")
                    return 0
                os.fsync(fds[i])
            except OSError as e:
                log.write(f"E {seq} {e.errno}\n")
                return 0
            log.write(f"K {seq} {time.time():.3f}\n")


if __name__ == "__main__":
    sys.exit(writer_main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
