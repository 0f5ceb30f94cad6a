"""The engine's error tree, and the one place where a failed engine call becomes an exception.

Each class's ``name`` is its :class:`~ptcopy.errnames.ErrorName`, which is also its D-Bus error
name (``org.ptcopy.Imaging1.Error.<name>``); ``code`` is the engine's code (an errno, or a
``PT_E_*`` from ``ptcopy_engine.h``). Python code raises them too: ``InUse("message")`` takes the
class's own code, ``InUse(code, "message")`` an explicit one.
"""

from __future__ import annotations

import errno
import os
from typing import Any, ClassVar, overload

from ptcopy.engine._ffi import ffi, lib
from ptcopy.errnames import ErrorName

__all__ = [
    "BadHeader", "Closed", "CopyInProgress", "Dependency", "InUse", "Incomplete",
    "InvalidArgument", "NoCopy", "NotFound", "NotLocked", "Offline", "OutOfSpace", "PtcopyError",
    "SameVolume", "SizeMismatch", "Timeout", "TooSmall", "VolumeIOError", "WrongKind", "check",
    "error_class",
]


class PtcopyError(Exception):
    """An engine call failed. ``code`` is the engine's code (errno or PT_E_*)."""

    # a StrEnum: comparisons and concatenation with strings keep working
    name: ClassVar[ErrorName] = ErrorName.FAILED
    default_code: ClassVar[int] = 0   # none: the base class is raised only with a code
    code: int
    message: str

    def __init_subclass__(cls, *, name: ErrorName | None = None, code: int | None = None,
                          **kwargs: Any) -> None:
        """``class InUse(PtcopyError, name=ErrorName.IN_USE, code=lib.PT_E_IN_USE)``: the
        class's name and default code; a subclass without them inherits its parent's."""
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if code is not None:
            cls.default_code = code

    @overload
    def __init__(self, message: str, /) -> None: ...

    @overload
    def __init__(self, code: int, message: str) -> None: ...

    def __init__(self, code: int | str, message: str | None = None) -> None:
        if isinstance(code, str):
            if message is not None:
                raise TypeError(f"{type(self).__name__}(code, message): the code comes first")
            self.code, self.message = self.default_code, code
        elif message is None:
            raise TypeError(f"{type(self).__name__}({code}) has no message")
        else:
            self.code, self.message = code, message
        super().__init__(self.message)


class InvalidArgument(PtcopyError, name=ErrorName.INVALID_ARGUMENT, code=lib.PT_E_INVALID):
    """An argument is out of range or malformed."""


class TooSmall(PtcopyError, name=ErrorName.TOO_SMALL, code=lib.PT_E_TOO_SMALL):
    """A volume is smaller than its role needs."""


class BadHeader(PtcopyError, name=ErrorName.BAD_HEADER, code=lib.PT_E_BAD_HEADER):
    """Not a ptcopy bitmap or overflow volume, or a damaged one."""


class SizeMismatch(PtcopyError, name=ErrorName.SIZE_MISMATCH, code=lib.PT_E_SIZE_MISMATCH):
    """A volume's size differs from what it must be (or what the header records)."""


class InUse(PtcopyError, name=ErrorName.IN_USE, code=lib.PT_E_IN_USE):
    """A volume is already used, or the set is locked by another owner."""


class CopyInProgress(PtcopyError, name=ErrorName.BUSY, code=lib.PT_E_COPY_IN_PROGRESS):
    """A copy or update is running."""


class WrongKind(PtcopyError, name=ErrorName.WRONG_TYPE, code=lib.PT_E_WRONG_KIND):
    """The set's kind does not allow the operation."""


class Dependency(PtcopyError, name=ErrorName.DEPENDENCY, code=lib.PT_E_DEPENDENCY):
    """Something still depends on it."""


class Offline(PtcopyError, name=ErrorName.OFFLINE, code=lib.PT_E_OFFLINE):
    """A volume of the set is offline."""


class OutOfSpace(PtcopyError, name=ErrorName.OUT_OF_SPACE, code=lib.PT_E_OUT_OF_SPACE):
    """A compact shadow lost point-in-time chunks when it ran out of space."""


class SameVolume(PtcopyError, name=ErrorName.SAME_VOLUME, code=lib.PT_E_SAME_VOLUME):
    """One volume given in two roles."""


class NotLocked(PtcopyError, name=ErrorName.NOT_LOCKED, code=lib.PT_E_NOT_LOCKED):
    """Unlock of a set nobody locked."""


class Incomplete(PtcopyError, name=ErrorName.INCOMPLETE, code=lib.PT_E_INCOMPLETE):
    """An aborted copy left its target incomplete."""


class Timeout(PtcopyError, name=ErrorName.TIMEOUT, code=lib.PT_E_TIMEOUT):
    """A wait ran out."""


class NotFound(PtcopyError, name=ErrorName.NOT_FOUND, code=lib.PT_E_NOT_FOUND):
    """No such thing (device, set, name)."""


class NoCopy(PtcopyError, name=ErrorName.NO_COPY, code=lib.PT_E_NO_COPY):
    """Abort or wait with no copy running."""


class VolumeIOError(PtcopyError, name=ErrorName.IO_ERROR, code=lib.PT_E_IO):
    """An I/O error took a volume offline."""


class Closed(InvalidArgument, name=ErrorName.NOT_FOUND, code=lib.PT_E_CLOSED):
    """The set, overflow volume or engine is closed, disabled or deleted, or being so: the call
    never reached it (or, for a wait, stopped waiting on it). On D-Bus the object is gone:
    ``NotFound``. A subclass of InvalidArgument, which closed handles raised before."""


# Each PT_E_* code raises the class whose own code it is; a few errnos have a class too.
# PT_E_ALREADY and other errnos raise PtcopyError itself ("Failed").
_ENGINE_ERRORS: tuple[type[PtcopyError], ...] = (
    InvalidArgument, TooSmall, BadHeader, SizeMismatch, InUse, CopyInProgress, WrongKind,
    Dependency, Offline, OutOfSpace, SameVolume, NotLocked, Incomplete, VolumeIOError, Timeout,
    NotFound, NoCopy, Closed,
)
_BY_CODE: dict[int, type[PtcopyError]] = {cls.default_code: cls for cls in _ENGINE_ERRORS} | {
    errno.ENOENT: NotFound,
    errno.EIO: VolumeIOError,
    errno.EBUSY: InUse,
    errno.EINVAL: InvalidArgument,
}


def error_class(code: int) -> type[PtcopyError]:
    """The exception class the engine's ``code`` raises."""
    return _BY_CODE.get(code, PtcopyError)


def check(rc: int, err: Any) -> None:
    """Raise the exception for a failed engine call (rc < 0); ``err`` is its ``pt_error``."""
    if rc >= 0:
        return
    code = err.code or -rc
    message = ffi.string(err.msg).decode("utf-8", "replace") if err.code else ""
    if not message:
        # below the first PT_E_* code, codes are errnos
        message = os.strerror(code) if code < lib.PT_E_INVALID else f"engine error {code}"
    raise error_class(code)(code, message)
