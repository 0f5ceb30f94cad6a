"""Where a remote host is: an SSH destination ``[USER@]HOST[:PORT]`` (HOST may also be an alias
from the ssh configuration, or ``[IPv6]``), and the D-Bus object id of a registered host name."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Conservative on purpose: the host and user go into an ssh command line, and a value starting
# with "-" would be read as an option.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.%-]*")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")


class BadTarget(ValueError):
    """A host or target that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class Target:
    """An SSH destination. ``port`` 0 and ``user`` "" leave them to the ssh configuration."""

    host: str
    user: str = ""
    port: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port else text

    def ssh_args(self) -> list[str]:
        """ssh's options for the user and port (the host itself goes after ``--``)."""
        args: list[str] = []
        if self.user:
            args += ["-l", self.user]
        if self.port:
            args += ["-p", str(self.port)]
        return args


def parse_target(text: str) -> Target:
    """``[USER@]HOST[:PORT]`` to a Target; BadTarget names what is wrong."""
    rest = text.strip()
    if not rest:
        raise BadTarget("the host is empty")
    user = ""
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not _USER.fullmatch(user):
            raise BadTarget(f"{text!r}: {user!r} is not a user name")
    port = 0
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep or not host or not re.fullmatch(r"[0-9A-Fa-f:.%A-Za-z]+", host):
            raise BadTarget(f"{text!r}: a bracketed address must be [IPv6]")
        if tail:
            if not tail.startswith(":"):
                raise BadTarget(f"{text!r}: only :PORT may follow [{host}]")
            port = _port(text, tail[1:])
    else:
        host, sep, p = rest.partition(":")
        if sep:
            port = _port(text, p)
        if not _HOST.fullmatch(host):
            raise BadTarget(f"{text!r}: {host!r} is not a host name or address")
    return Target(host=host, user=user, port=port)


def _port(text: str, p: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise BadTarget(f"{text!r}: {p!r} is not a port (1-65535)")
    return int(p)


def check_host_name(name: str) -> str:
    """A name for the host registry: letters, digits, '_', '.', '-' (up to 63), not starting
    with '.' or '-'. Returns it; BadTarget otherwise."""
    if not _NAME.fullmatch(name):
        raise BadTarget(f"{name!r} is not a host name for the registry: use letters, digits, "
                        f"'_', '.' and '-' (at most 63), starting with a letter or digit")
    return name


def host_object_id(name: str) -> str:
    """The last element of a registered host's object path (/org/ptcopy/Imaging1/hosts/<id>):
    the name with every byte other than [A-Za-z0-9] escaped as _XX, so a client finds a host by
    name with one property read and no listing."""
    return "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in name)
