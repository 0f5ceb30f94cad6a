"""Commands and mount tables: run a tool (failing with its output), make a file system, find
mounts, open a file for the length of a block."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator


def run(*cmd: str, timeout: float | None = 300) -> str:
    """Run a command; its stdout. Fails with its output when it fails or outlives ``timeout``."""
    r = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def mkfs(dev: str) -> None:
    # lazy init off: no kernel thread writes inode tables behind the test's back
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev)


def sync() -> None:
    run("sync")


def is_mounted(path: str | os.PathLike[str]) -> bool:
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4].replace("\\040", " ") == want for line in f)


def ptcopy_mounts() -> list[str]:
    """Mount points of every ptcopy FUSE mount on the machine."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "fuse.ptcopy":
                found.append(fields[4].replace("\\040", " "))
    return found


def mounts_under(prefix: str | os.PathLike[str]) -> list[str]:
    """Every mount point at or under ``prefix`` (any file system type)."""
    base = os.path.realpath(prefix)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == base or mp.startswith(base + "/"):
                found.append(mp)
    return found


@contextlib.contextmanager
def opened(path: str, flags: int) -> Iterator[int]:
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL if it has not ended in ``timeout`` seconds; its exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
