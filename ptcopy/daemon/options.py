"""Validation of what callers send: option dictionaries, names and paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dbus_fast import Variant

from ptcopy.daemon.errors import invalid
from ptcopy.engine import CHUNK_MAX, CHUNK_MIN

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_PATH = 4096

# D-Bus signature -> the Python type dbus-fast gives for it
_TYPES: dict[str, type] = {"b": bool, "s": str, "o": str, "u": int, "t": int, "i": int,
                           "d": float, "as": list}
_RANGES: dict[str, tuple[int, int]] = {"u": (0, 2**32 - 1), "t": (0, 2**64 - 1),
                                       "i": (-(2**31), 2**31 - 1)}


@dataclass(frozen=True)
class Opt:
    signature: str
    help: str


def parse(options: dict[str, Variant], spec: dict[str, Opt]) -> dict[str, Any]:
    """Check every key and type; unknown keys are an error, not ignored."""
    out: dict[str, Any] = {}
    for key, var in options.items():
        opt = spec.get(key)
        if opt is None:
            known = ", ".join(sorted(spec)) or "none"
            raise invalid(f"unknown option {key!r}; this method takes: {known}")
        if not isinstance(var, Variant) or var.signature != opt.signature:
            got = var.signature if isinstance(var, Variant) else type(var).__name__
            raise invalid(f"option {key!r} must be of type {opt.signature!r} ({opt.help}), "
                          f"not {got!r}")
        value = var.value
        if not isinstance(value, _TYPES[opt.signature]):
            raise invalid(f"option {key!r} has a value of the wrong type")
        lo_hi = _RANGES.get(opt.signature)
        if lo_hi and isinstance(value, int) and not lo_hi[0] <= value <= lo_hi[1]:
            raise invalid(f"option {key!r} is out of range")
        out[key] = value
    return out


def name(value: str, what: str) -> str:
    """A user-chosen name: 1..64 of letters, digits, '.', '_', '-', not starting with a dot."""
    if not NAME_RE.match(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise invalid(f"{what} name {shown!r} is not valid: use 1 to 64 letters, digits, "
                      "'.', '_' or '-', starting with a letter or digit")
    return value


def path(value: str, what: str) -> str:
    """An absolute path without NUL, at most 4096 bytes."""
    if not value:
        raise invalid(f"no {what} path given")
    if len(value.encode(errors="surrogateescape")) > MAX_PATH or "\0" in value:
        raise invalid(f"{what} path is too long or contains NUL")
    if not value.startswith("/"):
        raise invalid(f"{what} path {value!r} must be absolute")
    return value


def chunk_size(value: int, what: str = "chunk_size") -> int:
    """0 (the default chunk size) or a power of two from 4 KiB to 1 MiB."""
    if value and (value & (value - 1) or not CHUNK_MIN <= value <= CHUNK_MAX):
        raise invalid(f"{what} {value} is not valid: use a power of two from {CHUNK_MIN} to "
                      f"{CHUNK_MAX} bytes (or 0 for the default)")
    return value


WAIT_MAX = 7 * 24 * 3600.0   # a week: longer than any client keeps a call open


def wait_timeout(value: float) -> float:
    """A Job.Wait timeout: finite seconds from 0 to a week (NaN, infinities and negative
    values would reach the event loop's timers)."""
    if not 0.0 <= value <= WAIT_MAX:   # also false for NaN
        raise invalid(f"timeout {value!r} is not valid: give seconds from 0 to {WAIT_MAX:g} "
                      "(poll again to wait longer)")
    return value


def direction(value: str) -> str:
    if value not in ("shadow", "master"):
        raise invalid(f"direction {value!r} must be 'shadow' or 'master'")
    return value
