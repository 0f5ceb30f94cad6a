"""Schedules, without D-Bus and without a clock of their own: what they are (name, spec,
targets), their state in the state store, and what a run does (which shadow gets the next point
in time, and whether a running copy forbids it now). ``ptcopy.daemon.scheduler`` decides when.

A schedule's targets are either sets of one master, rotated over (each run takes the new point
in time onto the one whose last point in time is the oldest, so the last N are always kept; a
single set is updated each run), or one group (every member updated at one point in time)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ptcopy.daemon import options, timespec
from ptcopy.daemon.errors import ServiceError, invalid, not_found
from ptcopy.daemon.service import Service
from ptcopy.daemon.state import ScheduleRow
from ptcopy.engine import Direction, Flag
from ptcopy.errnames import ErrorName


@dataclass(frozen=True)
class Run:
    """What one run copies: the sets (one of a rotation, or a group's members)."""

    set_ids: list[str]
    group: str      # the group's id, '' for a rotation
    full: bool      # the shadow holds no whole point in time (an incomplete copy): full copy
    what: str       # 'set NAME' or 'group NAME', for people


class Schedules:
    """Every schedule, by id; mutations are one at a time and each is one store write."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.rows: dict[str, ScheduleRow] = {r.id: r for r in service.store.schedules()}
        self.specs: dict[str, timespec.Spec] = {}
        self._lock = threading.Lock()

    def get(self, schedule_id: str) -> ScheduleRow:
        row = self.rows.get(schedule_id)
        if row is None:
            raise not_found(f"no schedule {schedule_id}")
        return row

    def spec(self, schedule_id: str) -> timespec.Spec:
        """The parsed spec (systemd-analyze checks it once per daemon run)."""
        s = self.specs.get(schedule_id)
        if s is None:
            s = self.specs[schedule_id] = timespec.parse(self.get(schedule_id).spec)
        return s

    def set_ids(self, row: ScheduleRow) -> list[str]:
        """The target sets as recorded (a group's: its members now)."""
        if row.grp:
            return self.service.group_sets(row.grp)
        return [s for s in row.sets.split(",") if s]

    # ---- changes ---------------------------------------------------------------------------

    def create(self, name: str, spec_text: str, set_ids: Sequence[str], group: str,
               now_us: int) -> str:
        """Check everything, then record the schedule; nothing is recorded when a check
        fails."""
        options.name(name, "schedule")
        spec = timespec.parse(spec_text)
        if not timespec.elapses(spec, now_us, 1):
            raise invalid(f"schedule spec {spec_text!r} never elapses after now")
        with self.service.lock:   # no set or group changes while they are checked
            self._check_targets(set_ids, group)
        with self._lock:
            if any(r.name == name for r in self.rows.values()):
                raise ServiceError(ErrorName.EXISTS, f"there is already a schedule {name!r}")
            row = ScheduleRow(uuid.uuid4().hex, name, spec.text, ",".join(set_ids), group,
                              True, now_us)
            self.service.store.put_schedule(row)
            self.rows[row.id] = row
            self.specs[row.id] = spec
        return row.id

    def _check_targets(self, set_ids: Sequence[str], group: str) -> None:
        s = self.service
        if group and set_ids:
            raise invalid("a schedule's targets are sets of one master or one group, not both")
        if group:
            if group not in s.groups:
                raise not_found(f"no group {group}")
            if not s.group_sets(group):
                raise invalid(f"group {s.groups[group].name} has no sets: add some first")
            return
        if not set_ids:
            raise invalid("no targets: give the sets to rotate over (of one master), one set, "
                          "or one group")
        if len(set(set_ids)) != len(set_ids):
            raise invalid("a set is named twice among the targets")
        rows = [s.get_set(i).row for i in set_ids]
        for r in rows[1:]:
            if r.master != rows[0].master:
                raise invalid(f"sets {rows[0].name} and {r.name} have different masters "
                              f"({rows[0].master}, {r.master}): a rotation is over shadows of "
                              "one master (make one schedule per master)")

    def update(self, schedule_id: str, **changes: object) -> ScheduleRow:
        """Change and record a schedule's fields."""
        with self._lock:
            row = self.get(schedule_id).with_(**changes)
            self.service.store.put_schedule(row)
            self.rows[schedule_id] = row
            return row

    def stamped(self, schedule_id: str, set_ids: Sequence[str], at_us: int,
                **changes: object) -> ScheduleRow:
        """Record that these sets got the point in time of ``at_us`` (and other changes)."""
        with self._lock:
            row = self.get(schedule_id)
            stamps = _stamps(row)
            stamps.update({i: at_us for i in set_ids})
            row = row.with_(stamps=json.dumps(stamps, sort_keys=True), **changes)
            self.service.store.put_schedule(row)
            self.rows[schedule_id] = row
            return row

    def delete(self, schedule_id: str) -> None:
        with self._lock:
            self.get(schedule_id)
            self.service.store.delete_schedule(schedule_id)
            del self.rows[schedule_id]
            self.specs.pop(schedule_id, None)

    # ---- runs ------------------------------------------------------------------------------

    def choose(self, schedule_id: str) -> Run:
        """What the next run copies: the group's members, or one set of the rotation: a set
        whose shadow holds no whole point in time (a run or copy that failed or was aborted)
        first, else the one whose last point in time is the oldest (one never given one first,
        in the targets' order)."""
        row = self.get(schedule_id)
        s = self.service
        if row.grp:
            g = s.groups.get(row.grp)
            if g is None:
                raise not_found(f"schedule {row.name}: its group was deleted")
            ids = s.group_sets(row.grp)
            if not ids:
                raise invalid(f"schedule {row.name}: group {g.name} has no sets")
            return Run(ids, row.grp, any(self._incomplete(i) for i in ids), f"group {g.name}")
        alive = [i for i in self.set_ids(row) if i in s.sets]
        if not alive:
            raise not_found(f"schedule {row.name}: its sets were disabled")
        stamps = _stamps(row)
        order = {sid: n for n, sid in enumerate(alive)}
        pick = min(alive, key=lambda i: (not self._incomplete(i), stamps.get(i, 0), order[i]))
        return Run([pick], "", self._incomplete(pick), f"set {s.sets[pick].row.name}")

    def _incomplete(self, set_id: str) -> bool:
        ms = self.service.sets[set_id]
        if ms.set is None or ms.set.closed:
            return False
        return bool(ms.set.status().flags & Flag.INCOMPLETE)

    def busy(self, row: ScheduleRow) -> str:
        """Why a run must not start now ('' when it may): a copy of one of its targets runs,
        or another set restores one of their masters (the point in time would be taken half
        way through the restore)."""
        s = self.service
        order = [i for i in self.set_ids(row) if i in s.sets]
        ids = set(order)
        for i in order:
            if s.copying(s.sets[i]):
                return f"set {s.sets[i].row.name} is copying"
        masters = {s.sets[i].row.master for i in ids}
        for i, ms in list(s.sets.items()):
            if ms.row.master in masters and i not in ids:
                p = s.progress(ms)
                if p is not None and p.active and p.direction is Direction.TO_MASTER:
                    return f"set {ms.row.name} is restoring the master {ms.row.master}"
        return ""


def _stamps(row: ScheduleRow) -> dict[str, int]:
    if not row.stamps:
        return {}
    got = json.loads(row.stamps)
    return {str(k): int(v) for k, v in got.items()}
