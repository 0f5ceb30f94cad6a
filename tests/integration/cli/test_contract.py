"""The CLI pins the D-Bus contract it speaks (ptcopy.cli._contract): every call, signature and
property it uses must be in dbus/org.ptcopy.Imaging1.xml; and it never imports the engine.
Error names (ptcopy.errnames): each has a hint (or is listed without one), each is documented
in the XML's errors block, the XML documents no other, and every engine error has one."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from ptcopy.cli import _contract as contract
from ptcopy.cli._errors import HINTS, NO_HINT, hint_for
from ptcopy.errnames import PREFIX, ErrorName
from tests.helpers.names import REPO

CONTRACT = REPO / "dbus" / "org.ptcopy.Imaging1.xml"


def _interfaces() -> dict[str, ET.Element]:
    root = ET.parse(CONTRACT).getroot()
    return {i.attrib["name"]: i for i in root.iter("interface")}


def test_every_call_is_in_the_contract() -> None:
    ifaces = _interfaces()
    for (iface, member), (sig_in, sig_out) in contract.CALLS.items():
        assert iface in ifaces, iface
        methods = {m.attrib["name"]: m for m in ifaces[iface].iter("method")}
        assert member in methods, f"{iface}.{member} is not in the contract"
        args = methods[member].findall("arg")
        got_in = "".join(a.attrib["type"] for a in args if a.attrib["direction"] == "in")
        got_out = "".join(a.attrib["type"] for a in args if a.attrib["direction"] == "out")
        assert (got_in, got_out) == (sig_in, sig_out), f"{iface}.{member}"


def test_every_property_read_is_in_the_contract() -> None:
    ifaces = _interfaces()
    for iface, names in contract.PROPS.items():
        props = {p.attrib["name"] for p in ifaces[iface].iter("property")}
        assert set(names) <= props, f"{iface}: {set(names) - props}"


def test_options_sent_are_documented() -> None:
    text = CONTRACT.read_text()
    for key, sig in contract.OPTION_TYPES.items():
        assert f"{key} {sig}" in text or f"{key}=" in text, key


def test_the_cli_never_imports_the_engine() -> None:
    code = ("import sys, ptcopy.cli.main, ptcopy.cli.iiadm; "
            "bad = [m for m in sys.modules if m.startswith(('ptcopy.engine', 'ptcopy._engine', "
            "'ptcopy.daemon', 'ptcopy.datapath'))]; print(bad); sys.exit(bool(bad))")
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


ERROR_DOC = re.compile(r"^\s*" + re.escape(PREFIX) + r"(\w+)\s+\S", re.MULTILINE)


def _documented_errors() -> list[str]:
    """The error names the contract XML's errors block documents (one per line)."""
    comments = re.findall(r"<!--(.*?)-->", CONTRACT.read_text(), re.DOTALL)
    return [name for c in comments for name in ERROR_DOC.findall(c)]


def test_every_error_name_has_a_hint_or_is_listed_without() -> None:
    for name in ErrorName:
        assert (name in HINTS) != (name in NO_HINT), \
            f"{name}: give it a hint in HINTS or list it in NO_HINT (not both)"
        if name in HINTS:
            assert HINTS[name].strip(), name
    assert hint_for("NotAName") == ""


def test_every_error_name_is_documented_in_the_contract() -> None:
    documented = _documented_errors()
    assert len(documented) == len(set(documented)), "an error is documented twice"
    assert set(documented) == {n.value for n in ErrorName}, \
        "the XML's errors block and ptcopy.errnames differ; regenerate the contract XML"
    for name in ErrorName:
        assert name.meaning.strip(), name


def test_every_engine_error_has_an_error_name() -> None:
    from ptcopy.engine import PtcopyError

    todo: list[type[PtcopyError]] = [PtcopyError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        assert cls.name in {n.value for n in ErrorName}, f"{cls.__name__}.name = {cls.name!r}"
