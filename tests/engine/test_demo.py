"""The engine tour: `python -m ptcopy.demo` (volumes for docs/bitmap-format.md) keeps working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ptcopy.demo

KEY_LINES = [
    "1. Dependent set",
    "the shadow still holds the point in time",
    "2. Independent set",
    "full copy: done",
    "the master as it was at enable",
    "3. Compact dependent shadow",
    "spilled to the overflow (flags COMPACT|SPILLED)",
    "4. Group update of sets 1 and 2",
    "magic PTCOPYBM, version 1, state clean",
    "ptcopy demo: all checks passed",
]


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ptcopy.demo", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_demo_runs_and_cleans_up(tmp_path: Path) -> None:
    vols = tmp_path / "vols"
    vols.mkdir()
    r = run_demo("--dir", str(vols), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in KEY_LINES:
        assert line in r.stdout, f"{line!r} missing from:\n{r.stdout}"
    assert "-> match" in r.stdout
    assert r.stderr == ""
    assert list(vols.iterdir()) == []  # every volume it made is gone


def test_demo_keep_leaves_volumes(tmp_path: Path) -> None:
    r = run_demo("--dir", str(tmp_path), "--keep", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    header = (tmp_path / "dep-bitmap.img").read_bytes()[:8]
    assert header == b"PTCOPYBM"
    assert (tmp_path / "overflow.img").read_bytes()[:8] == b"PTCOPYOV"


def test_demo_refuses_existing_files(tmp_path: Path) -> None:
    (tmp_path / "dep-master.img").write_bytes(b"mine")
    r = run_demo("--dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1
    assert "already exists" in r.stderr
    assert (tmp_path / "dep-master.img").read_bytes() == b"mine"  # left alone


def test_demo_engine_error_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    # A bitmap volume too small for the set: the engine refuses the enable.
    monkeypatch.setattr(ptcopy.demo, "bitmap_size", lambda *a: 4096)
    assert ptcopy.demo.main(["--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "engine error (TooSmall)" in err
    assert "bitmap volume" in err
