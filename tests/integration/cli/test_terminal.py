"""Under a pseudo-terminal: copies wait by default with a progress bar, and writing the master
asks first."""

from __future__ import annotations

import pytest

from tests.helpers.cli import Cli
from tests.helpers.names import MIB

pytestmark = pytest.mark.root


def test_progress_bar_on_a_terminal(cli: Cli) -> None:
    name = cli.enable("tty", kind="independent", size=16 * MIB)
    cli.ok("wait", name)
    cli.ok("param", name, "--delay", "25", "--units", "8")   # about 1.5 s a copy
    rc, out = cli.tty("copy", name, "--to", "shadow")    # no --wait: a terminal waits
    assert rc == 0, out
    assert f"full copy of set {name} to the shadow" in out
    assert "100%" in out and "ETA" in out and "MiB/s" in out
    assert f"full copy of set {name} to the shadow: done (16.0 MiB" in out
    assert "\x1b[" in out   # drawn for a terminal


def test_writing_the_master_asks_on_a_terminal(cli: Cli) -> None:
    name = cli.enable("ask")
    rc, out = cli.tty("update", name, "--to", "master", answer="n")
    assert rc == 1, out
    assert "replaces the data on the master. Go ahead?" in out
    assert "not confirmed; nothing was done" in out
    assert cli.status(name)["job"] is None
    rc, out = cli.tty("update", name, "--to", "master", answer="y")
    assert rc == 0, out
    assert f"update of set {name} to the master: done" in out
    rc, out = cli.tty("update", name, "--to", "master", "--yes", "--no-wait")
    assert rc == 0 and "Go ahead" not in out and "/org/ptcopy/Imaging1/jobs/" in out
