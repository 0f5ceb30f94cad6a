"""The SSH side of the test hosts: keys made with ssh-keygen, each host's sshd_config, and the
client's ssh_config and known_hosts files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.helpers.system import run


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path`` (and ``path``.pub); its public line "type base64"."""
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path),
        timeout=30)
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def sshd_config(*, address: str, host_key: Path, pid_file: Path, authorized_keys: Path,
                bus_socket: Path) -> str:
    """A host's sshd configuration: key logins only (root without a password ever), the login
    files of the fixture, and the host's bus in the environment of every session."""
    return f"""\
ListenAddress {address}:22
HostKey {host_key}
PidFile {pid_file}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile {authorized_keys}/%u
X11Forwarding no
PrintMotd no
PrintLastLog no
# the all-hosts tests and benchmarks open many sessions at once
MaxStartups 100
MaxSessions 100
# sessions also see the bus at /run/dbus/system_bus_socket (a bind mount of the host's bus
# directory in sshd's mount namespace), which systemd-stdio-bridge uses: Debian 12's bridge
# ignores DBUS_SYSTEM_BUS_ADDRESS; busctl --system and dbus-fast honour it
SetEnv DBUS_SYSTEM_BUS_ADDRESS=unix:path={bus_socket}
"""


@dataclass
class HostEntry:
    """One ``Host`` block of the client's configuration."""

    name: str
    address: str
    key_line: str   # the host's public key, "ssh-ed25519 AAAA..."

    def known_hosts_line(self) -> str:
        """The line a known_hosts file trusts this host's key with (by name and address)."""
        return f"{self.name},{self.address} {self.key_line}\n"


def ssh_config(entries: list[HostEntry], identities: list[Path], known_hosts: Path) -> str:
    """The client configuration: one ``Host`` block per host (its name, address, root by
    default), then what every target shares, also a bare ``[user@]address``: every identity is
    offered (the server takes the one authorized for the login user), host keys are checked
    against ``known_hosts`` only, and nothing can prompt."""
    blocks = "".join(f"Host {e.name}\n    HostName {e.address}\n\n" for e in entries)
    ids = "".join(f"    IdentityFile {p}\n" for p in identities)
    return blocks + "Host *\n    Port 22\n    User root\n" + ids + f"""\
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    HashKnownHosts no
    CheckHostIP no
    BatchMode yes
    ConnectTimeout 5
    ServerAliveInterval 2
    ServerAliveCountMax 3
    ControlMaster no
    ControlPath none
    ForwardX11 no
    LogLevel ERROR
"""
