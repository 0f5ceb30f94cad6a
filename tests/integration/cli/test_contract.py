"""The CLI pins the D-Bus contract it speaks (ptcopy.cli._client): every call, signature and
property it uses must be in dbus/org.ptcopy.Imaging1.xml; and it never imports the engine."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

from ptcopy.cli import _client as client
from tests.helpers.names import REPO

CONTRACT = REPO / "dbus" / "org.ptcopy.Imaging1.xml"


def _interfaces() -> dict[str, ET.Element]:
    root = ET.parse(CONTRACT).getroot()
    return {i.attrib["name"]: i for i in root.iter("interface")}


def test_every_call_is_in_the_contract() -> None:
    ifaces = _interfaces()
    for (iface, member), (sig_in, sig_out) in client.CALLS.items():
        assert iface in ifaces, iface
        methods = {m.attrib["name"]: m for m in ifaces[iface].iter("method")}
        assert member in methods, f"{iface}.{member} is not in the contract"
        args = methods[member].findall("arg")
        got_in = "".join(a.attrib["type"] for a in args if a.attrib["direction"] == "in")
        got_out = "".join(a.attrib["type"] for a in args if a.attrib["direction"] == "out")
        assert (got_in, got_out) == (sig_in, sig_out), f"{iface}.{member}"


def test_every_property_read_is_in_the_contract() -> None:
    ifaces = _interfaces()
    for iface, names in client.PROPS.items():
        props = {p.attrib["name"] for p in ifaces[iface].iter("property")}
        assert set(names) <= props, f"{iface}: {set(names) - props}"


def test_options_sent_are_documented() -> None:
    text = CONTRACT.read_text()
    for key, sig in client.OPTION_TYPES.items():
        assert f"{key} {sig}" in text or f"{key}=" in text, key


def test_the_cli_never_imports_the_engine() -> None:
    code = ("import sys, ptcopy.cli.main, ptcopy.cli.iiadm; "
            "bad = [m for m in sys.modules if m.startswith(('ptcopy.engine', 'ptcopy._engine', "
            "'ptcopy.daemon', 'ptcopy.userspace'))]; print(bad); sys.exit(bool(bad))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_manual_page_names_every_command() -> None:
    import typer

    from ptcopy.cli.main import app

    page = (REPO / "docs" / "ptcopy.1").read_text()
    root = typer.main.get_command(app)
    assert hasattr(root, "commands")
    for name, cmd in root.commands.items():
        subs = getattr(cmd, "commands", {})
        for full in [f"{name} {s}" for s in subs] or [name]:
            assert f"\\fB{full}\\fR" in page or f".B {full}\n" in page, full
