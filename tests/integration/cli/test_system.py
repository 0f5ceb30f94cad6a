"""ptcopy volumes, version, refresh, and what happens when there is no bus or no daemon."""

from __future__ import annotations

import pytest

from ptcopy import __version__
from tests.helpers.bus import PrivateBus
from tests.helpers.cli import Cli

pytestmark = pytest.mark.root


def test_volumes_version_refresh(cli: Cli) -> None:
    name = cli.enable("v")
    mine = {v["path"]: v for v in cli.json("volumes") if v["path"].startswith(str(cli.dir))}
    assert len(mine) == 3
    for v in mine.values():
        assert v["used_by"] == name and v["type"] == "file" and v["available"] is False
    assert mine[str(cli.dir / "v-m.img")]["size"] == 4 << 20
    assert name in cli.ok("volumes").stdout

    v = cli.json("version")
    assert v == {"cli": __version__, "daemon": __version__, "data_path": "userspace",
                 "daemon_error": None}
    assert f"ptcopy {__version__}" in cli.ok("version").stdout
    assert cli.json("refresh") == {"changes": 0}


def test_no_daemon_on_the_bus(cli: Cli) -> None:
    empty = PrivateBus.start(extra="")
    address = empty.address
    try:
        r = cli.fails(2, "--bus", address, "list", bus=False)
        assert "ptcopyd is not running on this bus" in r.stderr
        assert "systemctl start ptcopyd" in r.stderr
        # the system bus is found through DBUS_SYSTEM_BUS_ADDRESS, as users set it
        r = cli.fails(2, "status", bus=False, env={"DBUS_SYSTEM_BUS_ADDRESS": address})
        assert "ptcopyd is not running" in r.stderr
        v = cli.json("--bus", address, "version", bus=False)   # still shows its own version
        assert v["cli"] == __version__ and v["daemon"] is None
        assert "not running" in v["daemon_error"]
    finally:
        empty.stop()


def test_no_bus_at_all(cli: Cli) -> None:
    r = cli.fails(2, "--bus", "unix:path=/nonexistent/bus.sock", "list", bus=False)
    assert "cannot connect to the D-Bus bus at unix:path=/nonexistent/bus.sock" in r.stderr
    assert "its socket does not exist" in r.stderr and "--bus" in r.stderr
    r = cli.run("--debug", "--bus", "unix:path=/nonexistent/bus.sock", "list", bus=False,
                traceback=True)
    assert r.returncode == 2 and "Traceback" in r.stderr   # --debug shows it
