"""Build the data path the daemon was asked for, by name."""

from __future__ import annotations

import logging

from ptcopy.datapath.base import DataPath
from ptcopy.datapath.kernel import KernelPath, probe
from ptcopy.datapath.null import NullPath
from ptcopy.datapath.userspace import UserspacePath
from ptcopy.engine import Engine

log = logging.getLogger(__name__)

NAMES = ("auto", "kernel", "userspace", "none")


def resolve(name: str) -> str:
    """The path ``name`` stands for: ``auto`` is the kernel path where device-mapper works,
    else the userspace path (the reason is logged)."""
    if name != "auto":
        return name
    why = probe()
    chosen = "userspace" if why else "kernel"
    log.info("data path: %s%s", chosen, f" ({why})" if why else "")
    return chosen


def build(name: str, engine: Engine, run_dir: str) -> DataPath:
    """The data path called ``name`` (one of ``NAMES``), serving under ``run_dir``."""
    name = resolve(name)
    if name == "userspace":
        return UserspacePath(engine, run_dir)
    if name == "kernel":
        return KernelPath(engine, run_dir)
    if name == "none":
        return NullPath(engine)
    raise ValueError(f"unknown data path {name!r}; one of {', '.join(NAMES)}")
