"""Schedule specs read by systemd-analyze (ptcopy.daemon.timespec), in UTC and in a zone with
daylight saving time, and the schedules table of the state store."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ptcopy.daemon import timespec
from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.state import ScheduleRow, Store

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="needs systemd-analyze (Debian package systemd)")

BASE = int(datetime(2030, 3, 8, 12, 0, tzinfo=UTC).timestamp()) * 10**6   # a Friday


def _utc(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


def test_calendar_elapses_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    spec = timespec.parse("Mon..Fri 02:00")
    assert spec.interval_us == 0
    got = [_utc(t) for t in timespec.elapses(spec, BASE, 3)]
    assert [(t.day, t.hour, t.minute) for t in got] == [(11, 2, 0), (12, 2, 0), (13, 2, 0)]
    hourly = timespec.elapses(timespec.parse("hourly"), BASE, 2)
    assert hourly == [BASE + 3600 * 10**6, BASE + 7200 * 10**6]


def test_calendar_elapses_in_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # New York: 02:00 is 07:00 UTC in winter, 06:00 UTC after the switch of 10 March 2030
    monkeypatch.setenv("TZ", "America/New_York")
    got = [_utc(t) for t in timespec.elapses(timespec.parse("*-*-* 02:00"), BASE, 4)]
    assert [(t.day, t.hour) for t in got] == [(9, 7), (11, 6), (12, 6), (13, 6)]


def test_intervals_and_elapses_strictly_after() -> None:
    spec = timespec.parse("every 2h 30min")
    assert spec.interval_us == 9000 * 10**6
    assert timespec.elapses(spec, 10, 2) == [10 + 9000 * 10**6, 10 + 18000 * 10**6]
    at = int(datetime(2030, 3, 8, 13, 0, tzinfo=UTC).timestamp()) * 10**6
    assert timespec.elapses(timespec.parse("hourly"), at, 1) == [at + 3600 * 10**6]
    assert timespec.elapses(timespec.parse("2001-01-01"), BASE, 3) == []


@pytest.mark.parametrize(("spec", "words"), [
    ("bogus", "not a systemd calendar expression"),
    ("--help", "not a systemd calendar expression"),
    ("every", "is not a time span"),
    ("every 3 fortnights", "is not a time span"),
    ("every 500ms", "at least one second"),
    ("", "is not valid"),
    ("hourly\nhourly", "is not valid"),
    ("x" * 300, "is not valid"),
])
def test_bad_specs_are_refused_with_the_reason(spec: str, words: str) -> None:
    with pytest.raises(ServiceError) as e:
        timespec.parse(spec)
    assert words in e.value.message, e.value.message


def test_schedules_survive_in_the_state_store(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    row = ScheduleRow("a1", "nightly", "daily", "s1,s2", "", True, 5, 7, "done", '{"s1": 7}')
    store.put_schedule(row)
    store.put_schedule(ScheduleRow("b2", "groupwise", "hourly", "", "g1", False))
    store.close()
    again = Store(str(tmp_path))
    assert again.schedules() == [ScheduleRow("b2", "groupwise", "hourly", "", "g1", False), row]
    again.delete_schedule("b2")
    assert again.schedules() == [row]
    again.close()
