"""Command line of ptcopyd."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import stat
import sys

from ptcopy import __version__, system_files
from ptcopy.daemon.app import Daemon
from ptcopy.daemon.clock import FileClock
from ptcopy.daemon.service import Service


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ptcopyd", description="ptcopy's system daemon: "
                                "point-in-time copy sets on D-Bus as org.ptcopy.Imaging1",
                                epilog=system_files.help_epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bus", metavar="ADDRESS",
                   help="D-Bus address to serve on (default: the system bus)")
    p.add_argument("--state-dir", default="/var/lib/ptcopy",
                   help="where the state database lives (default: %(default)s)")
    p.add_argument("--run-dir", default="/run/ptcopy",
                   help="where served volumes are mounted (default: %(default)s)")
    p.add_argument("--file-volumes", action="append", metavar="DIR",
                   help="a directory whose files may be used as volumes (repeatable; "
                        "default: STATE_DIR/volumes)")
    p.add_argument("--data-path", choices=["auto", "kernel", "userspace", "none"],
                   default="auto",
                   help="how volumes are served: device-mapper (kernel) where the kernel has "
                        "the targets, else FUSE + loop devices (userspace); auto picks "
                        "(default: %(default)s)")
    p.add_argument("--volumes", choices=["host", "used"], default="host",
                   help="which Volume objects to export: every block device of the host "
                        "(udev) or only the volumes sets and overflow volumes use "
                        "(default: %(default)s)")
    p.add_argument("--job-retention", type=float, default=900.0, metavar="SECONDS",
                   help="how long finished jobs stay readable (default: %(default)s)")
    p.add_argument("--host-probe-interval", type=float, default=60.0, metavar="SECONDS",
                   help="how often to probe the registered remote hosts, read-only over SSH "
                        "(0: only when asked; default: %(default)s)")
    p.add_argument("--test-clock", metavar="FILE", help=argparse.SUPPRESS)
    # tests only: schedules go by the time FILE holds (seconds since the epoch), read again
    # on SIGUSR1 (ptcopy.daemon.clock.FileClock)
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"ptcopyd {__version__}")
    return p.parse_args(argv)


LOCK_NAME = "ptcopyd.lock"


class AlreadyRunning(Exception):
    """Another ptcopyd holds the state directory's lock."""


def _lock_holder(fd: int) -> str:
    """Who holds the lock on this open file: the PID the holder wrote into it or, when it has
    not written it yet, the PID /proc/locks gives for a FLOCK lock on this inode."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        if text.isdigit():
            return text
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError), open("/proc/locks", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" ("->" marks a waiter)
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
                return fields[4]
    return "?"


def lock_state_dir(state_dir: str) -> int:
    """One ptcopyd per state directory: an exclusive flock on STATE_DIR/ptcopyd.lock, taken
    before anything reads or writes state, volumes or the run directory. The lock dies with
    the process, so a killed daemon never blocks its restart. Returns the descriptor, which
    must stay open as long as the daemon runs."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY,
                     0o600)
    except OSError as e:
        why = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise AlreadyRunning(f"cannot open the lock file {path}: {why}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AlreadyRunning(f"the lock file {path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another ptcopyd (pid {_lock_holder(fd)}) is using the state directory "
                f"{state_dir}; stop it first (or give this one another --state-dir)") from None
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="ptcopyd[%(process)d] %(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("ptcopyd: must run as root (it serves block devices)", file=sys.stderr)
        return 1
    try:
        lock_fd = lock_state_dir(args.state_dir)
    except (AlreadyRunning, OSError) as e:
        print(f"ptcopyd: {e}", file=sys.stderr)
        return 1
    file_dirs = args.file_volumes or [os.path.join(args.state_dir, "volumes")]
    for d in file_dirs:
        os.makedirs(d, mode=0o700, exist_ok=True)
    try:
        clock = FileClock(args.test_clock) if args.test_clock else None
    except (OSError, ValueError) as e:
        print(f"ptcopyd: --test-clock {args.test_clock}: {e}", file=sys.stderr)
        return 1
    service = Service(args.state_dir, args.run_dir, file_dirs, args.data_path)
    try:
        service.restore()
        asyncio.run(Daemon(service, args.bus, job_retention=args.job_retention,
                           volumes=args.volumes, clock=clock,
                           host_probe_interval=max(0.0, args.host_probe_interval)).run())
    finally:
        service.stop()
        os.close(lock_fd)   # only now may another ptcopyd take the state directory
    return 0


if __name__ == "__main__":
    sys.exit(main())
