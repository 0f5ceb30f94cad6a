"""Child process for the userspace crash tests (test_userspace_crash.py).

Usage: ``python -m tests.integration.userspace.serve_child '<json>'`` (from the repository
root) with the keys ``master``, ``shadow``,
``bitmap`` (volume paths), ``run_dir``, ``mode`` (``"enable"`` or ``"open"``), ``kind``
(``"independent"`` or ``"dependent"``, enable only), ``chunk_size``, ``copy_delay_ms`` and
``copy_units`` (enable only).

It enables (or opens) the set, serves it with :class:`UserspacePath` as ``crash``, prints
``READY <master device> <shadow device>`` on stdout and then idles until it is killed: the
parent runs the write load against the devices and SIGKILLs this process.
"""

from __future__ import annotations

import json
import sys
import time

from ptcopy.datapath.userspace import UserspacePath
from ptcopy.engine import Engine
from tests.engine.crash_child import set_from_args


def main() -> None:
    args = json.loads(sys.argv[1])
    engine = Engine()
    s = set_from_args(engine, args)
    up = UserspacePath(engine, args["run_dir"])
    served = up.serve("crash", s)
    print(f"READY {served.master_device} {served.shadow_device}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
