"""Fixtures shared by the engine tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ptcopy.engine import Engine


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An engine handle, closed after the test (with whatever sets it still holds)."""
    e = Engine()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def eng() -> Iterator[Engine]:
    """An engine handle used as a context manager (the negative tests' name for it)."""
    with Engine() as e:
        yield e
