"""Fixtures and checks shared by every test tier."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ASAN_BUILD = REPO / "build" / "asan"


def pytest_configure(config: pytest.Config) -> None:
    """In the sanitizer pass (scripts/test.sh sets PTCOPY_EXPECT_ASAN=1), refuse to run unless the
    engine imported is the ASan/UBSan build in build/asan/ and the ASan runtime is loaded: a pass
    that silently tested the normal build would prove nothing."""
    if os.environ.get("PTCOPY_EXPECT_ASAN") != "1":
        return
    try:
        import ptcopy._engine as engine
    except ImportError as exc:
        raise pytest.UsageError(
            f"PTCOPY_EXPECT_ASAN=1 but ptcopy._engine cannot be imported: {exc}"
        ) from exc
    where = Path(engine.__file__).resolve()
    if not where.is_relative_to(ASAN_BUILD.resolve()):
        raise pytest.UsageError(
            f"PTCOPY_EXPECT_ASAN=1 but ptcopy._engine was imported from {where}, not from the "
            f"sanitizer build under {ASAN_BUILD} (is PYTHONPATH={ASAN_BUILD} set, and does "
            "something put the repository root ahead of it on sys.path?)"
        )
    maps = Path("/proc/self/maps").read_text()
    if "libasan" not in maps:
        raise pytest.UsageError(
            "PTCOPY_EXPECT_ASAN=1 but the ASan runtime is not loaded"
            " (is LD_PRELOAD=libasan.so missing?)"
        )


@pytest.fixture
def tmp_vol(tmp_path: Path) -> Callable[..., Path]:
    """Factory for volumes backed by sparse files: ``tmp_vol(size)`` or ``tmp_vol(size, "name")``
    creates a file of ``size`` bytes (a hole, no blocks allocated) in the test's tmp_path and
    returns its path."""
    count = 0

    def make(size: int, name: str | None = None) -> Path:
        nonlocal count
        if size < 0:
            raise ValueError(f"volume size must be >= 0, not {size}")
        if name is None:
            name = f"vol{count}.img"
            count += 1
        path = tmp_path / name
        with path.open("xb"):
            pass
        os.truncate(path, size)
        return path

    return make
