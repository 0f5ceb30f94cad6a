"""The D-Bus contract as XML: what dbus/org.ptcopy.Imaging1.xml holds and what a test checks
the running daemon against, with every error name documented in a comment block.

    python -m ptcopy.daemon.dbus.contract > dbus/org.ptcopy.Imaging1.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from typing import Any

from dbus_fast import introspection as intr

from ptcopy.daemon.dbus.host import Host
from ptcopy.daemon.dbus.iigroup import IIGroup
from ptcopy.daemon.dbus.iioverflow import IIOverflow
from ptcopy.daemon.dbus.iiset import IISet
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.job import Job
from ptcopy.daemon.dbus.manager import Manager
from ptcopy.daemon.dbus.schedule import Schedule
from ptcopy.daemon.dbus.volume import Volume
from ptcopy.daemon.discovery import VolumeView
from ptcopy.errnames import PREFIX, ErrorName


def interfaces() -> list[Interface]:
    """One instance of each of ptcopy's interfaces (introspection needs no daemon)."""
    none: Any = None
    return [Manager(none, none, none), IISet(none, "", none), IIGroup(none, "", none),
            IIOverflow(none, "", none), Volume(VolumeView("")),
            Job(0, "", [], [], 0, none, lambda j: None), Schedule(none, "", none),
            Host(none, "")]


def errors_comment() -> str:
    """The documentation of every error name, one per line (a comment: introspection has no
    element for errors)."""
    width = max(len(e.dbus) for e in ErrorName)
    lines = ["Errors: a method refuses or fails with one of these named errors",
             f"({PREFIX}<Name>), whose message says what happened:"]
    lines += [f"  {e.dbus:<{width}}  {e.meaning}" for e in ErrorName]
    return "\n" + "".join(f"    {line}\n" for line in lines) + "  "


def xml() -> str:
    """The contract XML, as the file holds it."""
    node = intr.Node(None, interfaces=[i.introspect() for i in interfaces()])
    root = node.to_xml()
    root.insert(0, ET.Comment(errors_comment()))
    ET.indent(root)
    head = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')
    return head + ET.tostring(root, encoding="unicode") + "\n"


if __name__ == "__main__":
    sys.stdout.write(xml())
