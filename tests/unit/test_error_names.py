"""The error-name tables agree: every name the engine's exceptions carry, the daemon's refusals
use and the CLI has a hint for is one of ptcopy.errnames.ErrorName, under one D-Bus prefix."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ptcopy import engine
from ptcopy.cli import _errors
from ptcopy.daemon import errors as daemon_errors
from ptcopy.daemon.dbus import errors as dbus_errors
from ptcopy.daemon.errors import ServiceError
from ptcopy.errnames import PREFIX, ErrorName

NAMES = {e.value for e in ErrorName}


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_one_prefix_everywhere() -> None:
    assert PREFIX == "org.ptcopy.Imaging1.Error."
    assert _errors.ERROR_PREFIX == PREFIX
    assert dbus_errors.PREFIX == PREFIX
    assert all(e.dbus == PREFIX + e.value for e in ErrorName)


def test_names_are_unique_dbus_name_parts() -> None:
    values = [e.value for e in ErrorName]
    assert len(values) == len(set(values))
    for v in values:
        assert v.isidentifier() and v[0].isupper(), v


def test_every_cli_hint_is_for_a_real_error() -> None:
    unknown = set(_errors.HINTS) - NAMES
    assert not unknown, f"CLI hints for errors ptcopy never sends: {sorted(unknown)}"


def test_every_engine_exception_carries_a_known_name() -> None:
    classes = _subclasses(engine.PtcopyError)
    assert len(classes) >= 8
    unknown = {c.__name__: c.name for c in classes if c.name not in NAMES}
    assert not unknown, f"engine exceptions with unknown error names: {unknown}"


@pytest.mark.parametrize("make, name", [(daemon_errors.invalid, "InvalidArgument"),
                                        (daemon_errors.not_found, "NotFound")])
def test_daemon_refusals_become_named_dbus_errors(make: Callable[[str], ServiceError],
                                                  name: str) -> None:
    e = dbus_errors.to_dbus(make("why"))
    assert (e.type, e.text) == (PREFIX + name, "why")
    assert name in NAMES


def test_an_unexpected_failure_becomes_failed_not_a_traceback() -> None:
    e = dbus_errors.to_dbus(ValueError("boom"))
    assert e.type == ErrorName.FAILED.dbus and "ValueError" in e.text
