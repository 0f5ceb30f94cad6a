"""Real "hosts" on one machine for the remote tests: each in its own network namespace, reached
over real SSH, with its own system-like bus and its own ptcopyd.

    hosts = start_hosts(3)            # or the make_hosts fixture of tests/remote/conftest.py
    hosts[0].run_ssh("true")          # ssh -F hosts.ssh_config host1 true
    env = hosts.env()                 # PTCOPY_SSH_CONFIG=hosts.ssh_config for `ptcopy --host`
    hosts.stop()

A host's sshd runs inside the host's network namespace, in a mount namespace where /run/dbus is
the host's bus directory: a session there finds the host's bus where a real host has it, so
``ssh host1 systemd-stdio-bridge`` (what ``busctl -H`` runs) reaches host 1's bus.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.bus import PrivateBus
from tests.helpers.daemon import Ptcopyd, finish, remove_leftovers
from tests.helpers.system import run
from tests.remote import netns
from tests.remote.netns import BASE, Link
from tests.remote.sshconf import HostEntry, keygen, ssh_config, sshd_config

USER_RE = re.compile(r"^ptc(\d+)u\d+$")
SSHD = "/usr/sbin/sshd"
_clusters = itertools.count()


def dbus_escape(value: str) -> str:
    """A D-Bus address value: bytes outside the optionally-escaped set as %XX."""
    ok = set("-_/.\\*0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return "".join(c if c in ok else "".join(f"%{b:02x}" for b in c.encode()) for c in value)


@dataclass(eq=False)
class TestHost:
    """One host: a network namespace with an sshd, a bus and the ptcopyd serving on it."""

    __test__ = False   # not a pytest test class

    cluster: TestHosts
    name: str          # its Host name in the client's ssh_config: host1, host2, ...
    link: Link
    dir: Path
    bus: PrivateBus
    daemon: Ptcopyd
    key_line: str      # its host key, "ssh-ed25519 AAAA..."
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Its IPv4 address (sshd listens there, port 22)."""
        return self.link.address

    @property
    def bus_address(self) -> str:
        """Its bus, for direct local access in assertions: ``unix:path=...``."""
        return self.bus.address

    @property
    def entry(self) -> HostEntry:
        return HostEntry(self.name, self.address, self.key_line)

    def known_hosts_line(self) -> str:
        """The known_hosts line that trusts its real host key (name and address)."""
        return self.entry.known_hosts_line()

    # -- the link --

    def stop_link(self) -> None:
        """Cut its link (its side of the veth goes down): packets are dropped silently."""
        self.link.down()

    def start_link(self) -> None:
        self.link.up()

    # -- sshd --

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    def start_sshd(self, timeout: float = 10) -> None:
        """Start its sshd and wait until it listens."""
        assert not self.sshd_running, f"{self.name}: sshd already runs"
        start = self.sshd_log.stat().st_size if self.sshd_log.exists() else 0
        script = 'mount --bind "$1" /run/dbus && exec "$2" -D -f "$3" -e'
        with self.sshd_log.open("ab") as log:
            self.sshd = subprocess.Popen(
                self.link.exec("sh", "-c", script, "sh", str(self.bus.dir), SSHD,
                               str(self.dir / "sshd_config")),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.sshd_log.open("rb") as f:
                f.seek(start)
                if b"Server listening on" in f.read():
                    return
            if self.sshd.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: sshd did not start:\n"
                             f"{self.sshd_log.read_text(errors='replace')[start:]}")

    @property
    def sshd_running(self) -> bool:
        return self.sshd is not None and self.sshd.poll() is None

    def stop_sshd(self) -> None:
        """Stop its listening sshd (sessions already open go on, as with a real sshd)."""
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()

    # -- ptcopyd --

    def kill_daemon(self) -> None:
        """SIGKILL its ptcopyd (a crash: nothing is cleaned up)."""
        self.daemon.kill()

    def stop_daemon(self) -> None:
        """SIGTERM its ptcopyd and check it stopped cleanly."""
        self.daemon.stop_and_check()

    def start_daemon(self) -> None:
        """Start its ptcopyd again on the same state directory."""
        self.daemon.start()

    # -- reaching it --

    def ssh_argv(self, *command: str, user: str | None = None,
                 config: Path | None = None) -> list[str]:
        """``ssh -F CONFIG -xT [-l USER] -- NAME COMMAND...`` (no -n: give stdin yourself)."""
        cfg = config or self.cluster.ssh_config
        return ["ssh", "-F", str(cfg), "-xT", *(["-l", user] if user else []), "--",
                self.name, *command]

    def run_ssh(self, cmd: str | Sequence[str], *, user: str | None = None,
                config: Path | None = None, check: bool = True, timeout: float = 30,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (a shell command line, or argv quoted for the remote shell) on this host
        over SSH, as root or ``user``; fails with its output when ``check`` and it fails."""
        line = cmd if isinstance(cmd, str) else shlex.join(cmd)
        argv = self.ssh_argv(line, user=user, config=config)
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL if input is None else None, check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"{shlex.join(argv)} failed ({r.returncode}): "
                                 f"{r.stderr.strip()} {r.stdout.strip()}")
        return r

    def bus_over_ssh(self, *, user: str | None = None, config: Path | None = None) -> str:
        """The D-Bus address ``busctl -H`` would use for this host, with the fixture's
        ssh_config: ``unixexec:path=ssh,argv1=-F,...,systemd-stdio-bridge``."""
        argv = self.ssh_argv("systemd-stdio-bridge", user=user, config=config)
        return "unixexec:path=ssh," + ",".join(f"argv{i}={dbus_escape(a)}"
                                               for i, a in enumerate(argv[1:], 1))

    def busctl(self, *args: str, user: str | None = None, config: Path | None = None,
               check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``busctl --address=<this host over SSH> ARGS...``."""
        argv = ["busctl", f"--address={self.bus_over_ssh(user=user, config=config)}", *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                           stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: busctl {' '.join(args)} failed "
                                 f"({r.returncode}): {r.stderr.strip()} {r.stdout.strip()}")
        return r

    def heal(self) -> None:
        """Link up, sshd and ptcopyd running, whatever a test left."""
        if not self.link.is_up:
            self.start_link()
        if not self.sshd_running:
            self.start_sshd()
        if not self.daemon.running:
            self.start_daemon()


@dataclass(eq=False)
class TestHosts:
    """Hosts host1..hostN, the client's ssh_config and keys, and a non-root login."""

    __test__ = False

    dir: Path
    user: str          # the non-root login on every host (a system user the fixture made)
    uid: int
    hosts: list[TestHost] = field(default_factory=list)
    _variants: Iterator[int] = field(default_factory=itertools.count)

    @property
    def client_dir(self) -> Path:
        return self.dir / "client"

    @property
    def ssh_config(self) -> Path:
        """The client configuration: ``Host host1`` ... ``Host hostN`` (root), keys checked."""
        return self.client_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.client_dir / "known_hosts"

    @property
    def shared_dir(self) -> Path:
        """A directory every host's ptcopyd takes file volumes from (storage both see)."""
        return self.dir / "shared"

    @property
    def identities(self) -> list[Path]:
        """The client's keys: root's on every host, then the non-root login's."""
        return [self.client_dir / "id_root", self.client_dir / "id_user"]

    def env(self, config: Path | None = None) -> dict[str, str]:
        """This process's environment with PTCOPY_SSH_CONFIG set (for ``ptcopy --host``)."""
        return {**os.environ, "PTCOPY_SSH_CONFIG": str(config or self.ssh_config)}

    def config_with(self, known_hosts_text: str, what: str = "variant") -> Path:
        """A copy of the client configuration whose known_hosts file holds this text."""
        n = next(self._variants)
        kh = self.client_dir / f"known_hosts-{what}-{n}"
        kh.write_text(known_hosts_text)
        cfg = self.client_dir / f"ssh_config-{what}-{n}"
        cfg.write_text(ssh_config([h.entry for h in self.hosts], self.identities, kh))
        return cfg

    def wrong_key_config(self, host: TestHost) -> Path:
        """A client configuration that expects a WRONG key for ``host`` (the others right)."""
        wrong = keygen(self.client_dir / f"wrong-{host.name}-{next(self._variants)}", "wrong")
        text = "".join(HostEntry(h.name, h.address, wrong if h is host else h.key_line)
                       .known_hosts_line() for h in self.hosts)
        return self.config_with(text, f"wrong-{host.name}")

    def untrusted_config(self) -> Path:
        """A client configuration with an empty known_hosts file (no host trusted yet; that
        file is ``UserKnownHostsFile`` in it, for a test that trusts a key explicitly)."""
        return self.config_with("", "untrusted")

    def heal(self) -> None:
        """Every link up, every sshd and ptcopyd running."""
        for h in self.hosts:
            h.heal()

    def __getitem__(self, i: int) -> TestHost:
        return self.hosts[i]

    def __iter__(self) -> Iterator[TestHost]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def by_name(self, name: str) -> TestHost:
        return next(h for h in self.hosts if h.name == name)

    def stop(self, *, check_log: bool = True) -> None:
        """Tear everything down; afterwards fail if a ptcopyd did not stop cleanly, left
        something behind or logged a traceback."""
        try:
            for h in self.hosts:
                h.stop_sshd()
                h.link.delete()
        finally:
            try:
                finish([h.daemon for h in self.hosts], check_log=check_log)
            finally:
                for h in self.hosts:
                    h.bus.stop()
                delete_user(self.user)
                shutil.rmtree(self.dir, ignore_errors=True)


def start_hosts(n: int, *, data_path: str = "userspace",
                daemon_args: Sequence[str] = ()) -> TestHosts:
    """Start ``n`` hosts (host1..hostN), each with its sshd, bus and ptcopyd (``--data-path
    data_path``, file volumes from its own directory and the cluster's shared one, then
    ``daemon_args``). Removes what crashed earlier runs left first. Call ``stop()`` after."""
    cleanup_stale()
    pid, k = os.getpid(), next(_clusters)
    with netns.base_lock():
        subnet = netns.free_subnet(pid * 7 + k)
        base = BASE / f"{pid}-{k}"
        base.mkdir(mode=0o755)
        links = [Link.make(pid, k, i, subnet) for i in range(n)]
        try:
            for link in links:
                link.create()
        except BaseException:
            for link in links:
                link.delete()
            shutil.rmtree(base, ignore_errors=True)
            raise
    user = f"ptc{pid}u{k}"
    hosts = TestHosts(base, user, -1)
    try:
        hosts.uid = create_user(user, base / "home")
        _setup(hosts, links, data_path, list(daemon_args))
    except BaseException:
        hosts.stop(check_log=False)
        for link in links:
            link.delete()
        raise
    return hosts


def _setup(hosts: TestHosts, links: list[Link], data_path: str, daemon_args: list[str]) -> None:
    base = hosts.dir
    for d in (hosts.client_dir, hosts.shared_dir, base / "authorized_keys"):
        d.mkdir(mode=0o755)
    hosts.client_dir.chmod(0o700)
    root_key = keygen(hosts.identities[0], "ptcopy-test-root")
    user_key = keygen(hosts.identities[1], f"ptcopy-test-{hosts.user}")
    (base / "authorized_keys" / "root").write_text(root_key + "\n")
    (base / "authorized_keys" / hosts.user).write_text(user_key + "\n")
    for p in (base / "authorized_keys").iterdir():
        p.chmod(0o644)
    for d in (Path("/run/sshd"), Path("/run/dbus")):   # sshd's privsep dir, the bus's mount point
        d.mkdir(mode=0o755, exist_ok=True)
    args = ["--data-path", data_path, "--file-volumes", str(hosts.shared_dir), *daemon_args]
    for i, link in enumerate(links):
        d = base / f"host{i + 1}"
        d.mkdir(mode=0o755)
        key = keygen(d / "ssh_host_ed25519_key", f"host{i + 1}")
        bus = PrivateBus.start(parent=d)
        h = TestHost(hosts, f"host{i + 1}", link, d, bus, Ptcopyd(bus, d / "daemon", args),
                     key)
        hosts.hosts.append(h)
        (d / "sshd_config").write_text(sshd_config(
            address=link.address, host_key=d / "ssh_host_ed25519_key",
            pid_file=d / "sshd.pid", authorized_keys=base / "authorized_keys",
            bus_socket=bus.socket))
    hosts.known_hosts.write_text("".join(h.known_hosts_line() for h in hosts))
    hosts.ssh_config.write_text(ssh_config([h.entry for h in hosts], hosts.identities,
                                           hosts.known_hosts))
    for h in hosts:   # the daemons start side by side: most of the start-up time
        h.daemon.launch()
    for h in hosts:
        h.start_sshd()
    for h in hosts:
        h.daemon.wait_ready()


# -- the non-root login --

def create_user(name: str, home: Path) -> int:
    """A system user with a real shell and no password (key logins only); its uid."""
    run("useradd", "--system", "--user-group", "--shell", "/bin/bash", "--home-dir", str(home),
        "--no-create-home", "--password", "*", name, timeout=30)
    home.mkdir(mode=0o755, exist_ok=True)
    uid = pwd.getpwnam(name).pw_uid
    os.chown(home, uid, pwd.getpwnam(name).pw_gid)
    return uid


def delete_user(name: str) -> None:
    """Remove a user the fixture made (and its group), if it exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    subprocess.run(["userdel", name], capture_output=True, check=False, timeout=30)


# -- what crashed runs left --

def cleanup_stale() -> None:
    """Remove what runs whose process is gone left: processes started from their directories,
    ptcopyd's mounts and loop devices, network namespaces, login users, directories."""
    for name in netns.stale_netns():
        netns.delete_netns(name)
    if BASE.is_dir():
        for d in BASE.iterdir():
            m = re.match(r"^(\d+)-\d+$", d.name)
            if not m or netns.alive(int(m.group(1))):
                continue
            for pid in processes_mentioning(str(d)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
            for run_dir in d.glob("host*/daemon/run"):
                remove_leftovers(run_dir)
            shutil.rmtree(d, ignore_errors=True)
    for pw in pwd.getpwall():
        m = USER_RE.match(pw.pw_name)
        if m and not netns.alive(int(m.group(1))):
            delete_user(pw.pw_name)


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line contains ``text`` (a crashed run's directory)."""
    found = []
    me = os.getpid()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == me:
            continue
        try:
            cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(p.name))
    return found


def skip_reason() -> str | None:
    """Why the test hosts cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd, ptcopyd)"
    for tool in ("ip", "ssh", "ssh-keygen", SSHD, "busctl", "dbus-daemon",
                 "systemd-stdio-bridge", "useradd", "losetup"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup.sh installs it)"
    return None

