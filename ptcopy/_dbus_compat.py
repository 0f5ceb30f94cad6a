"""The parts of dbus-fast that changed between Debian 12's version (1.84.2) and current ones (>= 4).

ptcopy's D-Bus interfaces give their signatures as typed annotations
(``Annotated[str, DBusSignature("s")]``), which dbus-fast reads since 4.0. dbus-fast before 4.0
has no ``dbus_fast.annotations`` and takes every annotation for a signature string. Under it
this module supplies ``DBusSignature`` and the aliases itself, and its ``method``,
``dbus_property`` and ``signal`` decorators turn the annotations of the function they decorate
into those strings before dbus-fast reads them. Under dbus-fast >= 4 everything here is
dbus-fast's own.

``CONNECT_ERRORS`` are what connecting to a bus raises for a bus that is not there or refuses
us (dbus-fast >= 3 has a common base class, DBusFastError; 1.x raises AuthError, an Exception).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast, get_args, get_origin

import dbus_fast.service as _service
from dbus_fast import errors as _errors
from dbus_fast.signature import get_signature_tree

try:
    from dbus_fast.annotations import DBusSignature

    _SIGNATURE_STRINGS = False
except ImportError:  # dbus-fast < 4.0 (Debian 12)
    _SIGNATURE_STRINGS = True

    @dataclass(frozen=True)
    class DBusSignature:  # type: ignore[no-redef]
        """A D-Bus signature annotation, as dbus_fast.annotations.DBusSignature."""

        signature: str


DBusBool = Annotated[bool, DBusSignature("b")]
DBusDouble = Annotated[float, DBusSignature("d")]
DBusObjectPath = Annotated[str, DBusSignature("o")]
DBusStr = Annotated[str, DBusSignature("s")]
DBusUInt32 = Annotated[int, DBusSignature("u")]
DBusUInt64 = Annotated[int, DBusSignature("t")]

CONNECT_ERRORS: tuple[type[Exception], ...] = (
    OSError, ValueError, _errors.AuthError,
    *((_errors.DBusFastError,) if hasattr(_errors, "DBusFastError") else ()))


def _signature_strings(fn: Callable[..., Any]) -> None:
    """Replace the annotations of ``fn`` that carry a DBusSignature by its string, and drop a
    ``None`` return annotation (dbus-fast 1.x reads any annotation as a signature)."""
    hints = fn.__annotations__
    for name, hint in list(hints.items()):
        value: Any = hint
        if isinstance(hint, str):
            try:
                value = eval(hint, fn.__globals__)  # the module's own names, as typing does
            except Exception:  # a plain signature string ("a{sv}") or a name we cannot see
                continue
        if value is None or value is type(None):
            del hints[name]
        elif get_origin(value) is Annotated:
            found = [m for m in get_args(value)[1:] if isinstance(m, DBusSignature)]
            if found:
                hints[name] = found[0].signature


def _tuples_as_lists(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` returning its several out arguments as a list: dbus-fast 1.x takes only a list
    (a tuple is what current dbus-fast and our annotations use). One out argument, a struct
    that may well be a tuple, is left alone."""
    out = fn.__annotations__.get("return")
    if not isinstance(out, str) or len(get_signature_tree(out).types) < 2:
        return fn
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wait_then_list(*args: Any, **kwargs: Any) -> Any:
            result = await fn(*args, **kwargs)
            return list(result) if isinstance(result, tuple) else result
        return wait_then_list

    @functools.wraps(fn)
    def as_list(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        return list(result) if isinstance(result, tuple) else result
    return as_list


_D = TypeVar("_D", bound=Callable[..., Any])


def _with_signature_strings(decorator: _D) -> _D:
    @functools.wraps(decorator)
    def factory(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        decorate = decorator(*args, **kwargs)

        def apply(fn: Callable[..., Any]) -> Any:
            _signature_strings(fn)
            return decorate(_tuples_as_lists(fn))

        return apply

    return cast(_D, factory)


if _SIGNATURE_STRINGS:
    method = _with_signature_strings(_service.method)
    dbus_property = _with_signature_strings(_service.dbus_property)
    signal = _with_signature_strings(_service.signal)
else:
    method = _service.method
    dbus_property = _service.dbus_property
    signal = _service.signal

__all__ = [
    "CONNECT_ERRORS",
    "DBusBool",
    "DBusDouble",
    "DBusObjectPath",
    "DBusSignature",
    "DBusStr",
    "DBusUInt32",
    "DBusUInt64",
    "dbus_property",
    "method",
    "signal",
]
