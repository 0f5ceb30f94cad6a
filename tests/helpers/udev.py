"""Volume discovery's test tools: loop devices over files of one test (detached at the end
whatever happened), and systemd-udevd, started when the machine runs none."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from ptcopy.daemon.discovery import udevd_running
from ptcopy.datapath import blockdev as loopdev
from tests.helpers.system import terminate

UDEVD = "/lib/systemd/systemd-udevd"


class Udevd:
    """systemd-udevd, started here when nothing runs it (and then stopped here)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, log: Path) -> None:
        if udevd_running():
            return
        if not os.path.exists(UDEVD):
            pytest.skip(f"needs {UDEVD} (Debian's udev package)")
        self.proc = subprocess.Popen([UDEVD], stdout=log.open("ab"),
                                     stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while not udevd_running():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"systemd-udevd did not start: {log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None


class Loops:
    """Loop devices over files of this test, detached at the end whatever happened."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.devices: list[str] = []
        self.mounts: list[str] = []
        self._n = 0

    def file(self, size: int, *, ext4: bool = False, table: str = "") -> Path:
        self._n += 1
        p = self.base / f"loop{self._n}.img"
        with p.open("xb") as f:
            f.truncate(size)
        if ext4:
            subprocess.run(["mkfs.ext4", "-q", "-F", str(p)], check=True)
        if table:
            subprocess.run(["sfdisk", "-q", str(p)], input=table.encode(), check=True,
                           capture_output=True)
        return p

    def attach(self, path: Path, *, partitions: bool = False) -> str:
        args = ["losetup", "--find", "--show", *(["--partscan"] if partitions else []),
                str(path)]
        dev = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
        self.devices.append(dev)
        name = os.path.basename(dev)
        if partitions and not any(p.startswith(name + "p")
                                  for p in os.listdir(f"/sys/class/block/{name}")):
            # some kernels do not scan a loop device's table on attach: partx adds the
            # partitions (BLKPG), with the same add uevents
            subprocess.run(["partx", "--add", dev], check=True, capture_output=True)
        return dev

    def detach(self, dev: str) -> None:
        loopdev.detach(dev)
        with contextlib.suppress(ValueError):
            self.devices.remove(dev)

    def mount(self, dev: str, where: Path) -> None:
        where.mkdir()
        subprocess.run(["mount", dev, str(where)], check=True)
        self.mounts.append(str(where))

    def cleanup(self) -> None:
        for mp in reversed(self.mounts):
            subprocess.run(["umount", mp], check=False, capture_output=True)
        for dev in self.devices:
            with contextlib.suppress(loopdev.LoopError):
                loopdev.detach(dev)
