"""A randomized model test of ptcopyd, the way users drive it: D-Bus calls, and I/O on the
devices the daemon serves (``MasterDevice``/``ShadowDevice`` of each set).

The model: each side of each set (its master, its shadow) is a byte array. A write changes one
side (every set on that master sees a master write). ``Copy``/``Update`` X -> Y makes Y equal to X
as it was at the call; for a dependent set an update to the shadow is a new point in time and one
to the master restores it. A group copy does this for every member at one instant. Reads of
either side, at any time, must match the model: on the userspace path also while a copy runs
(both sides stay usable); on the kernel path a copy's target is read-only while it runs (a
restore from an independent shadow: every master device of that master), and a dependent
shadow is taken away while it merges, so the driver waits for the copy before writing the
target (or touching such a shadow) there.

Refusals the contract names are "no change": on the kernel path a group mixing merges and
copies (``WrongType``); a group restoring one master from two shadows (``InvalidArgument``); a copy
while one runs, or while a restore of its master runs (``Busy``, only when a copy of ours may
still be running). The driver then checks at once that
nothing changed. Any other refusal, a failed job, or a byte that differs is a failure.

An aborted copy leaves its target partly copied, so an abort is followed by a full copy in the
same direction. A restart (SIGTERM or SIGKILL, with or without waiting for the jobs first) keeps
what every ended job did; a copy still running at the stop is finished by an Update in its
direction after the restart (the contract promises no more after a crash), then every side of
every set is checked.

A suspend starts a (throttled) copy, suspends it, writes the source, maybe restarts ptcopyd,
and resumes it: the target reads as the point in time all along (on the kernel path a restart
takes a new one, as documented); ``NoCopy`` (it ended first) is "no change". A group hold
freezes every member's source: a write to one started during the hold must not complete until
the release, and a committed release puts the point in time before that write (the kernel
path refuses holds: ``WrongType``). A rename keeps the devices serving: a descriptor of the
master opened before it reads the model's bytes after it. With several sets on one master, a
paused schedule rotates over them: each ``RunNow`` must update the set whose last run was the
longest ago (never: first), and is refused (``Busy``) only while a copy of ours on them, or a
restore of their master, may still run.

Operations are drawn from a seed up front (:func:`generate`), so a run is a seed plus an op list;
a failure names the op where the daemon and the model parted, and :func:`shrink` replays
prefixes and drops ops to get a short sequence that still fails, printed as a replayable list.

The parts: model_ops.py (configurations, operations, the model), model_driver.py (the driver),
this module (running, shrinking, reporting; the names the tests use). Used by
tests/integration/daemon/test_daemon_model.py (userspace path) and
tests/vm/guest/test_kernel_model.py (kernel path, in the VM tier).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import astuple

from tests.helpers.names import MIB
from tests.integration.daemon.model_driver import (
    Driver,
    start_daemon,
)
from tests.integration.daemon.model_ops import (
    CHUNK,
    MASTER,
    Config,
    Divergence,
    Op,
    SetSpec,
    config_for,
    generate,
)

__all__ = [
    "Config",
    "Divergence",
    "Driver",
    "Op",
    "config_for",
    "env_int",
    "first_failure",
    "generate",
    "issue18",
    "replay_request",
    "report",
    "seeds",
    "shrink",
    "start_daemon",
]


# ---- running, shrinking, reporting -------------------------------------------------------------


# A run: (cfg, ops) -> None, raising Divergence. The caller provides a fresh daemon each time.
Runner = Callable[[Config, list[Op]], Awaitable[None]]


async def first_failure(run: Runner, cfg: Config, ops: list[Op]) -> Divergence | None:
    try:
        await run(cfg, ops)
    except Divergence as e:
        return e
    return None


async def shrink(run: Runner, cfg: Config, ops: list[Op], failure: Divergence,
                 deadline: float) -> tuple[list[Op], Divergence]:
    """A shorter op list that still fails (delta debugging): the prefix up to the failing op,
    then runs of ops dropped, halves first, down to single ops, until ``deadline``
    (time.monotonic())."""
    if failure.index < 0:
        return [], failure
    best = ops[:failure.index + 1]
    parts = 2
    while len(best) > 1 and time.monotonic() < deadline:
        size = max(1, len(best) // parts)
        dropped = False
        for start in range(0, len(best), size):
            if time.monotonic() >= deadline:
                break
            trial = best[:start] + best[start + size:]
            got = await first_failure(run, cfg, trial)
            # a failure while setting up is another fault (the ops never ran): not this one
            if got is not None and got.index >= 0:
                best = trial[:got.index + 1] if got.index < len(trial) else trial
                failure = got
                dropped = True
                break
        if dropped:
            parts = max(parts - 1, 2)
        elif size == 1:
            break
        else:
            parts = min(parts * 2, len(best))
    return best, failure


def report(cfg: Config, ops: list[Op], failure: Divergence, path: str,
           original: tuple[int, int] | None = None) -> str:
    lines = [f"{path} path diverged from the model: {cfg.describe()}"]
    if original is not None:
        lines.append(f"(shrunk from op {original[0]} of a {original[1]}-op run)")
    where = "the final check" if failure.index >= len(ops) else f"op {failure.index}"
    lines.append(f"failing at {where}: {failure.text}")
    lines.append("sequence:")
    lines += [f"  {i:3d}. {op}" for i, op in enumerate(ops)]
    lines.append(f"  {len(ops)}. (wait for every job, check every side)")
    lines.append("replay: PTCOPY_MODEL_REPLAY='" + json.dumps(
        {"seed": cfg.seed, "size": cfg.size, "ops": [astuple(op) for op in ops]},
        separators=(",", ":")) + "'")
    return "\n".join(lines)


def replay_request() -> tuple[Config, list[Op]] | None:
    """PTCOPY_MODEL_REPLAY (the JSON a failure prints): the one run to play instead."""
    text = os.environ.get("PTCOPY_MODEL_REPLAY")
    if not text:
        return None
    data = json.loads(text)
    cfg = config_for(int(data["seed"]), int(data.get("size", 4 * MIB)))
    return cfg, [Op(*op) for op in data["ops"]]


def issue18() -> tuple[Config, list[Op]]:
    """The sequence of issue 18: restore, write, restore again; the second restore must undo
    the write (the kernel path once merged nothing the second time)."""
    cfg = Config(18, 4 * MIB, (SetSpec("s0", "dependent", 0),), ())
    ops = [Op("write", 0, MASTER, 116 * CHUNK, CHUNK, "direct", 1),
           Op("copy", 0, MASTER, wait=True),
           Op("read", 0, MASTER, 116 * CHUNK, CHUNK),
           Op("write", 0, MASTER, 100 * CHUNK, CHUNK, "direct", 2),
           Op("copy", 0, MASTER, wait=True),
           Op("read", 0, MASTER, 100 * CHUNK, CHUNK)]
    return cfg, ops


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, "") or default)


def seeds(default: list[int]) -> list[int]:
    """PTCOPY_MODEL_SEEDS: a number (that many seeds from 1) or a comma list."""
    text = os.environ.get("PTCOPY_MODEL_SEEDS", "")
    if not text:
        return default
    if "," in text or "-" in text:
        out: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
        return out
    return list(range(1, int(text) + 1))
