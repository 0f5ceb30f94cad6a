"""Security review finding 4: a set or overflow volume freed while other threads use it.

The daemon's event loop reads status() and progress() while worker threads abort, wait, disable
and delete. Every call must either finish on a live handle or raise Closed (NotFound on D-Bus);
none may touch freed memory. These tests run in the ASan pass, which turns a use-after-free into
a failure; in the normal build the old code crashed or raised something else now and then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from ptcopy.engine import (
    CHUNK_MIN,
    Closed,
    CopyInProgress,
    Dependency,
    Direction,
    Engine,
    InvalidArgument,
    Kind,
    NoCopy,
    Overflow,
    PtcopyError,
    Set,
    Side,
    bitmap_size,
)
from tests.helpers.names import MIB, MakeVol

CHUNK = CHUNK_MIN
ROUNDS = 12
JOIN = 60.0   # bound on every join: a thread still running by then is stuck, not slow


def make_set(eng: Engine, tmp_vol: MakeVol, tag: str, *, kind: Kind = Kind.DEPENDENT,
             size: int = 64 * CHUNK, shadow: int | None = None, delay_ms: int = 0) -> Set:
    shadow = size if shadow is None else shadow
    return eng.enable(tmp_vol(size, f"{tag}-m"), tmp_vol(shadow, f"{tag}-s"),
                      tmp_vol(bitmap_size(size, shadow, CHUNK, kind), f"{tag}-b"), kind,
                      chunk_size=CHUNK, copy_delay_ms=delay_ms, copy_units=1)


class Hammer:
    """Threads that call one object over and over until it is gone (Closed)."""

    def __init__(self, calls: list[Callable[[], object]], *, threads: int = 4) -> None:
        self.calls = calls
        self.done = [0] * threads
        self.warm = threading.Barrier(threads + 1)
        self.unexpected: list[BaseException] = []
        self.closed = [False] * threads
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        n = 0
        try:
            while True:
                for call in self.calls:
                    try:
                        call()
                    except Closed:
                        self.closed[i] = True
                        return
                    except (NoCopy, CopyInProgress):
                        pass   # abort or wait with nothing running: a normal answer
                n += 1
                self.done[i] = n
                if n == 3:
                    self.warm.wait(JOIN)   # every thread is in its loop before the free
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:  # reported by the test, with its type
            self.unexpected.append(e)
        finally:
            if n < 3:
                self.warm.abort()

    def join(self) -> None:
        for t in self.threads:
            t.join(JOIN)
            assert not t.is_alive(), "a thread is stuck in a call on a freed handle"
        assert not self.unexpected, f"calls failed with {self.unexpected!r}"
        assert all(self.closed), "every thread must end on Closed once the handle is gone"


def set_calls(s: Set) -> list[Callable[[], object]]:
    return [s.status, s.progress, lambda: s.wait(0), s.abort, lambda: s.bits("copy"),
            lambda: s.read(Side.SHADOW, 0, CHUNK)]


@pytest.mark.parametrize("how", ["disable", "close"])
def test_set_freed_under_concurrent_calls(tmp_vol: MakeVol, how: str) -> None:
    with Engine() as eng:
        for r in range(ROUNDS):
            s = make_set(eng, tmp_vol, f"{how}{r}")
            s.write(Side.MASTER, 0, b"x" * CHUNK)
            h = Hammer(set_calls(s))
            h.warm.wait(JOIN)
            s.disable() if how == "disable" else s.close()
            h.join()
            assert s.closed
            with pytest.raises(Closed, match="closed"):
                s.status()
            with pytest.raises(InvalidArgument):   # what closed handles raised before
                s.progress()


def test_wait_blocked_on_a_copy_is_woken_by_close(tmp_vol: MakeVol) -> None:
    """A close suspends the copy and frees the set: a thread blocked in wait() on that copy
    must come back (Closed) instead of sleeping on freed memory or holding the close up."""
    with Engine() as eng:
        # throttled to one chunk per second: the copy outlives the test by far
        s = make_set(eng, tmp_vol, "w", kind=Kind.INDEPENDENT, size=256 * CHUNK,
                     delay_ms=1000)
        assert s.progress().active
        got: list[BaseException | bool] = []

        def waiter() -> None:
            try:
                got.append(s.wait())
            except PtcopyError as e:
                got.append(e)

        threads = [threading.Thread(target=waiter, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        with pytest.raises(CopyInProgress):   # refused: the set stays usable meanwhile
            s.disable()
        assert s.progress().active and not s.closed
        s.close()
        for t in threads:
            t.join(JOIN)
            assert not t.is_alive(), "wait() still blocked after the set was closed"
        assert len(got) == 3 and all(isinstance(g, Closed) for g in got), got


def test_refused_disable_does_not_disturb_other_calls(tmp_vol: MakeVol) -> None:
    """Disable is refused while a copy runs: calls from other threads meanwhile see a live set
    (never Closed), and the set works afterwards."""
    with Engine() as eng:
        s = make_set(eng, tmp_vol, "r", kind=Kind.INDEPENDENT, size=128 * CHUNK,
                     delay_ms=1000)
        stop = threading.Event()
        seen: list[BaseException] = []

        def poll() -> None:
            while not stop.is_set():
                try:
                    s.status()
                    s.progress()
                except BaseException as e:  # any exception fails the test
                    seen.append(e)
                    return

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        for _ in range(50):
            with pytest.raises(CopyInProgress):
                s.disable()
        stop.set()
        t.join(JOIN)
        assert not seen, seen
        s.abort()
        s.disable()
        assert s.closed


def test_overflow_freed_under_concurrent_calls(tmp_vol: MakeVol) -> None:
    with Engine() as eng:
        for r in range(ROUNDS):
            ov = eng.init_overflow(tmp_vol(2 * MIB, f"ov{r}"), CHUNK)
            h = Hammer([ov.status])
            h.warm.wait(JOIN)
            ov.delete() if r % 2 else ov.close()
            h.join()
            with pytest.raises(Closed):
                ov.status()


def test_attach_racing_overflow_delete(tmp_vol: MakeVol) -> None:
    """Either the attach wins (and the delete is refused, the set keeps a working overflow) or
    the delete wins (and the attach raises Closed): never a set holding a freed overflow."""
    with Engine() as eng:
        for r in range(ROUNDS):
            s = make_set(eng, tmp_vol, f"a{r}", size=32 * CHUNK, shadow=4 * CHUNK)
            ov = eng.init_overflow(tmp_vol(2 * MIB, f"aov{r}"), CHUNK)
            go = threading.Barrier(2)
            outcome: dict[str, object] = {}

            def attach(s: Set = s, ov: Overflow = ov, go: threading.Barrier = go,
                       outcome: dict[str, object] = outcome) -> None:
                go.wait(JOIN)
                try:
                    s.attach_overflow(ov)
                    outcome["attach"] = True
                except Closed as e:
                    outcome["attach"] = e

            t = threading.Thread(target=attach, daemon=True)
            t.start()
            go.wait(JOIN)
            try:
                ov.delete()
                outcome["delete"] = True
            except Dependency as e:
                outcome["delete"] = e
            t.join(JOIN)
            assert not t.is_alive()
            if outcome["attach"] is True:
                assert isinstance(outcome["delete"], Dependency), outcome
                for c in range(8):   # spills past the 4 shadow slots onto the overflow
                    s.write(Side.MASTER, c * CHUNK, b"y" * CHUNK)
                assert s.status().overflow_used > 0
                assert s.read(Side.SHADOW, 7 * CHUNK, 4) == b"\0" * 4
            else:
                assert outcome["delete"] is True and isinstance(outcome["attach"], Closed)
                assert s.status().overflow_uuid is None
            s.disable()


def test_group_copy_and_close_race(tmp_vol: MakeVol) -> None:
    """group_copy holds every member for the call: a close in between waits or wins."""
    with Engine() as eng:
        for r in range(ROUNDS):
            a = make_set(eng, tmp_vol, f"ga{r}")
            b = make_set(eng, tmp_vol, f"gb{r}")
            errs: list[BaseException] = []

            def group(a: Set = a, b: Set = b, errs: list[BaseException] = errs) -> None:
                try:
                    eng.group_copy([a, b], Direction.TO_SHADOW)
                except Closed:
                    pass
                except BaseException as e:  # reported below
                    errs.append(e)

            t = threading.Thread(target=group, daemon=True)
            t.start()
            b.close()
            t.join(JOIN)
            assert not t.is_alive() and not errs, errs
            a.close()
