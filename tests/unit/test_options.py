"""The daemon's validation of what callers send (ptcopy.daemon.options): option dictionaries
with their D-Bus types and ranges, names, paths, chunk sizes, wait timeouts, directions. Every
refusal is a named InvalidArgument error with a message that says what was wrong."""

from __future__ import annotations

import math
from typing import Any

import pytest
from dbus_fast import Variant

from ptcopy.daemon import options
from ptcopy.daemon.errors import ServiceError

SPEC = {"chunk_size": options.Opt("u", "bytes"), "confirm": options.Opt("b", "yes/no"),
        "group": options.Opt("o", "a group")}


def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(ServiceError) as got:
        fn(*args)
    assert got.value.name == "InvalidArgument"
    assert got.value.message
    return got.value.message


def test_parse_takes_known_keys_of_the_right_type() -> None:
    assert options.parse({}, SPEC) == {}
    got = options.parse({"chunk_size": Variant("u", 65536), "confirm": Variant("b", True),
                         "group": Variant("o", "/org/ptcopy/Imaging1/groups/1")}, SPEC)
    assert got == {"chunk_size": 65536, "confirm": True,
                   "group": "/org/ptcopy/Imaging1/groups/1"}


@pytest.mark.parametrize("opts, words", [
    ({"chunk": Variant("u", 1)}, "unknown option 'chunk'"),
    ({"chunk_size": Variant("s", "64k")}, "must be of type 'u'"),
    ({"confirm": Variant("u", 1)}, "must be of type 'b'"),
    ({"chunk_size": 65536}, "not 'int'"),
])
def test_parse_refuses_unknown_keys_and_wrong_types(opts: dict[str, Any], words: str) -> None:
    assert words in refused(options.parse, opts, SPEC)


def test_parse_names_the_known_keys() -> None:
    msg = refused(options.parse, {"x": Variant("b", True)}, SPEC)
    assert "chunk_size, confirm, group" in msg
    assert "none" in refused(options.parse, {"x": Variant("b", True)}, {})


@pytest.mark.parametrize("good", ["a", "db1", "A.b_c-d", "9" * 64])
def test_good_names(good: str) -> None:
    assert options.name(good, "set") == good


@pytest.mark.parametrize("bad", ["", ".hidden", "-x", "a b", "a/b", "x" * 65, "é"])
def test_bad_names(bad: str) -> None:
    assert "set name" in refused(options.name, bad, "set")


def test_paths_are_absolute_bounded_and_without_nul() -> None:
    assert options.path("/dev/loop0", "master") == "/dev/loop0"
    assert "no master path" in refused(options.path, "", "master")
    assert "must be absolute" in refused(options.path, "rel/x", "shadow")
    assert "NUL" in refused(options.path, "/a\0b", "bitmap")
    assert "too long" in refused(options.path, "/" + "x" * 4096, "bitmap")


@pytest.mark.parametrize("size", [0, 4096, 8192, 65536, 1 << 20])
def test_chunk_sizes_that_are_taken(size: int) -> None:
    assert options.chunk_size(size) == size


@pytest.mark.parametrize("size", [1, 2048, 4095, 12288, 2 << 20])
def test_chunk_sizes_that_are_refused(size: int) -> None:
    assert str(size) in refused(options.chunk_size, size)


def test_wait_timeouts() -> None:
    assert options.wait_timeout(0.0) == 0.0
    assert options.wait_timeout(options.WAIT_MAX) == options.WAIT_MAX
    for bad in (-1.0, math.nan, math.inf, options.WAIT_MAX + 1):
        refused(options.wait_timeout, bad)


def test_directions() -> None:
    assert options.direction("shadow") == "shadow" and options.direction("master") == "master"
    assert "'sideways'" in refused(options.direction, "sideways")
