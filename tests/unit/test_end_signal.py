"""The kernel path's copy-end signal: a level (readable while idle) that any number of
watchers see without consuming it."""

from __future__ import annotations

import os
import select

from ptcopy.datapath.kernel.ended import EndSignal


def readable(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def test_level_follows_set_and_every_watcher_sees_it() -> None:
    end = EndSignal(idle=False)
    a, b = end.dup(), end.dup()
    try:
        assert not readable(a) and not readable(b)
        end.set(True)
        assert readable(a) and readable(b)
        end.set(True)   # no change: still one level, not a count
        end.set(False)
        assert not readable(a) and not readable(b)
        end.set(True)
        end.close()   # the watchers' duplicates outlive it
        assert readable(a) and readable(b)
    finally:
        os.close(a)
        os.close(b)
