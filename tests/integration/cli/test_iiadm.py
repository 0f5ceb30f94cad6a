"""iiadm: AVS's classic syntax translated to ptcopy commands, and run against the daemon."""

from __future__ import annotations

import pytest

from ptcopy.cli._errors import UsageProblem
from ptcopy.cli.iiadm import translate
from tests.helpers.cli import IIADM, Cli
from tests.helpers.names import KIB, MIB

TRANSLATIONS = [
    ("-e ind /d/m /d/s /d/b", "enable --independent /d/m /d/s /d/b"),
    ("-e dep /d/m /d/s /d/b", "enable --dependent /d/m /d/s /d/b"),
    ("-d /d/s", "disable /d/s"),
    ("-c s /d/s", "copy /d/s --to shadow"),
    ("-n -c m /d/s", "copy /d/s --to master --yes"),
    ("-u s /d/s", "update /d/s --to shadow"),
    ("-np -u m /d/s", "update /d/s --to master --yes"),
    ("-w /d/s", "wait /d/s"),
    ("-a /d/s", "abort /d/s"),
    ("-i", "status"),
    ("-i all", "status"),
    ("-i /d/s", "status /d/s"),
    ("-l", "list"),
    ("-v", "version"),
    ("-R /d/s", "reset /d/s"),
    ("-P 2 100 /d/s", "param /d/s --delay 20 --units 100"),
    ("-P /d/s", "param /d/s"),
    ("-g db -m /d/s /d/t", "group add --create db /d/s /d/t"),
    ("-g db -c s", "group copy db --to shadow"),
    ("-n -g db -u m", "group update db --to master --yes"),
    ("-g db -w", "wait db"),
    ("-g db -a", "abort db"),
    ("-g db -L", "group list db"),
    ("-g -L", "group list"),
    ("-O /d/o", "overflow init /d/o"),
    ("-A /d/o /d/s", "overflow attach /d/o /d/s"),
    ("-D /d/s", "overflow detach /d/s"),
    ("-L", "overflow list"),
    ("-Q /d/o", "overflow status /d/o"),
    ("-E /d/s", "export /d/s"),
    ("-J /d/s /d/b", "join /d/s /d/b"),
    ("-I /d/s /d/b", "import /d/s /d/b"),
    # the patent's options (US 2003/0033327)
    ("-e dep /d/m /d/s /d/b db1", "enable --dependent /d/m /d/s /d/b --name db1"),
    ("-s /d/s", "suspend /d/s"),
    ("-s all", "suspend --all"),
    ("-r /d/s /d/t", "resume /d/s /d/t"),
    ("-r all", "resume --all"),
    ("-g db -C", "group create db"),
    ("-g db -C ind", "group create db"),
    ("-g db -M /d/s", "group add --create db /d/s"),
    ("-g db -N db2", "group rename db db2"),
    ("-g db -X", "group delete db"),
    ("-g db -i", "status --group db"),
    ("-G", "group list"),
    ("-Z /d/o", "overflow delete /d/o"),
]


@pytest.mark.parametrize(("classic", "modern"), TRANSLATIONS)
def test_translation(classic: str, modern: str) -> None:
    assert translate(classic.split()) == modern.split()


def test_translation_of_an_empty_group_name() -> None:
    assert translate(["-g", "", "-m", "/d/s"]) == ["group", "remove", "", "/d/s"]
    assert translate(["-B", "/d/s", "/d/t"]) == ["group", "remove", "", "/d/s", "/d/t"]


@pytest.mark.parametrize("classic", [
    "-x", "-e", "-e xyz /m /s /b", "-e ind /m /s", "-c x /d/s", "-u s /d/s /d/t", "-d /s -w /s",
    "-m /d/s", "-g db", "-g db -d", "-P x y /d/s", "-n", "-I /d/s", "-s", "-C",
    "-X", "-g db -C xyz", "-J /d/s", "-e dep /m /s /b n extra",
])
def test_bad_classic_command_lines(classic: str) -> None:
    with pytest.raises(UsageProblem):
        translate(classic.split())


@pytest.mark.root
def test_classic_commands_against_the_daemon(cli: Cli) -> None:
    def iiadm(*args: str) -> str:
        return cli.ok(*args, prog=IIADM).stdout

    m, s, b = cli.vol("m", 4 * MIB), cli.vol("s", 4 * MIB), cli.vol("b", 256 * KIB)
    name = cli.prefix + "-s"   # a set is named after its shadow
    shadow = cli.vol(name, 4 * MIB)
    out = cli.ok("-e", "dep", m, shadow, b, prog=IIADM, proc=True).stdout  # the console script
    assert f"enabled dependent set {name}" in out
    assert name in iiadm("-l")
    (st,) = cli.json("-i", shadow, prog=IIADM)      # by its shadow, as AVS named sets
    assert st["name"] == name and st["kind"] == "dependent"
    assert iiadm("-u", "s", shadow).startswith("/org/ptcopy/Imaging1/jobs/")
    iiadm("-w", shadow)
    r = cli.fails(1, "-c", "m", shadow, prog=IIADM)   # no -n and no terminal: refused
    assert "--yes" in r.stderr and r.stderr.startswith("iiadm: error:")
    iiadm("-n", "-c", "m", shadow)
    iiadm("-w", shadow)
    iiadm("-P", "2", "50", shadow)
    assert (st := cli.status(name))["copy_delay_ms"] == 20 and st["copy_units"] == 50
    assert "pause 20 ms every 50 chunks" in iiadm("-P", shadow)

    g = cli.name("cg")
    iiadm("-g", g, "-m", shadow)
    assert cli.status(name)["group"] == g
    assert g in iiadm("-g", "-L")
    assert name in iiadm("-g", g, "-L")
    iiadm("-g", g, "-u", "s")
    iiadm("-g", g, "-w")
    (gst,) = cli.json("-g", g, "-i", prog=IIADM)       # the group's sets
    assert gst["name"] == name
    iiadm("-g", "", "-m", shadow)
    assert cli.status(name)["group"] is None
    g2 = cli.name("cg2")
    iiadm("-g", g2, "-C", "dep")
    iiadm("-g", g2, "-M", shadow)
    assert cli.status(name)["group"] == g2
    g3 = cli.name("cg3")
    iiadm("-g", g2, "-N", g3)
    assert g3 in iiadm("-G")
    iiadm("-B", shadow)
    assert cli.status(name)["group"] is None
    iiadm("-g", g3, "-X")
    assert g3 not in iiadm("-G")

    ov = cli.vol("ov", MIB)
    iiadm("-O", ov)
    assert ov in iiadm("-L")
    assert "chunks" in iiadm("-Q", ov)
    r = cli.fails(2, "-A", ov, shadow, prog=IIADM)    # not a compact set
    assert "hint:" in r.stderr or "compact" in r.stderr
    iiadm("-Z", ov)
    assert ov not in iiadm("-L")

    r = cli.fails(2, "-E", shadow, prog=IIADM)        # dependent: cannot be exported
    assert "dependent" in r.stderr
    r = cli.fails(1, "-I", s, prog=IIADM)               # import: the bitmap is missing
    assert "-I takes" in r.stderr
    r = cli.fails(2, "-s", shadow, prog=IIADM)        # nothing to suspend
    assert "no copy running" in r.stderr
    assert cli.ok("--explain", "-u", "s", shadow, prog=IIADM).stdout == \
        f"ptcopy --bus {cli.daemon.address} update {shadow} --to shadow\n"
    r = cli.run("-x", prog=IIADM)
    assert r.returncode == 1 and "unknown option -x" in r.stderr
    assert "usage: iiadm" in iiadm("-h")
    iiadm("-d", shadow)
    assert name not in iiadm("-l")


@pytest.mark.root
def test_suspend_and_resume_with_the_patents_options(cli: Cli) -> None:
    def iiadm(*args: str) -> str:
        return cli.ok(*args, prog=IIADM).stdout

    m, s, b = cli.vol("m", 8 * MIB), cli.vol("s", 8 * MIB), cli.vol("b", 256 * KIB)
    with open(m, "wb") as f:
        f.write(bytes(range(256)) * (8 * MIB // 256))
    iiadm("-e", "ind", m, s, b, cli.name("sr"))
    name = cli.name("sr")
    iiadm("-w", name)
    iiadm("-P", "5", "2", name)                      # 50 ms every 2 chunks: seconds of copy
    iiadm("-c", "s", name)
    cli.until(lambda: cli.status(name)["copy_percent"] > 0)
    assert "suspended at" in iiadm("-s", "all")
    assert cli.status(name)["suspended"] is True
    iiadm("-P", "0", "256", name)
    iiadm("-r", name)
    iiadm("-w", name)
    st = cli.status(name)
    assert st["suspended"] is False and st["copying"] is False and st["incomplete"] is False
    with open(m, "rb") as a, open(s, "rb") as c:
        assert a.read() == c.read()
    assert "nothing to resume" in iiadm("-r", "all")
