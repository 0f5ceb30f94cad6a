"""The guest has device-mapper: its control node and the era target (runs inside the VM)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def test_mapper_control_exists() -> None:
    assert Path("/dev/mapper/control").is_char_device()


def test_dmsetup_lists_era() -> None:
    out = subprocess.run(["dmsetup", "targets"], check=True, capture_output=True,
                         text=True).stdout
    assert "era" in {line.split()[0] for line in out.splitlines() if line.strip()}
