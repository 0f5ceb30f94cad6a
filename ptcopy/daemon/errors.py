"""The daemon's refusals: what the Service raises when it will not do what it is asked.

They carry an ``ErrorName`` (defined once, in ptcopy.errnames); ``ptcopy.daemon.dbus.errors``
turns them, and every other failure, into named D-Bus errors at the bus boundary.
"""

from __future__ import annotations

from ptcopy.errnames import ErrorName


class ServiceError(Exception):
    """A request the daemon refuses; ``name`` becomes org.ptcopy.Imaging1.Error.<name>."""

    def __init__(self, name: ErrorName, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def invalid(message: str) -> ServiceError:
    """A value that cannot be right."""
    return ServiceError(ErrorName.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServiceError:
    """No such set, group, overflow volume, volume or job."""
    return ServiceError(ErrorName.NOT_FOUND, message)
