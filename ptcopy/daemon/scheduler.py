"""ptcopyd's scheduler: runs each enabled schedule when its spec elapses, on the event loop,
sleeping until the earliest next run (no polling). Each run is a Job (the daemon's job
machinery), never overlaps a running copy of its targets (it is skipped, and LastResult says
why), and a run missed while the daemon was down runs once at start (systemd's
Persistent=true): a schedule's next run is the spec's first elapse after ``since`` (creation,
resume or the last run), which a restart keeps."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ptcopy.daemon import timespec
from ptcopy.daemon.background import Background
from ptcopy.daemon.clock import Clock
from ptcopy.daemon.dbus.context import StartJob
from ptcopy.daemon.dbus.paths import NONE, group_path, set_path
from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.service import Service
from ptcopy.daemon.service.schedules import Run, Schedules
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)

NEXT_RUNS_MAX = 100


def stamp(us: int) -> str:
    """µs since the epoch, for people (UTC)."""
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Scheduler:
    """When schedules run, and their runs."""

    def __init__(self, service: Service, schedules: Schedules, clock: Clock,
                 start_job: StartJob, background: Background) -> None:
        self.service = service
        self.schedules = schedules
        self.clock = clock
        self.start_job = start_job
        self.background = background
        # called with a schedule's id whenever what its object shows changed (or it is gone)
        self.publish: Callable[[str], None] = lambda sid: None
        self.next_run: dict[str, int] = {}     # 0: paused, or the spec no longer elapses
        self.last_job: dict[str, str] = {}     # jobs do not outlive the daemon
        self._runs: dict[str, tuple[str, Run, int]] = {}   # job path -> (schedule, run, when)
        self._wake = asyncio.Event()

    # ---- the loop --------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Compute every next run (a run missed while the daemon was down is due now) and
        publish the schedules; nothing runs yet."""
        for sid, row in list(self.schedules.rows.items()):
            if row.last_result.startswith("running"):
                await asyncio.to_thread(
                    self.schedules.update, sid,
                    last_result="unknown: ptcopyd stopped during the run (an interrupted copy "
                                "resumes by itself at start)")
            await self._plan(sid)

    def start(self) -> None:
        """Run the schedules in the background (catch-up runs first)."""
        if self.clock.manual:   # tests: the file clock moved
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.wake)
        self.background.spawn(self._loop())

    def wake(self) -> None:
        """Look at the clock and the schedules again now."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now_us()
            for sid, when in sorted(self.next_run.items(), key=lambda kv: kv[1]):
                row = self.schedules.rows.get(sid)
                if row is not None and row.enabled and 0 < when <= now:
                    try:
                        await self._due(sid, now)
                    except Exception:  # e.g. the state store failed: stop this one only
                        log.exception("schedule %s stops until it is resumed", row.name)
                        self.next_run[sid] = 0
                        self.publish(sid)
            upcoming = [t for sid, t in self.next_run.items() if t and sid in
                        self.schedules.rows and self.schedules.rows[sid].enabled]
            await self.clock.sleep_until(min(upcoming, default=None), self._wake)

    async def _due(self, sid: str, now: int) -> None:
        """A scheduled run: whatever happens, the next run is planned after now (a run that
        cannot start is skipped, never retried in a loop)."""
        try:
            await self._run(sid, 0, now, scheduled=True)
        except ServiceError as e:
            await self._result(sid, f"failed at {stamp(now)}: {e.message}", since=now)
        except Exception as e:  # the scheduler must go on
            log.exception("schedule %s", sid)
            await self._result(sid, f"failed at {stamp(now)}: {e}", since=now)
        await self._plan(sid)

    async def _plan(self, sid: str) -> None:
        """The schedule's next run: the spec's first elapse after ``since``."""
        row = self.schedules.rows.get(sid)
        if row is None:
            self.next_run.pop(sid, None)
            return
        nxt = 0
        if row.enabled:
            try:
                spec = await asyncio.to_thread(self.schedules.spec, sid)
                since = self.schedules.rows[sid].since if sid in self.schedules.rows else 0
                got = await asyncio.to_thread(timespec.elapses, spec, since, 1)
                nxt = got[0] if got else 0
            except ServiceError as e:
                log.error("schedule %s: %s", row.name, e.message)
            except (OSError, subprocess.SubprocessError) as e:   # systemd-analyze itself
                log.error("schedule %s: cannot compute its next run: %s", row.name, e)
        if sid not in self.schedules.rows:   # deleted meanwhile
            self.next_run.pop(sid, None)
            return
        self.next_run[sid] = nxt
        self.publish(sid)
        self.wake()

    async def _result(self, sid: str, text: str, **changes: Any) -> None:
        if sid in self.schedules.rows:
            await asyncio.to_thread(self.schedules.update, sid, last_result=text, **changes)
            self.publish(sid)

    # ---- runs ------------------------------------------------------------------------------

    async def _run(self, sid: str, uid: int, now: int, *, scheduled: bool) -> str:
        """Start one run; its job's path ('/' when a scheduled run was skipped)."""
        row = self.schedules.get(sid)
        run = self.schedules.choose(sid)
        why = self.schedules.busy(row)
        if why:
            if not scheduled:
                raise ServiceError(ErrorName.BUSY, f"schedule {row.name}: {why}; run it when "
                                                   "that copy has ended")
            await self._result(sid, f"skipped at {stamp(now)}: {why}", since=now)
            return NONE
        await asyncio.to_thread(self.service.copy, run.set_ids, "shadow", run.full, False, "")
        kind = "copy" if run.full else "update"
        if run.group:
            job = self.start_job(f"group-{kind}-to-shadow",
                                 [group_path(run.group)] + [set_path(i) for i in run.set_ids],
                                 run.set_ids, uid)
        else:
            job = self.start_job(f"{kind}-to-shadow", [set_path(i) for i in run.set_ids],
                                 run.set_ids, uid)
        self._runs[job] = (sid, run, now)
        self.last_job[sid] = job
        # Stamped now, when the point in time is taken, not when the job ends: a run asked for
        # the moment the job's Completed is seen, or after a restart that lost the job, must
        # already find this set the most recent. A run that fails leaves its shadow incomplete,
        # which choose() takes first.
        await asyncio.to_thread(self.schedules.stamped, sid, run.set_ids, now,
                                last_result=f"running since {stamp(now)}: {kind} of {run.what}",
                                since=now, last_run=now)
        self.publish(sid)
        return job

    def job_ended(self, job: str, values: Mapping[str, Any]) -> None:
        """A job ended (the registry's listener): a run's result is recorded."""
        got = self._runs.pop(job, None)
        if got is None:
            return
        sid, run, at = got
        if sid not in self.schedules.rows:
            return
        if values.get("Success"):
            text = f"done: {run.what} holds the point in time of {stamp(at)}"
        else:
            text = f"failed: {run.what}: {values.get('Message', '')}"
        self.background.spawn(self._result(sid, text))

    # ---- what the D-Bus objects ask --------------------------------------------------------

    async def create(self, name: str, spec: str, set_ids: Sequence[str], group: str) -> str:
        sid = await asyncio.to_thread(self.schedules.create, name, spec, set_ids, group,
                                      self.clock.now_us())
        await self._plan(sid)
        return sid

    async def run_now(self, sid: str, uid: int) -> str:
        """A run now, whether the schedule is paused or not; refused while a copy of its
        targets runs."""
        job = await self._run(sid, uid, self.clock.now_us(), scheduled=False)
        await self._plan(sid)
        return job

    async def set_enabled(self, sid: str, enabled: bool) -> None:
        """Pause, or resume: the next run is then counted from now (runs missed while paused
        are not made up)."""
        row = self.schedules.get(sid)
        if row.enabled != enabled:
            changes: dict[str, Any] = {"enabled": enabled}
            if enabled:
                changes["since"] = self.clock.now_us()
            await asyncio.to_thread(self.schedules.update, sid, **changes)
        await self._plan(sid)

    async def delete(self, sid: str) -> None:
        await asyncio.to_thread(self.schedules.delete, sid)
        self.next_run.pop(sid, None)
        self.last_job.pop(sid, None)
        self.publish(sid)

    async def next_runs(self, sid: str, count: int) -> list[int]:
        """The next ``count`` runs (none while paused)."""
        if not 1 <= count <= NEXT_RUNS_MAX:
            raise ServiceError(ErrorName.INVALID_ARGUMENT,
                               f"count {count} must be from 1 to {NEXT_RUNS_MAX}")
        if not self.schedules.get(sid).enabled:
            return []
        spec = await asyncio.to_thread(self.schedules.spec, sid)
        since = self.schedules.get(sid).since
        return await asyncio.to_thread(timespec.elapses, spec, since, count)
