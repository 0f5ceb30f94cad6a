"""A causal chain of writes across several block devices, and reading back which of its writes a
copy holds: the check that a point in time across hosts is one consistent cut."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from tests.helpers.blockio import write_dev

SLOT = 4096


class ChainWriter:
    """One thread writing a global sequence round-robin over the devices: write k (the value k,
    in slot (k-1) // n of device (k-1) % n) starts only once write k-1 was acknowledged, so the
    writes form one causal chain across devices. A consistent cut holds a prefix of it."""

    def __init__(self, devs: Sequence[str], size: int, pause: float = 0.0) -> None:
        self.devs = list(devs)
        self.size = size
        self.pause = pause       # seconds between writes: a chain that outlasts slow callers
        self.acked = 0           # writes 1..acked are acknowledged
        self.started = 0         # writes 1..started were issued
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        n = len(self.devs)
        try:
            k = 1
            while not self.stop.is_set() and (k - 1) // n < self.size // SLOT:
                self.started = k
                dev, slot = self.devs[(k - 1) % n], (k - 1) // n
                write_dev(dev, slot * SLOT, k.to_bytes(8, "little") * (SLOT // 8))
                self.acked = k
                k += 1
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as e:  # reported by end()
            self.error = e

    @property
    def total(self) -> int:
        """Writes in the whole chain (it stops after the last)."""
        return len(self.devs) * (self.size // SLOT)

    def wait_for(self, k: int, timeout: float = 60) -> None:
        """Until write k is acknowledged; fails if the chain ended or stalled before."""
        deadline = time.monotonic() + timeout
        while self.acked < k:
            assert self.thread.is_alive() and self.error is None, \
                f"the chain ended at {self.acked} before write {k}: {self.error}"
            assert time.monotonic() < deadline, f"write {k} not acknowledged in {timeout} s"
            time.sleep(0.01)

    def end(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


def chain_seqs(path: str, index: int, n: int, size: int) -> list[int]:
    """The sequence numbers a copy of device ``index`` (of ``n``) holds: slot s holds
    k = s*n + index + 1, or nothing."""
    out = []
    with open(path, "rb") as f:
        data = f.read(size)
    for slot in range(size // SLOT):
        k = int.from_bytes(data[slot * SLOT:slot * SLOT + 8], "little")
        if k:
            assert k == slot * n + index + 1, f"slot {slot} of device {index} holds {k}"
            out.append(k)
    return out
