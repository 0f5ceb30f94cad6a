"""The README's first command, run as a newcomer would in a clean directory: it must start
ptcopyd, take a first point-in-time copy with the CLI, leave the daemon running with
instructions, and ``--stop`` must take everything down again."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import PTCOPY
from tests.helpers.names import REPO

pytestmark = pytest.mark.root

DEMO = REPO / "scripts" / "demo.sh"


def readme_first_command() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```\n(.*?)```", text, re.S)
    assert block, "README.md lost its first code block"
    line = block.group(1).splitlines()[0].split("#")[0].split()
    assert line == ["sudo", "bash", "scripts/demo.sh"], line
    return ["bash", str(REPO / line[2])]   # we are root already; run from elsewhere


def mounts_under(path: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [ln.split()[1] for ln in f if ln.split()[1].startswith(str(path))]


def test_readme_first_command(tmp_path: Path) -> None:
    demo_dir = tmp_path / "ptcopy-demo"
    r = subprocess.run(readme_first_command(), cwd=tmp_path, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=300, check=False)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        for text in ("$ ptcopy enable --dependent", "enabled dependent set demo",
                     "$ ptcopy update demo --to shadow", "update of set demo to the shadow: done",
                     "OK: the shadow has the file system as it was at the point in time",
                     "ptcopyd keeps running", "demo.sh --stop"):
            assert text in out, text
        assert (demo_dir / ".ptcopy-demo").exists()
        # The daemon still runs, and the printed way of reaching it works.
        env_line = (demo_dir / "ptcopy.env").read_text().strip()
        address = env_line.removeprefix("export DBUS_SYSTEM_BUS_ADDRESS=")
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address}
        if address.startswith(f"unix:path={demo_dir}"):
            assert f"export DBUS_SYSTEM_BUS_ADDRESS={address}" in out
        st = subprocess.run([str(PTCOPY), "status", "demo", "--json"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
        assert st.returncode == 0, st.stderr
        (demo,) = json.loads(st.stdout)
        assert demo["status"] == "normal" and demo["kind"] == "dependent"
        assert demo["master"] == str(demo_dir / "volumes" / "master.img")
        assert mounts_under(demo_dir / "mnt") == []   # it unmounted what it mounted
        # a second start refuses to trample the running demo
        again = subprocess.run(readme_first_command(), cwd=tmp_path, capture_output=True,
                               text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
        assert again.returncode == 1 and "--stop" in again.stderr
    finally:
        stop = subprocess.run(["bash", str(DEMO), "--stop"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, check=False)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped ptcopyd" in stop.stdout
    assert not demo_dir.exists()
    assert mounts_under(tmp_path) == []
    again = subprocess.run(["bash", str(DEMO), "--stop"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
