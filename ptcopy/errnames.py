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

    FAILED = "Failed"
    INVALID_ARGUMENT = "InvalidArgument"
    NOT_FOUND = "NotFound"
    EXISTS = "Exists"
    NOT_AUTHORIZED = "NotAuthorized"
    NOT_CONFIRMED = "NotConfirmed"
    IN_USE = "InUse"
    BUSY = "Busy"
    NO_COPY = "NoCopy"
    TOO_SMALL = "TooSmall"
    SIZE_MISMATCH = "SizeMismatch"
    SAME_VOLUME = "SameVolume"
    BAD_HEADER = "BadHeader"
    WRONG_TYPE = "WrongType"
    WRONG_VOLUME = "WrongVolume"
    DEPENDENCY = "Dependency"
    OFFLINE = "Offline"
    OUT_OF_SPACE = "OutOfSpace"
    INCOMPLETE = "Incomplete"
    NOT_LOCKED = "NotLocked"
    TIMEOUT = "Timeout"
    IO_ERROR = "IOError"
    EXPORTED = "Exported"
    NOT_EXPORTED = "NotExported"
    DATA_PATH = "DataPath"

    @property
    def dbus(self) -> str:
        """The full D-Bus error name."""
        return PREFIX + self.value

    @property
    def meaning(self) -> str:
        """What the error says, in a few words (the XML's documentation of it)."""
        return MEANINGS[self]


MEANINGS: dict[ErrorName, str] = {
    ErrorName.FAILED: "anything without a better name",
    ErrorName.INVALID_ARGUMENT: "a value that cannot be right",
    ErrorName.NOT_FOUND: "no such set, group, overflow, volume or job",
    ErrorName.EXISTS: "the name is taken",
    ErrorName.NOT_AUTHORIZED: "the caller may not do that",
    ErrorName.NOT_CONFIRMED: "writing a master needs confirm=true",
    ErrorName.IN_USE: "a volume or served device is held by somebody",
    ErrorName.BUSY: "a copy or update is running",
    ErrorName.NO_COPY: "nothing to abort or wait for",
    ErrorName.TOO_SMALL: "a volume is too small for its role",
    ErrorName.SIZE_MISMATCH: "an independent shadow differs from its master",
    ErrorName.SAME_VOLUME: "one volume given in two roles",
    ErrorName.BAD_HEADER: "not a ptcopy bitmap or overflow volume, or damaged",
    ErrorName.WRONG_TYPE: "the set's kind does not allow it",
    ErrorName.WRONG_VOLUME: "a path now leads to another volume than recorded",
    ErrorName.DEPENDENCY: "something else depends on it",
    ErrorName.OFFLINE: "a volume of the set is missing or failed",
    ErrorName.OUT_OF_SPACE: "a compact shadow lost chunks when it ran out",
    ErrorName.INCOMPLETE: "an aborted copy left its target half copied",
    ErrorName.NOT_LOCKED: "unlock of a set nobody locked",
    ErrorName.TIMEOUT: "a wait ran out",
    ErrorName.IO_ERROR: "a volume failed a read or write",
    ErrorName.EXPORTED: "the shadow is handed to another host",
    ErrorName.NOT_EXPORTED: "join of a shadow that was never exported",
    ErrorName.DATA_PATH: "FUSE, loop devices or device-mapper failed",
}
