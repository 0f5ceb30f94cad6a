"""One ptcopyd process (``python -m ptcopy.daemon.main``) on a private bus, with its own state,
run and volume directories, and what it leaves behind checked when it stops."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ptcopy.datapath import blockdev as loopdev
from ptcopy.engine import Kind, bitmap_size
from tests.helpers.bus import PrivateBus
from tests.helpers.names import BUS_NAME, MIB, REPO
from tests.helpers.system import mounts_under


@dataclass
class Ptcopyd:
    """One ptcopyd process (restartable on the same state directory)."""

    bus: PrivateBus
    base: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state_dir = self.base / "state"
        self.run_dir = self.base / "run"
        self.vol_dir = self.base / "vols"
        self.log_path = self.base / "ptcopyd.log"
        self.vol_dir.mkdir(parents=True, exist_ok=True)
        self._n = 0

    # -- process --

    def command(self) -> list[str]:
        # PTCOPY_DAEMON_COVERAGE=1 (with coverage importable, COVERAGE_FILE set): measure the
        # daemon itself; SIGTERM ends it normally, so its data is written
        run = ["-m", "coverage", "run", "--parallel-mode", "--source=ptcopy"] \
            if os.environ.get("PTCOPY_DAEMON_COVERAGE") == "1" else []
        return [sys.executable, *run, "-m", "ptcopy.daemon.main", "--bus", self.bus.address,
                "--state-dir", str(self.state_dir), "--run-dir", str(self.run_dir),
                "--file-volumes", str(self.vol_dir),
                # only the volumes in use: these tests count objects, and the host's other
                # block devices come and go (tests/udev covers discovery)
                *([] if "--volumes" in self.args else ["--volumes", "used"]),
                # these tests are about the userspace path (FUSE files, loop devices), which
                # "auto" would not pick on a kernel with device-mapper
                *([] if "--data-path" in self.args else ["--data-path", "userspace"]),
                *self.args]

    def start(self, timeout: float = 30) -> None:
        """Start the process and wait until it owns the bus name."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting (several daemons then start side by side)."""
        assert self.proc is None or self.proc.poll() is not None, "ptcopyd is already running"
        with self.log_path.open("ab") as log:
            log.write(f"---- start: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=REPO)

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the launched process owns the bus name; fails when it exits first."""
        assert self.proc is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"ptcopyd exited with {self.proc.returncode} at start:\n"
                                     f"{self.log_tail()}")
            if self.bus.owner_pid() == self.proc.pid:
                return
            time.sleep(0.05)
        raise AssertionError(f"ptcopyd did not take {BUS_NAME} in {timeout}s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM; the exit status (also checked by :meth:`check_clean`)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ptcopyd did not stop on SIGTERM in {timeout}s:\n"
                                 f"{self.log_tail()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def leftovers(self) -> list[str]:
        """Mounts under the run dir and loop devices backed by files under it."""
        loops = loopdev.loops_backed_by(str(self.run_dir))
        return mounts_under(self.run_dir) + [f"{lp.device} -> {lp.backing_file}"
                                                    for lp in loops]

    def stop_and_check(self) -> None:
        """Stop with SIGTERM: exit status 0, nothing left mounted or attached."""
        rc = self.stop()
        assert rc == 0, f"ptcopyd exited with {rc} on SIGTERM:\n{self.log_tail()}"
        left = self.leftovers()
        assert not left, f"ptcopyd left behind after SIGTERM: {left}"

    def cleanup(self) -> None:
        """Whatever happened: stop the process, then remove what it left behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        remove_leftovers(self.run_dir)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- volumes --

    def volume(self, size: int, name: str | None = None, data: bytes | None = None) -> str:
        """A sparse file volume under the daemon's file-volume directory."""
        if name is None:
            self._n += 1
            name = f"v{self._n}.img"
        p = self.vol_dir / name
        with p.open("xb") as f:
            f.truncate(size)
            if data is not None:
                f.write(data)
        return str(p)

    def set_volumes(self, master: int = 16 * MIB, shadow: int | None = None, *,
                    chunk_size: int = 0, kind: str = "dependent",
                    master_data: bytes | None = None) -> tuple[str, str, str]:
        shadow = master if shadow is None else shadow
        k = Kind.DEPENDENT if kind == "dependent" else Kind.INDEPENDENT
        m = self.volume(master, data=master_data)
        s = self.volume(shadow)
        b = self.volume(bitmap_size(master, shadow, chunk_size, k))
        return m, s, b


def remove_leftovers(run_dir: Path) -> None:
    """What a ptcopyd with this run directory left behind (it no longer runs): its served
    volumes, loop devices backed by files under it, mounts under it."""
    from ptcopy.datapath.userspace import cleanup_stale
    with contextlib.suppress(Exception):
        cleanup_stale(str(run_dir / "volumes"))
    for lp in loopdev.loops_backed_by(str(run_dir)):
        with contextlib.suppress(Exception):
            loopdev.detach(lp.device)
    for mp in sorted(mounts_under(run_dir), reverse=True):
        with contextlib.suppress(Exception):
            loopdev.lazy_unmount(mp)


def finish(daemons: list[Ptcopyd], *, check_log: bool = True) -> None:
    """Stop every daemon with SIGTERM (exit 0, nothing left behind), clean up regardless; a
    traceback in a daemon's log is a failure too (an unexpected exception somewhere)."""
    errors: list[str] = []
    for d in daemons:
        try:
            if d.running:
                d.stop_and_check()
            if check_log and "Traceback" in d.log_text():
                errors.append(f"ptcopyd logged a traceback:\n{d.log_tail(80)}")
        except AssertionError as e:
            errors.append(str(e))
        finally:
            d.cleanup()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)

