"""The D-Bus contract as XML: what dbus/org.ptcopy.Imaging1.xml holds and what a test checks
the running daemon against.

    python -m ptcopy.daemon.contract > dbus/org.ptcopy.Imaging1.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from typing import Any

from dbus_fast import introspection as intr

from ptcopy.daemon import objects as ob
from ptcopy.daemon.bus import Interface
from ptcopy.daemon.jobs import Job


def interfaces() -> list[Interface]:
    """One instance of each of ptcopy's interfaces (introspection needs no daemon)."""
    none: Any = None
    return [ob.Manager(none), ob.IISet(none, ""), ob.IIGroup(none, ""), ob.IIOverflow(none, ""),
            ob.Volume(none, "", "/", ""), Job(0, "", [], [], 0, none, lambda j: None)]


def xml() -> str:
    node = intr.Node(None, interfaces=[i.introspect() for i in interfaces()])
    root = node.to_xml()
    ET.indent(root)
    head = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')
    return head + ET.tostring(root, encoding="unicode") + "\n"


if __name__ == "__main__":
    sys.stdout.write(xml())
