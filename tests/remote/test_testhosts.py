"""The test hosts themselves, proven with standard tools only (ssh, busctl, dbus-send): each host
is reached over real SSH, its bus over ``ssh host systemd-stdio-bridge`` is its own, host keys
are checked without a prompt, a cut link or a stopped sshd fails within the connect timeout, and
the non-root login reads but may not mutate."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers.names import BUS_NAME, DBUS, MANAGER, MIB, PROPS, ROOT
from tests.remote import netns
from tests.remote.fixtures import MakeHosts
from tests.remote.testhosts import TestHost, TestHosts, cleanup_stale

pytestmark = pytest.mark.root

# ssh's ConnectTimeout in the fixture's ssh_config is 5 s: a bound that a hang would exceed
BOUND = 15


def bus_id(h: TestHost, *, over_ssh: bool) -> str:
    args = ("call", DBUS, "/org/freedesktop/DBus", DBUS, "GetId")
    r = h.busctl(*args) if over_ssh else h.bus.busctl(*args)
    return r.stdout.split()[1].strip('"')


def version(h: TestHost) -> str:
    r = h.busctl("call", BUS_NAME, ROOT, PROPS, "Get", "ss", MANAGER, "Version")
    assert r.stdout.startswith("v s "), r.stdout
    return r.stdout.split()[2].strip('"')


def ssh_fails(h: TestHost, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``ssh host true`` must fail (255: ssh's own error) without hanging."""
    r = h.run_ssh("true", config=config, check=False, timeout=BOUND)
    assert r.returncode == 255, (r.returncode, r.stderr)
    return r


@pytest.fixture
def hosts(make_hosts: MakeHosts) -> TestHosts:
    return make_hosts(3)


def test_ssh_reaches_every_host(hosts: TestHosts) -> None:
    for h in hosts:
        h.run_ssh("true")
        # the session runs inside the host's network namespace
        r = h.run_ssh(["ip", "-4", "-o", "addr", "show"])
        assert f"inet {h.address}/30" in r.stdout
        others = [o.address for o in hosts if o is not h]
        assert not any(f"inet {a}/" in r.stdout for a in others), r.stdout
        # a bare [user@]address (no Host block of its own) is configured as well
        subprocess.run(["ssh", "-F", str(hosts.ssh_config), f"root@{h.address}", "true"],
                       stdin=subprocess.DEVNULL, check=True, timeout=BOUND)


def test_bridge_reaches_the_hosts_own_bus(hosts: TestHosts) -> None:
    """``ssh hostN systemd-stdio-bridge`` (busctl -H) is hostN's bus and hostN's ptcopyd."""
    ids = []
    for h in hosts:
        ids.append(bus_id(h, over_ssh=True))
        assert ids[-1] == bus_id(h, over_ssh=False), h.name
        # a session's system bus (busctl --system, dbus-fast) is the host's too
        r = h.run_ssh(["busctl", "--system", "call", DBUS, "/org/freedesktop/DBus", DBUS,
                       "GetId"])
        assert r.stdout.split() == ["s", f'"{ids[-1]}"'], r.stdout
        assert version(h)
        r = h.busctl("call", DBUS, "/org/freedesktop/DBus", DBUS,
                     "GetConnectionUnixProcessID", "s", BUS_NAME)
        assert h.daemon.proc is not None
        assert r.stdout.split() == ["u", str(h.daemon.proc.pid)], (h.name, r.stdout)
    assert len(set(ids)) == len(hosts), ids


def test_a_set_made_on_host1_is_seen_on_host1_only(hosts: TestHosts) -> None:
    h1, h2 = hosts[0], hosts[1]
    name = f"s-{uuid.uuid4().hex[:8]}"
    m, s, b = h1.daemon.set_volumes(4 * MIB)
    made = h1.bus.busctl("call", BUS_NAME, ROOT, MANAGER, "CreateSet", "sssssa{sv}", name,
                         "dependent", m, s, b, "1", "loop", "b", "false")
    path = made.stdout.split()[1]
    r = h1.busctl("call", BUS_NAME, ROOT, MANAGER, "LookUp", "s", name)
    assert r.stdout.split() == ["o", path]
    r = h2.busctl("call", BUS_NAME, ROOT, MANAGER, "LookUp", "s", name)
    assert r.stdout.split() == ["o", '"/"'], r.stdout   # LookUp's "no such object"


def test_the_daemon_can_crash_and_restart(hosts: TestHosts) -> None:
    """kill_daemon: the name has no owner over SSH; start_daemon: back, its sets kept."""
    h = hosts[2]
    name = f"s-{uuid.uuid4().hex[:8]}"
    m, s, b = h.daemon.set_volumes(4 * MIB)
    made = h.bus.busctl("call", BUS_NAME, ROOT, MANAGER, "CreateSet", "sssssa{sv}", name,
                        "dependent", m, s, b, "1", "loop", "b", "false")
    h.kill_daemon()
    r = h.busctl("call", BUS_NAME, ROOT, MANAGER, "LookUp", "s", name, check=False)
    assert r.returncode != 0 and BUS_NAME in r.stderr, r
    h.start_daemon()
    r = h.busctl("call", BUS_NAME, ROOT, MANAGER, "LookUp", "s", name)
    assert r.stdout.split() == ["o", made.stdout.split()[1]], r.stdout


def test_a_wrong_host_key_is_refused_without_a_prompt(hosts: TestHosts) -> None:
    bad = hosts.wrong_key_config(hosts[1])
    r = ssh_fails(hosts[1], config=bad)
    assert "Host key verification failed" in r.stderr, r.stderr
    hosts[0].run_ssh("true", config=bad)   # the others' keys are right in it


def test_an_unknown_host_is_trusted_only_explicitly(hosts: TestHosts) -> None:
    cfg = hosts.untrusted_config()
    r = ssh_fails(hosts[0], config=cfg)
    assert "Host key verification failed" in r.stderr, r.stderr
    known = cfg.read_text().split("UserKnownHostsFile ")[1].split()[0]
    with open(known, "a") as f:
        f.write(hosts[0].known_hosts_line())
    hosts[0].run_ssh("true", config=cfg)


def test_a_cut_link_fails_within_the_connect_timeout(hosts: TestHosts) -> None:
    h = hosts[1]
    h.stop_link()
    try:
        r = ssh_fails(h)
        assert "port 22" in r.stderr, r.stderr
        hosts[0].run_ssh("true")   # the other hosts are not affected
    finally:
        h.start_link()
    h.run_ssh("true")


def test_a_stopped_sshd_is_refused_at_once(hosts: TestHosts) -> None:
    h = hosts[2]
    h.stop_sshd()
    r = ssh_fails(h)
    assert "Connection refused" in r.stderr, r.stderr
    h.start_sshd()
    h.run_ssh("true")


def test_the_non_root_login_reads_but_may_not_mutate(hosts: TestHosts) -> None:
    h = hosts[0]
    r = h.run_ssh("id -u", user=hosts.user)
    assert int(r.stdout) == hosts.uid != 0
    assert version(h)   # root over SSH reads
    r = h.busctl("call", BUS_NAME, ROOT, PROPS, "Get", "ss", MANAGER, "Version",
                 user=hosts.user)
    assert r.stdout.startswith("v s "), r.stdout
    name = f"g-{uuid.uuid4().hex[:8]}"
    r = h.busctl("call", BUS_NAME, ROOT, MANAGER, "CreateGroup", "saoa{sv}", name, "0", "0",
                 user=hosts.user, check=False)
    assert r.returncode != 0 and f"uid {hosts.uid} may not" in r.stderr, r
    # the error's name, as a client on the host itself (gdbus on its system bus) reports it
    r = h.run_ssh(["gdbus", "call", "--system", "--dest", BUS_NAME, "--object-path", ROOT,
                   "--method", f"{MANAGER}.CreateGroup", f"'{name}'", "@ao []", "@a{sv} {}"],
                  user=hosts.user, check=False)
    assert r.returncode != 0
    assert "org.ptcopy.Imaging1.Error.NotAuthorized" in r.stderr, r.stderr
    r = h.bus.busctl("call", BUS_NAME, ROOT, MANAGER, "LookUp", "s", name)
    assert r.stdout.split() == ["o", '"/"'], r.stdout   # nothing was made


def test_a_fresh_cluster_with_other_daemon_options(make_hosts: MakeHosts) -> None:
    """``fresh=True``: a cluster of the test's own, its daemons with the options asked."""
    hosts = make_hosts(2, data_path="none", fresh=True)
    assert hosts.ssh_config != make_hosts(3).ssh_config
    for h in hosts:
        r = h.busctl("call", BUS_NAME, ROOT, PROPS, "Get", "ss", MANAGER, "DataPath")
        assert r.stdout.split() == ["v", "s", '"none"'], r.stdout
    r = make_hosts(3)[0].busctl("call", BUS_NAME, ROOT, PROPS, "Get", "ss", MANAGER, "DataPath")
    assert r.stdout.split() == ["v", "s", '"userspace"'], r.stdout


def test_a_crashed_runs_leftovers_are_removed() -> None:
    """A namespace and a directory named for a pid that no longer runs are removed."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    link = netns.Link.make(dead.pid, 0, 0, 255)
    link.create()
    d = netns.BASE / f"{dead.pid}-0"
    d.mkdir(parents=True)
    cleanup_stale()
    assert link.netns not in netns.netns_list()
    assert not d.exists()
