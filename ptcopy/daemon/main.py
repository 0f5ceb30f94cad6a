"""Command line of ptcopyd."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ptcopy import __version__
from ptcopy.daemon.app import Daemon
from ptcopy.daemon.service import Service


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ptcopyd", description="ptcopy's system daemon: "
                                "point-in-time copy sets on D-Bus as org.ptcopy.Imaging1")
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
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"ptcopyd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="ptcopyd[%(process)d] %(levelname)s %(name)s: %(message)s")
    if os.geteuid() != 0:
        print("ptcopyd: must run as root (it serves block devices)", file=sys.stderr)
        return 1
    file_dirs = args.file_volumes or [os.path.join(args.state_dir, "volumes")]
    for d in file_dirs:
        os.makedirs(d, mode=0o700, exist_ok=True)
    service = Service(args.state_dir, args.run_dir, file_dirs, args.data_path)
    try:
        service.restore()
        asyncio.run(Daemon(service, args.bus, job_retention=args.job_retention,
                           volumes=args.volumes).run())
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
