"""Child process for the crash tests (tests/engine/test_crash.py).

Usage: ``python tests/engine/crash_child.py '<json>'`` with the keys:

- ``master``, ``shadow``, ``bitmap``: volume paths.
- ``mode``: ``"enable"`` (enable a new set), ``"open"`` (open an existing one) or ``"restore"``:
  open every set of ``sets`` (a list of ``{"shadow", "bitmap", "overflow"}``, the overflow path
  optional) on ``master``, then start a copy (``full``) or update of set ``source`` to the
  master, throttled by ``copy_delay_ms`` and ``copy_units``; the load then writes the master
  through that set.
- ``kind``: ``"independent"`` or ``"dependent"`` (enable only).
- ``chunk_size``, ``copy_delay_ms``, ``copy_units``: set configuration (enable only).
- ``journal``: path of the progress journal.
- ``seed``: seeds the load; the data of op ``i`` is :func:`op_data` ``(seed, i, length)``.
- ``ops``: ``0`` = only idle after setting up; otherwise run a load until killed.
- ``shadow_prob``, ``update_prob``, ``full_prob``: chance that an op writes the shadow / is an
  update or copy to the shadow / a copy is full rather than an update.
- ``max_len``: the longest write; ``write_limit``: writes stay below this offset (default: the
  whole master).
- ``threads``: when given, that many threads write the master at once instead (first writes
  batched by the engine's group commit), thread ``t`` only in its own slice ``t`` of
  ``write_limit`` split evenly, mostly moving forward (first writes) and now and then going back
  (rewrites). Op numbers are ``t + threads * k``; the journal is not synced (a SIGKILL keeps the
  page cache).

The journal is a text file, one line per event, each line made durable (os.fsync) before the
child goes on:

- ``READY <pid>``: the set is enabled or opened; the load starts now.
- ``W <i> <side> <offset> <length>`` before write ``i`` (side: m or s); ``D <i>`` once it returned.
- ``U <i> <full>`` before an update (full=0) or copy (full=1) to the shadow; ``UD <i>`` once it
  returned, ``UB <i>`` if refused because a copy runs (nothing changed).
- ``E <i> <error class> <message>``: an unexpected error; the child then idles.

The child never exits on its own: it loops until it is killed.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any

from ptcopy.engine import CopyInProgress, Direction, Engine, Kind, Set, Side


def op_data(seed: int, i: int, length: int) -> bytes:
    """The bytes op ``i`` of a run seeded ``seed`` writes (the parent recomputes them)."""
    return random.Random(f"{seed}:{i}").randbytes(length)


class Journal:
    def __init__(self, path: str, sync: bool = True) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.sync = sync

    def log(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())   # O_APPEND: one line is one atomic write
        if self.sync:
            os.fsync(self.fd)


def threaded_load(s: Set, args: dict[str, Any], journal: Journal, limit: int) -> None:
    """``threads`` threads writing the master at once, each in its own slice (see the usage)."""
    n = args["threads"]
    per = limit // n
    max_len = args.get("max_len", 65536)

    def work(t: int) -> None:
        rng = random.Random(f"{args['seed']}:thread:{t}")
        lo, hi = t * per, (t + 1) * per
        pos = lo
        k = 0
        while True:
            i = t + n * k
            k += 1
            length = rng.randint(1, max_len)
            if pos >= hi or rng.random() < 0.1:   # a rewrite somewhere already written
                off = rng.randrange(lo, max(lo + 1, min(pos, hi)))
            else:
                off = pos
                pos += length
            length = max(1, min(length, hi - off))
            data = op_data(args["seed"], i, length)
            journal.log(f"W {i} m {off} {length}")
            try:
                s.write(Side.MASTER, off, data)
            except Exception as exc:   # report, then wait for the kill
                msg = str(exc).replace("\n", " ")
                journal.log(f"E {i} {type(exc).__name__} {msg}")
                return
            journal.log(f"D {i}")

    for t in range(n):
        threading.Thread(target=work, args=(t,), daemon=True).start()


def set_from_args(engine: Engine, args: dict[str, Any]) -> Set:
    """The set the child runs: enabled (mode "enable", with kind, chunk_size, copy_delay_ms and
    copy_units) or opened (mode "open") from the master, shadow and bitmap paths in args."""
    if args["mode"] == "enable":
        kind = Kind.INDEPENDENT if args["kind"] == "independent" else Kind.DEPENDENT
        return engine.enable(args["master"], args["shadow"], args["bitmap"], kind,
                             chunk_size=args.get("chunk_size", 0),
                             copy_delay_ms=args.get("copy_delay_ms", 0),
                             copy_units=args.get("copy_units", 0))
    return engine.open(args["master"], args["shadow"], args["bitmap"])


def restore_from_args(engine: Engine, args: dict[str, Any]) -> Set:
    """Mode "restore": every set of the master opened, the restore from set ``source`` started."""
    sets = []
    for spec in args["sets"]:
        ov = engine.open_overflow(spec["overflow"]) if spec.get("overflow") else None
        sets.append(engine.open(args["master"], spec["shadow"], spec["bitmap"], overflow=ov))
    src = sets[args["source"]]
    src.set_copy_params(args.get("copy_delay_ms", 0), args.get("copy_units", 0) or 256)
    if args.get("full"):
        src.copy(Direction.TO_MASTER)
    else:
        src.update(Direction.TO_MASTER)
    return src


def idle() -> None:
    while True:
        time.sleep(3600)


def main() -> None:
    args = json.loads(sys.argv[1])
    journal = Journal(args["journal"], sync=not args.get("threads"))
    engine = Engine()
    start = restore_from_args if args["mode"] == "restore" else set_from_args
    s = start(engine, args)
    size = s.status().master_size
    journal.log(f"READY {os.getpid()}")
    if not args.get("ops"):
        idle()
    rng = random.Random(args["seed"])
    limit = min(args.get("write_limit") or size, size)
    if args.get("threads"):
        threaded_load(s, args, journal, limit)
        idle()
    max_len = args.get("max_len", 65536)
    i = 0
    while True:
        i += 1
        try:
            if rng.random() < args.get("update_prob", 0.0):
                full = 1 if rng.random() < args.get("full_prob", 0.3) else 0
                journal.log(f"U {i} {full}")
                try:
                    if full:
                        s.copy(Direction.TO_SHADOW)
                    else:
                        s.update(Direction.TO_SHADOW)
                except CopyInProgress:
                    journal.log(f"UB {i}")
                else:
                    journal.log(f"UD {i}")
                continue
            side = Side.SHADOW if rng.random() < args.get("shadow_prob", 0.0) else Side.MASTER
            length = rng.randint(1, max_len)
            # now and then a write that ends exactly at the limit
            at_end = rng.random() < 0.1
            off = max(0, limit - length) if at_end else rng.randrange(0, limit)
            length = min(length, limit - off)
            data = op_data(args["seed"], i, length)
            journal.log(f"W {i} {'m' if side == Side.MASTER else 's'} {off} {length}")
            s.write(side, off, data)
            journal.log(f"D {i}")
        except Exception as exc:   # report, then wait for the kill
            msg = str(exc).replace("\n", " ")
            journal.log(f"E {i} {type(exc).__name__} {msg}")
            idle()


if __name__ == "__main__":
    main()
