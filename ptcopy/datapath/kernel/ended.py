"""A served set's copy-end signal on the kernel path: an eventfd readable while no copy or merge
of the set runs, as the engine's own (``Set.done_fd``) is for its copier. The path's copies end
only when its monitor finishes them (dismantles the frozen view, ends the merge), so the monitor
sets the level; jobs watch duplicates of the descriptor."""

from __future__ import annotations

import contextlib
import os


class EndSignal:
    """Readable while idle; ``set(idle)`` changes the level, ``dup()`` hands out a watcher's
    descriptor (its own to close). Callers serialise ``set`` and ``close``."""

    def __init__(self, idle: bool) -> None:
        self._fd = os.eventfd(1 if idle else 0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._idle = idle

    def set(self, idle: bool) -> None:
        if idle == self._idle:
            return
        if idle:
            os.eventfd_write(self._fd, 1)
        else:
            with contextlib.suppress(BlockingIOError):   # it was not readable
                os.eventfd_read(self._fd)
        self._idle = idle

    def dup(self) -> int:
        return os.dup(self._fd)

    def close(self) -> None:
        os.close(self._fd)
