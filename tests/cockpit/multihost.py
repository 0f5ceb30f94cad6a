"""Cockpit 287's multi-host mode against a test host (tests/remote/testhosts.py).

How Cockpit 287 reaches another host: the shell (``/@ADDRESS/ptcopy``) lists the machines of
``$XDG_CONFIG_DIRS/cockpit/machines.d/*.json``; a channel for such a host makes the local
cockpit-bridge spawn ``cockpit-ssh ADDRESS`` (cockpit-bridge's ``ssh`` package), which logs in
with libssh and runs that host's own ``cockpit-bridge``; that bridge serves the host's packages
(the page's files come from there) and its system bus. cockpit-ssh trusts a host key found in
``$COCKPIT_SSH_KNOWN_HOSTS_FILE`` and logs in with the login's password or a key in the
session's ssh-agent (the bridge starts one); a key gets there as Cockpit's *Session > SSH keys*
dialog loads it: ``ssh-add`` run by the session's bridge (:func:`load_key`). Nothing here
touches /etc or root's home: the local cockpit-ws gets its own HOME, XDG_CONFIG_DIRS and
known-hosts file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.names import REPO
from tests.remote.testhosts import TestHost

COCKPIT_SHARE = Path("/usr/share/cockpit")
COCKPIT_SSH = "/usr/lib/cockpit/cockpit-ssh"


@dataclass
class Remote:
    """A cockpit-ws whose shell knows ``host``."""

    host: TestHost
    shell_url: str     # the page for the host in the shell: http://.../@ADDRESS/ptcopy
    local_page: str    # the page on this host, without the shell
    key: Path          # root's key of the test hosts, in the session's ~/.ssh


def ws_environment(host: TestHost, base: Path) -> dict[str, str]:
    """The environment of a cockpit-ws (and its bridge and cockpit-ssh) that knows ``host``:
    a machines.d entry, the host's real key as known, and root's key of the test hosts as the
    login (the hosts allow root by key only, as a real server would)."""
    config = base / "config"
    machines = config / "cockpit" / "machines.d"
    machines.mkdir(parents=True)
    (machines / "05-ptcopy-test.json").write_text(json.dumps(
        {host.address: {"address": host.address, "visible": True}}))
    ssh_dir = base / "home" / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    key = host.cluster.identities[0]   # root's key on every test host
    for suffix in ("", ".pub"):
        shutil.copyfile(key.with_name(key.name + suffix), ssh_dir / ("id_ed25519" + suffix))
    (ssh_dir / "id_ed25519").chmod(0o600)
    known = base / "known_hosts"
    known.write_text(host.known_hosts_line())
    return {"XDG_CONFIG_DIRS": str(config), "COCKPIT_SSH_KNOWN_HOSTS_FILE": str(known)}


def install_page(host: TestHost) -> None:
    """Install the page on ``host`` where the package puts it (/usr/share/cockpit/ptcopy):
    only inside the host's mount namespace (its sshd's, which its sessions and so its
    cockpit-bridge get), as a copy of the files (the package installs copies)."""
    assert host.sshd is not None and host.sshd_running, f"{host.name}: sshd is not running"
    share = host.dir / "cockpit-share"
    shutil.copytree(COCKPIT_SHARE, share, symlinks=True)
    shutil.copytree(REPO / "cockpit" / "ptcopy", share / "ptcopy")
    subprocess.run(["nsenter", f"--target={host.sshd.pid}", "--mount", "--", "mount", "--bind",
                    str(share), str(COCKPIT_SHARE)], check=True, capture_output=True, timeout=30)


def load_key(driver: Any, remote: Remote) -> None:
    """Load the login key into the session's ssh-agent, as Cockpit's *SSH keys* dialog does
    (``ssh-add KEY`` through the session's bridge), from a page of this host."""
    driver.get(remote.local_page)
    said = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const wait = () => window.cockpit ? cockpit.spawn(['ssh-add', arguments[0]], {err: 'out'})"
        "  .then(() => done('loaded'), e => done('ssh-add failed: ' + (e.message || e)))"
        "  : setTimeout(wait, 50);"
        "wait();", str(remote.key))
    assert said == "loaded", said
