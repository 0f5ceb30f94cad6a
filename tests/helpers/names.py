"""Names and sizes every tier uses: the repository's files, the D-Bus contract's names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "dbus" / "org.ptcopy.Imaging1.conf"
CONTRACT = REPO / "dbus" / "org.ptcopy.Imaging1.xml"

BUS_NAME = "org.ptcopy.Imaging1"
ROOT = "/org/ptcopy/Imaging1"
IFACE = "org.ptcopy.Imaging1"
MANAGER = IFACE + ".Manager"
ISET = IFACE + ".IISet"
IGROUP = IFACE + ".IIGroup"
IOVERFLOW = IFACE + ".IIOverflow"
IVOLUME = IFACE + ".Volume"
IJOB = IFACE + ".Job"
ISCHEDULE = IFACE + ".Schedule"
IHOST = IFACE + ".Host"
ERR = IFACE + ".Error."
PROPS = "org.freedesktop.DBus.Properties"
OM = "org.freedesktop.DBus.ObjectManager"
DBUS = "org.freedesktop.DBus"

MIB = 1 << 20
KIB = 1 << 10
# the tmp_vol fixture: tmp_vol(size) or tmp_vol(size, name) -> the path of a sparse file
MakeVol = Callable[..., Path]
NOBODY = 65534
