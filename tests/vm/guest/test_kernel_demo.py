"""The README's main job on a kernel with device-mapper: scripts/demo.sh with ptcopyd's defaults
picks the kernel data path and walks through a first point in time on ext4; --stop leaves no
device behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ptcopy import engine
from ptcopy.datapath import blockdev as loopdev

REPO = Path(__file__).resolve().parents[3]


def test_demo_runs_on_the_kernel_path(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    run = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--dir", str(demo)],
                         capture_output=True, text=True, timeout=600, check=False)
    try:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "(data path: kernel)" in run.stdout
        assert "OK: the shadow has the file system as it was at the point in time" in run.stdout
        assert "/dev/mapper/ptcopy-demo-shadow" in run.stdout
    finally:
        stop = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--stop", "--dir",
                               str(demo)], capture_output=True, text=True, timeout=120,
                              check=False)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "disabled set demo" in stop.stdout
    assert not [n for n in engine.dm_list() if n.startswith("ptcopy-")]
    assert not [lp for lp in loopdev.list_loops() if lp.backing_file.startswith(str(demo))]
