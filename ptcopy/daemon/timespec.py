"""When a schedule runs: a systemd calendar expression (``hourly``, ``Mon..Fri 02:00``, see
systemd.time(7)) or an interval (``every 15min``: a systemd time span after the word
``every``). Both are parsed and computed by systemd's own ``systemd-analyze`` (``calendar`` with
``--base-time`` and ``--iterations``, ``timespan``), never by a parser of ours: what a user can
write in a timer unit means the same here. Synchronous (a subprocess each): call it from a
worker thread."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime

from ptcopy.daemon.errors import invalid

ANALYZE = "systemd-analyze"
EVERY = "every"
MAX_SPEC = 256
MIN_INTERVAL_US = 1_000_000   # one second
_TIMEOUT = 10.0
_ELAPSE = re.compile(r"^\s*(Next elapse|Iter\. #\d+|\(in UTC\)):\s*(.*\S)\s*$")
_SPAN = re.compile(r"^\s*(μs|us):\s*(\d+)\s*$")


@dataclass(frozen=True)
class Spec:
    """A checked schedule spec: ``interval_us`` > 0 for an interval, 0 for a calendar."""

    text: str
    interval_us: int = 0

    @property
    def calendar(self) -> str:
        return self.text


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(ANALYZE)
    if exe is None:
        raise invalid(f"{ANALYZE} (Debian package systemd) is not installed: ptcopyd needs it "
                      "to read schedule specs")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
           "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env,
                          timeout=_TIMEOUT, check=False)


def _problem(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout).strip().splitlines()
    return text[-1] if text else f"{ANALYZE} exited with {proc.returncode}"


def parse(text: str) -> Spec:
    """Check a spec; a bad one is refused with systemd's reason and the accepted forms."""
    text = text.strip()
    if not text or len(text) > MAX_SPEC or any(ord(c) < 32 for c in text):
        raise invalid(f"schedule spec {text[:40]!r} is not valid: give a systemd calendar "
                      f"expression (e.g. 'hourly', 'Mon..Fri 02:00') or '{EVERY} <time span>' "
                      "(e.g. 'every 15min'), at most 256 characters")
    words = text.split(None, 1)
    if words[0] == EVERY:
        span = words[1] if len(words) > 1 else ""
        proc = _analyze("timespan", "--", span)
        found = [m.group(2) for m in map(_SPAN.match, proc.stdout.splitlines()) if m]
        if proc.returncode != 0 or not found:
            raise invalid(f"schedule spec {text!r}: {span!r} is not a time span "
                          f"({_problem(proc)}); write e.g. 'every 15min' or 'every 2h 30min'")
        us = int(found[0])
        if us < MIN_INTERVAL_US:
            raise invalid(f"schedule spec {text!r}: the interval must be at least one second")
        return Spec(text, us)
    proc = _analyze("calendar", "--", text)
    if proc.returncode != 0:
        raise invalid(f"schedule spec {text!r} is not a systemd calendar expression "
                      f"({_problem(proc)}); see systemd.time(7), or write '{EVERY} 15min' "
                      "for an interval")
    return Spec(text)


def elapses(spec: Spec, after_us: int, count: int) -> list[int]:
    """The spec's next ``count`` elapses strictly after ``after_us`` (µs since the epoch);
    fewer (or none) when a calendar expression stops elapsing."""
    if spec.interval_us:
        return [after_us + spec.interval_us * i for i in range(1, count + 1)]
    proc = _analyze("calendar", f"--base-time=@{after_us // 1_000_000}",
                    f"--iterations={count}", "--", spec.calendar)
    if proc.returncode != 0:
        raise invalid(f"schedule spec {spec.text!r}: {_problem(proc)}")
    return [t for t in _read_elapses(proc.stdout) if t > after_us][:count]


def _read_elapses(out: str) -> list[int]:
    """The elapses systemd-analyze printed, in µs: each 'Next elapse' or 'Iter. #n' line, or
    the '(in UTC)' line after it when the local zone is not UTC."""
    times: list[str] = []
    for line in out.splitlines():
        m = _ELAPSE.match(line)
        if m is None:
            continue
        if m.group(1) == "(in UTC)":
            if times:
                times[-1] = m.group(2)
        else:
            times.append(m.group(2))
    out_us = []
    for t in times:
        if t == "never":
            break
        try:
            when = datetime.strptime(t, "%a %Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
        except ValueError as e:
            raise invalid(f"cannot read {ANALYZE}'s elapse {t!r}") from e
        out_us.append(int(when.timestamp()) * 1_000_000)
    return out_us
