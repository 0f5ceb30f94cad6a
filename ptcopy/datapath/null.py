"""The ``none`` data path: sets kept by the engine, nothing served (tests, ``--data-path none``).

Users reach no device; the engine runs every copy, so progress, abort and wait are the engine
set's, as on the userspace path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ptcopy.datapath.base import Capabilities, SetVolumes, Volume
from ptcopy.engine import Direction, Engine, Hold, Kind, NotFound, Progress, Set

CAPS = Capabilities(name="none", bitmap_in_memory=True, exclusive_volumes=True,
                    target_writable_during_copy=True, group_restore_dependent=True,
                    suspend_copy=True, rename_served=True, serve_one_side=True,
                    group_hold=True)


@dataclass(frozen=True)
class NoDevices:
    """What a set served by nothing offers: no device, and no file ('' rather than None, so a
    client that shows "device or file" shows nothing)."""

    master_device: str | None = None
    shadow_device: str | None = None
    master_file: str | None = ""
    shadow_file: str | None = ""


class NullPath:
    """A ``DataPath`` that serves nothing: it only remembers each set under its name."""

    caps = CAPS

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sets: dict[str, Set] = {}

    def _get(self, name: str) -> Set:
        try:
            return self._sets[name]
        except KeyError:
            raise NotFound(f"set {name!r} is not served") from None

    def check_new(self, kind: Kind, chunk: int, master_size: int, shadow: tuple[str, int],
                  bitmap: tuple[str, int] | None) -> None:
        """Whatever the engine accepts."""

    def serve(self, name: str, set_: Set, volumes: SetVolumes | None = None, *,
              loop: bool = True, shadow: bool = True) -> NoDevices:
        """Remember the set: nothing is served."""
        self._sets[name] = set_
        return NoDevices()

    def serve_shadow(self, name: str, on: bool) -> None:
        """Nothing is served."""
        self._get(name)

    def started(self, name: str, *, new: bool) -> None:
        """The engine starts and resumes its own copies."""

    def unserve(self, name: str, *, force: bool = False) -> None:
        """Forget the set (nobody can hold what was never served)."""
        self._get(name)
        del self._sets[name]

    def users(self, name: str, direction: Direction) -> list[str]:
        """Nobody: there is no device."""
        self._get(name)
        return []

    def copy(self, names: Sequence[str], direction: Direction, *, full: bool,
             owner: int = 0) -> float:
        """The engine copies the sets at one point in time."""
        sets = [self._get(n) for n in names]
        return self._engine.group_copy(sets, direction, full=full, owner=owner)

    def hold(self, names: Sequence[str], direction: Direction, *, full: bool, owner: int,
             timeout: float) -> Hold:
        """The engine holds the sets' point in time."""
        sets = [self._get(n) for n in names]
        return self._engine.group_hold(sets, direction, full=full, owner=owner,
                                       timeout=timeout)

    def progress(self, name: str) -> Progress:
        """The engine set's copy."""
        return self._get(name).progress()

    def abort(self, name: str) -> None:
        """Stop the engine set's copy."""
        self._get(name).abort()

    def wait(self, name: str, timeout: float | None = None) -> bool:
        """Until the engine set's copy is over; False at the timeout."""
        return self._get(name).wait(timeout)

    def suspend(self, name: str) -> None:
        """Suspend the engine set's copy."""
        self._get(name).suspend()

    def resume(self, name: str) -> None:
        """Resume the engine set's suspended copy."""
        self._get(name).resume()

    def rename(self, name: str, new: str) -> None:
        """Only the name it is remembered under changes."""
        self._sets[new] = self._get(name)
        del self._sets[name]

    def copier(self, name: str) -> Set:
        """A job follows the engine set itself."""
        return self._get(name)

    def attach_overflow(self, name: str, overflow: Volume) -> None:
        """Nothing to follow."""

    def detach_overflow(self, name: str) -> None:
        """Nothing uses it."""

    def status(self, name: str) -> dict[str, object]:
        """Nothing is served."""
        self._get(name)
        return {}

    def stop(self, *, force: bool = False) -> None:
        """Forget every set."""
        self._sets.clear()
