"""A kernel-path set's copy as the rest of ptcopy sees it: the handle a job follows
(``KernelCopy``) and whether a copy or merge counts as running (``running``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptcopy.datapath.kernel import pause
from ptcopy.datapath.kernel.state import KernelSet, State
from ptcopy.engine import Progress

if TYPE_CHECKING:
    from ptcopy.datapath.kernel.path import KernelPath


class KernelCopy:
    """A set's copy as a job follows it (closed, progress, abort), merges included."""

    def __init__(self, kp: KernelPath, name: str) -> None:
        self._kp = kp
        self._name = name

    @property
    def closed(self) -> bool:
        return self._name not in self._kp.served

    def progress(self) -> Progress:
        return self._kp.progress(self._name)

    def abort(self) -> None:
        self._kp.abort(self._name)

    @property
    def cancelable(self) -> bool:
        """A merge in the kernel cannot be stopped half way; an engine copy can."""
        ks = self._kp.served.get(self._name)
        return ks is not None and ks.state not in (State.MERGING, State.MERGE_FAILED)

    @property
    def suspended(self) -> bool:
        ks = self._kp.served.get(self._name)
        return ks is not None and pause.suspended(ks)

    def done_fd(self) -> int:
        return self._kp.done_fd(self._name)


def running(ks: KernelSet) -> bool:
    """What KernelPath.progress reports active: a copy until its end is finished (unless
    suspended), a merge."""
    return ks.state is State.MERGING or (ks.state is State.COPYING and not pause.suspended(ks))
