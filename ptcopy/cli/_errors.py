"""Every failure the CLI can meet, explained in plain language, with the exit code it gives.

The goal (as stratis-cli's) is an explanation for every error chain: named errors from ptcopyd,
failures of the bus itself, and mistakes on the command line. ``explain`` turns any exception
into a ``CliError``; anything it does not know is reported as an internal error with a pointer to
``--debug``, never as a bare traceback.

Exit codes (as AVS's iiadm):
  0  success;
  1  the command line is wrong or incomplete: nothing was asked of the daemon
     (a syntax error, a bad value, a missing --yes where there is no terminal to ask on,
     a question answered "no");
  2  the request could not be carried out: the daemon refused it or failed, the daemon or the
     bus could not be reached, a named set does not exist, a copy ended badly, or the feature
     is not available yet.
"""

from __future__ import annotations

import enum

from ptcopy.errnames import PREFIX, ErrorName

ERROR_PREFIX = PREFIX
BUS_ERROR_PREFIX = "org.freedesktop.DBus.Error."
POLKIT_ACTION = "org.ptcopy.imaging.manage"


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 1
    FAILED = 2


class CliError(Exception):
    """A failure with a sentence for the user, an optional hint, and an exit code."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageProblem(CliError):
    """The command line is wrong; nothing was sent to the daemon."""

    exit_code = ExitCode.USAGE


class NotConfirmed(UsageProblem):
    """Writing a master needs a yes: --yes, or an answer on a terminal."""


class BusUnreachable(CliError):
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(
            f"cannot connect to the D-Bus bus at {where}: {reason}",
            "ptcopy talks to ptcopyd over D-Bus. Is dbus running? For a daemon on a private bus "
            "give --bus ADDRESS or export DBUS_SYSTEM_BUS_ADDRESS=ADDRESS (scripts/demo.sh "
            "prints the address it uses).")


class HostFailed(CliError):
    """A remote host could not be reached or its connection broke: ssh's reason, explained."""

    def __init__(self, message: str, hint: str = "", kind: str = "failed") -> None:
        super().__init__(message, hint)
        self.kind = kind


class CallTimedOut(CliError):
    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(
            f"ptcopyd did not answer {what} within {seconds:g} s",
            "the daemon may be overloaded or stuck; its log (journalctl -u ptcopyd) says more. "
            "--timeout SECONDS waits longer.")


class NotFoundError(CliError):
    def __init__(self, kind: str, name: str, near: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.near = near
        hint = ""
        if near:
            hint = "did you mean " + " or ".join(repr(n) for n in near) + "?"
        else:
            lister = {"group": "ptcopy group list", "overflow volume": "ptcopy overflow list",
                      "schedule": "ptcopy schedule list"}
            hint = f"{lister.get(kind, 'ptcopy list')} shows what there is"
        super().__init__(f"there is no {kind} named {name!r}", hint)


class WrongKindError(CliError):
    def __init__(self, name: str, found: str, wanted: str) -> None:
        self.found = found
        commands = {"group": "ptcopy group ...", "overflow volume": "ptcopy overflow ...",
                    "set": "ptcopy status/copy/update ..."}
        hint = f"for a {found} use {commands[found]}" if found in commands else ""
        super().__init__(f"{name!r} is a {found}, not a {wanted}", hint)


class JobFailed(CliError):
    def __init__(self, what: str, message: str, hint: str = "") -> None:
        super().__init__(f"{what}: {message}", hint)


class Interrupted(CliError):
    pass


# Hints for ptcopyd's named errors (the daemon's message says what happened; these say what to do).
HINTS: dict[ErrorName, str] = {
    ErrorName.NOT_AUTHORIZED: f"run it as root (sudo ptcopy ...) or get the polkit action "
                              f"{POLKIT_ACTION}; reading (status, list) needs no rights",
    ErrorName.NOT_FOUND: "ptcopy list and ptcopy volumes show what there is",
    ErrorName.IN_USE: "unmount the volume or stop the program holding it, then try again",
    ErrorName.BUSY: "wait for the copy to end (ptcopy wait SET) or stop it (ptcopy abort SET)",
    ErrorName.OFFLINE: "once the volume is back, ptcopy reset SET brings the set back",
    ErrorName.EXISTS: "choose another name (--name NAME)",
    ErrorName.SAME_VOLUME: "master, shadow and bitmap must be three different volumes",
    ErrorName.TOO_SMALL: "use a bigger volume; only a dependent shadow may be smaller than its "
                         "master (a compact shadow)",
    ErrorName.SIZE_MISMATCH: "an independent shadow must be as big as its master",
    ErrorName.WRONG_TYPE: "check the set's kind with ptcopy status SET",
    ErrorName.DEPENDENCY: "detach or remove what depends on it first",
    ErrorName.INCOMPLETE: "the last copy did not finish; run the update again to complete it",
    ErrorName.EXPORTED: "the shadow is handed to another host; join it back first",
    ErrorName.NOT_CONFIRMED: "writing the master needs confirmation (--yes)",
    ErrorName.OUT_OF_SPACE: "attach a bigger overflow volume (ptcopy overflow attach) and update",
    ErrorName.BAD_HEADER: "this is not a ptcopy bitmap or overflow volume (or it is damaged)",
    ErrorName.DATA_PATH: "the data path (FUSE, loop devices) failed; the daemon log says more",
    ErrorName.IO_ERROR: "a volume failed; check the device, then ptcopy reset SET",
    ErrorName.NO_COPY: "no copy is running",
    ErrorName.INVALID_ARGUMENT: "check the values given on the command line",
}
# Errors shown with the daemon's message alone: it names what happened and no general advice
# fits (Failed: anything; NotLocked, NotExported: the request had nothing to act on; Timeout:
# the caller chose the time; WrongVolume: the message names the volume that is not the one
# recorded).
NO_HINT = frozenset({ErrorName.FAILED, ErrorName.NOT_LOCKED, ErrorName.NOT_EXPORTED,
                     ErrorName.TIMEOUT, ErrorName.WRONG_VOLUME})


def hint_for(short: str) -> str:
    """The hint for a ptcopyd error by its short name ('' for none, or a name this CLI does
    not know: a newer daemon's)."""
    try:
        return HINTS.get(ErrorName(short), "")
    except ValueError:
        return ""


class RemoteError(CliError):
    """An error reply from the bus or from ptcopyd, explained."""

    def __init__(self, error_name: str, text: str, *, member: str = "", path: str = "") -> None:
        self.error_name = error_name
        self.text = text
        self.member = member
        message, hint = _explain_remote(error_name, text, member)
        super().__init__(message, hint)

    @property
    def short_name(self) -> str:
        return self.error_name.removeprefix(ERROR_PREFIX)


def _explain_remote(name: str, text: str, member: str) -> tuple[str, str]:
    if name.startswith(ERROR_PREFIX):
        short = name.removeprefix(ERROR_PREFIX)
        if short == ErrorName.NOT_AUTHORIZED:
            return f"not authorized: {text}", HINTS[ErrorName.NOT_AUTHORIZED]
        return text or short, hint_for(short)
    if name in (BUS_ERROR_PREFIX + "ServiceUnknown", BUS_ERROR_PREFIX + "NameHasNoOwner") \
            or name.startswith(BUS_ERROR_PREFIX + "Spawn"):
        return ("ptcopyd is not running on this bus",
                "start it (systemctl start ptcopyd), or for a try-out run "
                "sudo bash scripts/demo.sh, which starts one and prints the --bus address to use")
    if name == BUS_ERROR_PREFIX + "AccessDenied":
        return (f"the bus does not let you talk to ptcopyd: {text}",
                "install ptcopy's bus policy (dbus/org.ptcopy.Imaging1.conf) in "
                "/usr/share/dbus-1/system.d/")
    if name in (BUS_ERROR_PREFIX + "UnknownMethod", BUS_ERROR_PREFIX + "UnknownInterface",
                BUS_ERROR_PREFIX + "UnknownProperty"):
        return (f"this ptcopyd does not offer {member or 'that call'}: {text}",
                "the daemon may be older than the CLI; ptcopy version shows both")
    if name == BUS_ERROR_PREFIX + "UnknownObject":
        return ("the object is gone (it was removed meanwhile)", "ptcopy list shows what there is")
    if name in (BUS_ERROR_PREFIX + "NoReply", BUS_ERROR_PREFIX + "Timeout",
                BUS_ERROR_PREFIX + "TimedOut"):
        return ("ptcopyd did not answer in time", "the daemon log says more")
    if name == BUS_ERROR_PREFIX + "LimitsExceeded":
        return (f"the bus refused the call: {text}", "")
    return (f"{text or 'the call failed'} ({name or 'unnamed D-Bus error'})", "")


def explain(e: BaseException) -> CliError:
    """Any exception as a CliError (unknown ones as an internal error)."""
    if isinstance(e, CliError):
        return e
    if isinstance(e, KeyboardInterrupt):
        return Interrupted("interrupted")
    if isinstance(e, PermissionError):
        return CliError(f"permission denied: {e.filename or e}")
    return CliError(f"internal error: {type(e).__name__}: {e}",
                    "run the command again with --debug and report what it shows")
