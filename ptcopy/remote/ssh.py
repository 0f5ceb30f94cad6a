"""The ssh command line ptcopy runs to reach a remote bus, and what its failures mean.

Every connection runs in batch mode with strict host key checking, whatever the user's ssh
configuration says (options on the command line win over the configuration files): no password
or passphrase prompt can hang a command, and an unknown or changed host key is a refusal, never
a silent first-use trust. Accepting a new key is an explicit step (``ptcopy hosts trust``).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from ptcopy.remote.targets import Target

# An ssh client configuration file to use instead of ~/.ssh/config (ssh -F): the tests' hosts,
# or a site's dedicated configuration. Unset: ssh's own defaults.
SSH_CONFIG_ENV = "PTCOPY_SSH_CONFIG"
BRIDGE = ("systemd-stdio-bridge",)


def _config_from_env() -> str | None:
    return os.environ.get(SSH_CONFIG_ENV) or None


@dataclass(frozen=True)
class SshOptions:
    """How long to wait: for the connection and login (``connect_timeout``), and for a link
    that went silent (keepalives every ``alive_interval`` s, given up after ``alive_count``
    unanswered ones)."""

    connect_timeout: float = 10.0
    alive_interval: int = 3
    alive_count: int = 2
    config: str | None = field(default_factory=_config_from_env)

    @property
    def silence_limit(self) -> float:
        """Seconds after which ssh gives up on a link that stopped answering."""
        return float(self.alive_interval * (self.alive_count + 1))


def ssh_argv(target: Target, opts: SshOptions, command: Sequence[str] = BRIDGE) -> list[str]:
    """The ssh command that runs ``command`` on ``target`` with stdio relayed."""
    argv = ["ssh", "-xT",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={max(1, math.ceil(opts.connect_timeout))}",
            "-o", f"ServerAliveInterval={opts.alive_interval}",
            "-o", f"ServerAliveCountMax={opts.alive_count}",
            "-o", "ClearAllForwardings=yes",
            "-o", "LogLevel=INFO"]   # INFO: ssh says why it gave up on a silent link
    if opts.config:
        argv += ["-F", opts.config]
    return [*argv, *target.ssh_args(), "--", target.host, *command]


@dataclass(frozen=True)
class SshFailure:
    """Why ssh ended: ``kind`` is one of unreachable, host-key, changed-key, login, no-bridge,
    lost, failed; ``message`` is a sentence naming the host; ``hint`` what to do."""

    kind: str
    message: str
    hint: str = ""


# (kind, pattern in ssh's stderr, sentence after "<host>: ", hint); first match wins.
_PATTERNS: tuple[tuple[str, str, str, str], ...] = (
    ("changed-key", r"REMOTE HOST IDENTIFICATION HAS CHANGED|host key for .* has changed",
     "its host key has CHANGED since it was recorded (someone may be intercepting the "
     "connection, or the host was reinstalled)",
     "check the new key with the host's administrator; then remove the old line from your "
     "known_hosts (ssh-keygen -R HOST) and run ptcopy hosts trust HOST"),
    ("host-key", r"Host key verification failed|No .* host key is known",
     "its host key is not known here, so ptcopy does not trust it",
     "ptcopy hosts trust HOST shows the key's fingerprint and records it once you confirm"),
    ("login", r"Permission denied|Too many authentication failures",
     "it refused the login (no key it accepts; ptcopy never asks for a password)",
     "install your public key in the remote user's ~/.ssh/authorized_keys, or use ssh-agent"),
    ("no-bridge", r"systemd-stdio-bridge.*(not found|No such file)",
     "it has no systemd-stdio-bridge to reach its bus", "install systemd on that host"),
    ("lost", r"Timeout, server .* not responding|Broken pipe|Connection reset|"
             r"closed by remote host|Connection to .* closed",
     "the connection was lost", "the operation may go on there: check with ptcopy --host HOST "
                                "status once the host is reachable again"),
    ("unreachable", r"Connection timed out|timed out during banner exchange|No route to host|"
                    r"Network is unreachable|Connection refused|Could not resolve hostname|"
                    r"Name or service not known|Temporary failure in name resolution",
     "it cannot be reached", "check that the host is up and its sshd listens"),
)


def explain_failure(target: Target | str, stderr: str, returncode: int | None) -> SshFailure:
    """What ssh's stderr and exit status mean, in one sentence naming the host."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = lines[-1].removeprefix("ssh: ") if lines else ""
    for kind, pattern, sentence, hint in _PATTERNS:
        if re.search(pattern, stderr):
            detail = f" (ssh: {said})" if said else ""
            return SshFailure(kind, f"host {target}: {sentence}{detail}",
                              hint.replace("HOST", str(target)))
    if returncode == 127:
        return SshFailure("no-bridge", f"host {target}: systemd-stdio-bridge was not found "
                          f"there", "install systemd on that host")
    status = f"ssh exited with status {returncode}" if returncode is not None else "ssh stopped"
    return SshFailure("failed", f"host {target}: {said or status}")


# ---- explicit trust of a host key ---------------------------------------------------------


@dataclass(frozen=True)
class HostKey:
    """One host key as ssh-keyscan reports it, with its fingerprint."""

    line: str          # the known_hosts line
    kind: str          # ssh-ed25519, ...
    fingerprint: str   # SHA256:...


def effective(target: Target, opts: SshOptions) -> dict[str, list[str]]:
    """ssh's effective configuration for ``target`` (``ssh -G``): key -> values."""
    argv = ["ssh", "-G", *(["-F", opts.config] if opts.config else []), *target.ssh_args(),
            "--", target.host]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if r.returncode != 0:
        raise OSError(f"ssh -G {target}: {r.stderr.strip() or r.returncode}")
    out: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key.lower(), []).append(value)
    return out


def scan_keys(target: Target, opts: SshOptions) -> tuple[list[HostKey], str]:
    """The host's keys, fetched without trusting them, and the known_hosts file they would go
    to (the first UserKnownHostsFile of the configuration)."""
    conf = effective(target, opts)
    hostname = conf.get("hostname", [target.host])[0]
    port = conf.get("port", ["22"])[0]
    known = os.path.expanduser(conf.get("userknownhostsfile", ["~/.ssh/known_hosts"])[0]
                               .split()[0])
    timeout = str(max(1, math.ceil(opts.connect_timeout)))
    r = subprocess.run(["ssh-keyscan", "-T", timeout, "-p", port, "--", hostname],
                       capture_output=True, text=True, timeout=opts.connect_timeout + 10,
                       check=False)
    keys: list[HostKey] = []
    for line in r.stdout.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        # record it under the name ssh looks up: the alias's HostName and port
        _, kind, blob = line.split(None, 2)
        name = hostname if port == "22" else f"[{hostname}]:{port}"
        entry = f"{name} {kind} {blob.split()[0]}"
        fp = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=entry, capture_output=True,
                            text=True, timeout=10, check=False)
        fingerprint = fp.stdout.split()[1] if fp.returncode == 0 and fp.stdout else "?"
        keys.append(HostKey(entry, kind, fingerprint))
    if not keys:
        raise OSError(f"host {target}: no host key could be fetched "
                      f"({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no answer'})")
    return keys, known


def record_keys(keys: Sequence[HostKey], known_hosts: str) -> None:
    """Append the keys to a known_hosts file (created 0600 with its directory 0700)."""
    d = os.path.dirname(known_hosts)
    if d:
        os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        for k in keys:
            f.write(k.line + "\n")
