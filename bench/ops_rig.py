"""What bench/run_ops.py measures through: a real ptcopyd (userspace data path) on a private
dbus-daemon, loop-device volumes over files on a real disk, a dbus-fast client, and a stack of
clean-ups that undoes all of it, in reverse order, whatever happened.

The daemon and bus are the test tiers' own (tests/helpers/daemon.py, tests/helpers/bus.py), so
the bench runs ptcopyd exactly as the integration tests do.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from common import fill_random, fill_zero, log, sparse_file

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:   # tests.helpers: the test tiers' daemon, bus and client
    sys.path.insert(0, str(REPO))

from ptcopy.datapath import blockdev as loopdev  # noqa: E402
from ptcopy.engine import Kind, bitmap_size  # noqa: E402
from tests.helpers.bus import PrivateBus  # noqa: E402
from tests.helpers.client import Client, Runner, Signals, u  # noqa: E402
from tests.helpers.daemon import Ptcopyd  # noqa: E402
from tests.helpers.names import IJOB, ISET  # noqa: E402

T = TypeVar("T")


class OpsRig:
    """The private bus, ptcopyd, the volumes, the client; ``cleanup()`` undoes everything."""

    def __init__(self, data_dir: Path, *, loops: bool = True) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ops-", dir=data_dir))
        self.loops = loops          # volumes as loop devices (else the files themselves)
        self.cleanups: list[tuple[str, Callable[[], object]]] = []
        self.aio = Runner()
        self.bus: PrivateBus | None = None
        self.daemon: Ptcopyd | None = None
        self.client: Client | None = None
        self.completed: Signals | None = None
        self._n = 0

    # -- clean-ups --

    def on_cleanup(self, what: str, fn: Callable[[], object]) -> None:
        self.cleanups.append((what, fn))

    def cleanup(self) -> list[str]:
        """Undo everything, newest first; what failed (the run then fails too)."""
        failures = []
        try:   # first, so no loop device is detached while the daemon still holds it
            if self.daemon is not None and self.daemon.running:
                self.daemon.stop(timeout=60)
        except Exception as e:  # the clean-up below kills it
            failures.append(f"stop ptcopyd: {e}")
        while self.cleanups:
            what, fn = self.cleanups.pop()
            try:
                fn()
            except Exception as e:  # keep going: everything must be torn down
                failures.append(f"{what}: {e}")
        with contextlib.suppress(Exception):
            self.aio.close()
        # a detached loop device lingers while udev's probe still holds it open
        deadline = time.monotonic() + 15
        while (left := [f"loop device {lp.device} over {lp.backing_file}"
                        for lp in loopdev.loops_backed_by(str(self.root))]) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        if not left:
            shutil.rmtree(self.root, ignore_errors=True)
        return failures + left

    # -- daemon --

    def start(self) -> None:
        """The bus, ptcopyd (userspace data path, only the used volumes) and one client."""
        self.bus = PrivateBus.start()
        self.on_cleanup("stop the private bus", self.bus.stop)
        self.daemon = Ptcopyd(self.bus, self.root / "daemon",
                              ["--log-level", "warning", "--job-retention", "60"])
        self.on_cleanup("stop ptcopyd", self._stop_daemon)
        self.daemon.start()
        log(f"ptcopyd pid {self.daemon.proc.pid if self.daemon.proc else '?'} on "
            f"{self.bus.address}, volumes in {self.root}")
        self.client = self.run(Client.connect(self.bus.address))
        self.on_cleanup("disconnect the client", self.client.disconnect)
        self.completed = self.run(self.client.signals(interface=IJOB, member="Completed"))

    def _stop_daemon(self) -> None:
        assert self.daemon is not None
        try:
            if self.daemon.running:
                self.daemon.stop(timeout=60)
        finally:
            self.daemon.cleanup()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 600) -> T:
        return self.aio.run(coro, timeout)

    @property
    def c(self) -> Client:
        assert self.client is not None
        return self.client

    # -- volumes --

    def volume(self, name: str, size: int, fill: str = "sparse") -> str:
        """A file under the daemon's volume directory (``fill``: random, zero or sparse), as a
        loop device with direct I/O unless the rig uses plain files."""
        assert self.daemon is not None
        path = self.daemon.vol_dir / name
        self.on_cleanup(f"remove {path}", lambda: path.unlink(missing_ok=True))
        {"random": fill_random, "zero": fill_zero, "sparse": sparse_file}[fill](path, size)
        if not self.loops:
            return str(path)
        dev = loopdev.attach(str(path), direct_io=True)
        self.on_cleanup(f"detach {dev}", lambda: loopdev.detach(dev))
        return dev

    def set_volumes(self, prefix: str, size: int, kind: Kind, master_fill: str = "random",
                    ) -> tuple[str, str, str]:
        """Master, shadow and bitmap volumes for one set of ``size`` bytes, 32 KiB chunks."""
        m = self.volume(f"{prefix}.m", size, master_fill)
        s = self.volume(f"{prefix}.s", size, "zero")
        b = self.volume(f"{prefix}.b", bitmap_size(size, size, CHUNK, kind))
        return m, s, b

    # -- calls --

    def create_set(self, name: str, kind: str, vols: tuple[str, str, str]) -> tuple[str, str]:
        """CreateSet with 32 KiB chunks; (set path, job path or '/')."""
        return self.run(self.c.create_set(name, kind, *vols, chunk_size=u(CHUNK)))

    def disable(self, set_path: str) -> None:
        """Disable (unserving takes a while on a busy machine: a generous timeout)."""
        self.run(self.c.ok(set_path, ISET, "Disable", "a{sv}", [{}], timeout=300))

    def master_device(self, set_path: str) -> str:
        dev = str(self.run(self.c.get(set_path, ISET, "MasterDevice")))
        if not dev:
            raise RuntimeError(f"{set_path} has no master device: is the data path serving it?")
        return dev

    def job_end(self, job: str, t0: float, timeout: float = 600) -> float:
        """Seconds from ``t0`` (time.monotonic) to the job's Completed signal; it must have
        succeeded. Job '/': the work ended before the call returned (CreateSet of a set whose
        copy finished at once), so it ends now."""
        assert self.completed is not None
        if job == "/":
            return time.monotonic() - t0
        msg = self.run(self.completed.wait_for(lambda m: m.path == job, timeout), timeout + 10)
        when = self.completed.times[self.completed.got.index(msg)]
        ok, text = msg.body
        if not ok:
            raise RuntimeError(f"job {job} failed: {text}")
        self.completed.got.remove(msg)   # keep the list short
        self.completed.times.remove(when)
        return when - t0

    def call_to_end(self, start: Callable[[], Coroutine[Any, Any, str]]) -> float:
        """Seconds from a call that starts a job to that job's Completed signal."""
        t0 = time.monotonic()
        job = self.run(start())
        return self.job_end(job, t0)


CHUNK = 32 * 1024   # the chunk size of every set here (the engine's default)
