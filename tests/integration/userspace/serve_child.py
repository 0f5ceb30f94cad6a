"""Child process for the userspace crash tests (test_userspace_crash.py).

Usage: ``python tests/userspace/serve_child.py '<json>'`` with the keys ``master``, ``shadow``,
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
from ptcopy.engine import Engine, Kind


def main() -> None:
    args = json.loads(sys.argv[1])
    engine = Engine()
    if args["mode"] == "enable":
        kind = Kind.INDEPENDENT if args["kind"] == "independent" else Kind.DEPENDENT
        s = engine.enable(args["master"], args["shadow"], args["bitmap"], kind,
                          chunk_size=args.get("chunk_size", 0),
                          copy_delay_ms=args.get("copy_delay_ms", 0),
                          copy_units=args.get("copy_units", 0))
    else:
        s = engine.open(args["master"], args["shadow"], args["bitmap"])
    up = UserspacePath(engine, args["run_dir"])
    served = up.serve("crash", s)
    print(f"READY {served.master_device} {served.shadow_device}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
