"""The engine's FUSE server: the userspace data path's file system, run by engine threads."""

from __future__ import annotations

import os
from typing import Any

from ptcopy.engine._ffi import ffi, lib, new_error
from ptcopy.engine.errors import InvalidArgument, check
from ptcopy.engine.owner import Engine
from ptcopy.engine.sets import Set

__all__ = ["Server"]


class Server:
    """A FUSE mount serving sets' masters and shadows as files (the userspace data path).

    ``<mountpoint>/<name>/master`` and ``.../shadow`` are served by engine threads straight
    from the sets' I/O path; files open with direct I/O, so the kernel caches nothing of them.
    """

    def __init__(self, engine: Engine, mountpoint: str | os.PathLike[str], *,
                 max_threads: int = 16) -> None:
        out = ffi.new("pt_server **")
        err = new_error()
        path = ffi.new("char[]", os.fsencode(mountpoint))
        with engine._use() as h:
            check(lib.pt_server_start(h, path, max_threads, out, err), err)
        self._h: Any = out[0]
        self.mountpoint = os.fspath(mountpoint)
        self._exports: dict[str, Set] = {}

    def _handle(self) -> Any:
        if self._h is None:
            raise InvalidArgument("the server is stopped")
        return self._h

    def export(self, name: str, set_: Set) -> tuple[str, str]:
        """Serve ``set_`` under ``name``; returns the master and shadow file paths."""
        err = new_error()
        with set_._use() as h:
            check(lib.pt_server_export(self._handle(), name.encode(), h, err), err)
        self._exports[name] = set_
        base = os.path.join(self.mountpoint, name)
        return os.path.join(base, "master"), os.path.join(base, "shadow")

    def unexport(self, name: str, *, force: bool = False) -> None:
        """Stop serving ``name``; refused while its files are open unless ``force``."""
        err = new_error()
        check(lib.pt_server_unexport(self._handle(), name.encode(), int(force), err), err)
        self._exports.pop(name, None)

    def rename(self, name: str, new: str) -> tuple[str, str]:
        """Serve ``name``'s set as ``new`` (same inodes: open files keep working); returns
        the new master and shadow file paths."""
        err = new_error()
        check(lib.pt_server_rename(self._handle(), name.encode(), new.encode(), err), err)
        self._exports[new] = self._exports.pop(name)
        base = os.path.join(self.mountpoint, new)
        return os.path.join(base, "master"), os.path.join(base, "shadow")

    def invalidate(self, name: str) -> None:
        """Drop what the kernel caches of ``name``'s files."""
        err = new_error()
        check(lib.pt_server_invalidate(self._handle(), name.encode(), err), err)

    @property
    def exports(self) -> dict[str, Set]:
        return dict(self._exports)

    def stop(self) -> None:
        """Unexport everything and unmount."""
        if self._h is None:
            return
        for name in list(self._exports):
            self.unexport(name, force=True)
        err = new_error()
        h, self._h = self._h, None
        check(lib.pt_server_stop(h, err), err)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
