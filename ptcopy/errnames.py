"""The names of ptcopy's errors, defined once.

On D-Bus each is ``org.ptcopy.Imaging1.Error.<name>``; the engine's exceptions, the daemon's
refusals, the CLI's hints and the introspection XML's documentation all use these members, and
tests check that each of them knows every name. A leaf module: it imports nothing of ptcopy, so
the CLI can use it without the engine.
"""

from __future__ import annotations

import enum

PREFIX = "org.ptcopy.Imaging1.Error."


class ErrorName(enum.StrEnum):
    """Every error ptcopy names. The value is the D-Bus error's last part."""

    FAILED = "Failed"                    # anything without a better name
    INVALID_ARGUMENT = "InvalidArgument"  # a value that cannot be right
    NOT_FOUND = "NotFound"               # no such set, group, overflow, volume or job
    EXISTS = "Exists"                    # the name is taken
    NOT_AUTHORIZED = "NotAuthorized"     # the caller may not do that
    NOT_CONFIRMED = "NotConfirmed"       # writing a master needs confirm=true
    IN_USE = "InUse"                     # a volume or served device is held by somebody
    BUSY = "Busy"                        # a copy or update is running
    NO_COPY = "NoCopy"                   # nothing to abort or wait for
    TOO_SMALL = "TooSmall"               # a volume is too small for its role
    SIZE_MISMATCH = "SizeMismatch"       # an independent shadow differs from its master
    SAME_VOLUME = "SameVolume"           # one volume given in two roles
    BAD_HEADER = "BadHeader"             # not a ptcopy bitmap or overflow volume, or damaged
    WRONG_TYPE = "WrongType"             # the set's kind does not allow it
    WRONG_VOLUME = "WrongVolume"         # a path now leads to another volume than recorded
    DEPENDENCY = "Dependency"            # something else depends on it
    OFFLINE = "Offline"                  # a volume of the set is missing or failed
    OUT_OF_SPACE = "OutOfSpace"          # a compact shadow lost chunks when it ran out
    INCOMPLETE = "Incomplete"            # an aborted copy left its target half copied
    NOT_LOCKED = "NotLocked"             # unlock of a set nobody locked
    TIMEOUT = "Timeout"                  # a wait ran out
    IO_ERROR = "IOError"                 # a volume failed a read or write
    EXPORTED = "Exported"                # the shadow is handed to another host
    NOT_EXPORTED = "NotExported"         # join of a shadow that was never exported
    DATA_PATH = "DataPath"               # FUSE, loop devices or device-mapper failed

    @property
    def dbus(self) -> str:
        """The full D-Bus error name."""
        return PREFIX + self.value
