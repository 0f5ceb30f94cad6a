"""Argument types and option specifications the interfaces share."""

from __future__ import annotations

from typing import Annotated

from dbus_fast import Variant
from dbus_fast.constants import PropertyAccess

from ptcopy._dbus_compat import DBusSignature
from ptcopy.daemon import options as opt

R = PropertyAccess.READ
Options = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
Paths = Annotated[list[str], DBusSignature("ao")]
Strings = Annotated[list[str], DBusSignature("as")]
TwoPaths = Annotated[tuple[str, str], DBusSignature("oo")]

NO_OPTS: dict[str, opt.Opt] = {}
CONFIRM = {"confirm": opt.Opt("b", "true to allow writing the master")}
