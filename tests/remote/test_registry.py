"""The host registry against real SSH hosts (tests/remote/testhosts.py): a local ptcopyd (the
one the CLI talks to) with host1..host3 registered, probed read-only over SSH as root; one host
down is marked with the reason while the others are fine; ``ptcopy list --all-hosts`` over the
three with one down; ``ptcopy --host NAME`` through a registered name; ``ptcopy hosts trust``
for a host whose key is not known yet."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ptcopy import __version__
from tests.helpers.bus import PrivateBus
from tests.helpers.cli import Cli, Daemon
from tests.helpers.client import Client, Runner
from tests.helpers.daemon import Ptcopyd, finish
from tests.helpers.names import ISET, MIB
from tests.remote.fixtures import MakeHosts
from tests.remote.testhosts import TestHosts

pytestmark = pytest.mark.root

BOUND = 25   # seconds: ssh's connect timeout is 5 s, the probe's own bounds add at most ~15


@pytest.fixture
def hosts(make_hosts: MakeHosts) -> TestHosts:
    return make_hosts(3)


@pytest.fixture
def local(hosts: TestHosts, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """The CLI against a local ptcopyd of its own (probing only when asked) whose ssh, like
    the CLI's, uses the test hosts' client configuration."""
    monkeypatch.setenv("PTCOPY_SSH_CONFIG", str(hosts.ssh_config))
    with local_daemon(tmp_path, "0") as cli:
        yield cli


@contextlib.contextmanager
def local_daemon(tmp_path: Path, interval: str) -> Iterator[Cli]:
    bus = PrivateBus.start(extra="")
    d = Ptcopyd(bus, tmp_path / "local", ["--host-probe-interval", interval])
    try:
        d.start()
        yield Cli(Daemon(bus.address, d), "reg", d.vol_dir)
    finally:
        try:
            finish([d])
        finally:
            bus.stop()


def sets_on(aio: Runner, address: str) -> int:
    """How many sets a host's ptcopyd has, read on its bus directly."""
    async def count() -> int:
        c = await Client.connect(address)
        try:
            return sum(ISET in ifs for ifs in (await c.objects()).values())
        finally:
            c.disconnect()
    return aio.run(count(), timeout=30)


def register(cli: Cli, hosts: TestHosts) -> list[str]:
    names = []
    for h in hosts:
        name = f"reg-{h.name}"
        cli.ok("hosts", "add", name, h.name)
        names.append(name)
    return names


def test_probe_three_hosts_one_down(local: Cli, hosts: TestHosts, aio: Runner) -> None:
    """Probes read the version and the number of sets; a host whose link is cut is marked
    unreachable with the reason, within the bound, keeping when it was last seen."""
    m, s, b = hosts[0].daemon.set_volumes(4 * MIB)
    hosts[0].busctl("call", "org.ptcopy.Imaging1", "/org/ptcopy/Imaging1",
                    "org.ptcopy.Imaging1.Manager", "CreateSet", "sssssa{sv}",
                    f"reg-probe-{time.monotonic_ns()}", "dependent", m, s, b, "0")
    names = register(local, hosts)
    first = {h["name"]: h for h in local.json("hosts", "list", "--probe")}
    for name, h in zip(names, hosts, strict=True):
        got = first[name]
        assert got["reachable"] is True and got["last_error"] is None, got
        assert got["version"] == __version__ and got["last_seen"] is not None
        assert got["sets"] == sets_on(aio, h.bus_address), (name, got)
    assert first[names[0]]["sets"] >= 1

    hosts[2].stop_link()
    try:
        t0 = time.monotonic()
        again = {h["name"]: h for h in local.json("hosts", "list", "--probe")}
        assert time.monotonic() - t0 < BOUND
    finally:
        hosts[2].start_link()
    down = again[names[2]]
    assert down["reachable"] is False, down
    assert "cannot be reached" in down["last_error"] or "did not answer" in \
        down["last_error"], down
    assert down["last_seen"] == first[names[2]]["last_seen"]   # the last time it was seen
    assert down["version"] == __version__
    for name in names[:2]:
        assert again[name]["reachable"] is True and again[name]["last_error"] is None
    table = local.ok("hosts", "list").stdout
    assert "cannot be reached" in table or "did not answer" in table
    # the read-only probes changed nothing on the hosts
    for h in hosts:
        assert "Traceback" not in h.daemon.log_text()


def test_all_hosts_with_one_down(local: Cli, hosts: TestHosts, aio: Runner) -> None:
    names = register(local, hosts)
    mine = local.enable("a")
    hosts[1].stop_sshd()
    try:
        t0 = time.monotonic()
        r = local.ok("list", "--all-hosts")
        assert time.monotonic() - t0 < BOUND
        got = {h["host"]: h for h in local.json("list", "--all-hosts")}
    finally:
        hosts[1].start_sshd()
    lines = r.stdout.splitlines()
    assert any(ln.split()[:2] == ["local", mine] for ln in lines), r.stdout
    assert any(ln.startswith(names[1]) and "unreachable" in ln for ln in lines), r.stdout
    assert "cannot be reached" in r.stdout
    assert got["local"]["reachable"] and mine in {s["name"] for s in got["local"]["sets"]}
    for i in (0, 2):
        g = got[names[i]]
        assert g["reachable"] is True and g["error"] is None, g
        assert len(g["sets"]) == sets_on(aio, hosts[i].bus_address)
    assert got[names[1]]["reachable"] is False
    assert "cannot be reached" in got[names[1]]["error"]["message"]
    st = {h["host"]: h for h in local.json("status", "--all-hosts")}
    assert all(st[n]["reachable"] for n in names), st


def test_host_option_through_a_registered_name(local: Cli, hosts: TestHosts,
                                               aio: Runner) -> None:
    """A name that is no ssh alias reaches its host only through the registry."""
    local.ok("hosts", "add", "reg-db2", f"root@{hosts[1].address}")
    got = local.json("--host", "reg-db2", "status")
    assert len(got) == sets_on(aio, hosts[1].bus_address)
    r = local.fails(2, "--host", "reg-nobody", "status")   # neither registered nor resolvable
    assert "reg-nobody" in r.stderr and "cannot be reached" in r.stderr, r


def test_trust_a_new_host_key(local: Cli, hosts: TestHosts,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With an empty known_hosts, --host refuses the host; hosts trust without --yes and
    without a terminal records nothing; with --yes it records the host's real key, and the
    command then works. A known, different key is refused."""
    local.ok("hosts", "add", "reg-t1", hosts[0].name)
    monkeypatch.setenv("PTCOPY_SSH_CONFIG", str(hosts.untrusted_config()))
    r = local.fails(2, "--host", "reg-t1", "list")
    assert "not known" in r.stderr and "hosts trust" in r.stderr, r
    r = local.fails(1, "hosts", "trust", "reg-t1")
    assert "no terminal" in r.stderr and "SHA256:" in r.stderr, r
    local.fails(2, "--host", "reg-t1", "list")
    got = local.json("hosts", "trust", "reg-t1", "--yes")
    assert got["already"] is False and got["recorded"], got
    kh = Path(got["known_hosts"]).read_text()
    assert hosts[0].key_line.split()[1] in kh and hosts[0].address in kh
    local.ok("--host", "reg-t1", "list")
    assert local.json("hosts", "trust", "reg-t1", "--yes")["already"] is True

    # at a terminal: the fingerprints, then the question; "n" records nothing, "y" does
    untrusted = hosts.untrusted_config()
    monkeypatch.setenv("PTCOPY_SSH_CONFIG", str(untrusted))
    code, text = local.tty("hosts", "trust", hosts[1].name, answer="n")
    assert code == 1 and "SHA256:" in text and "not confirmed" in text, text
    local.fails(2, "--host", hosts[1].name, "list")
    code, text = local.tty("hosts", "trust", hosts[1].name, answer="y")
    assert code == 0 and "trusted" in text, text
    local.ok("--host", hosts[1].name, "list")

    monkeypatch.setenv("PTCOPY_SSH_CONFIG", str(hosts.wrong_key_config(hosts[0])))
    r = local.fails(2, "hosts", "trust", "reg-t1", "--yes")
    assert "DIFFERENT key" in r.stderr, r


def test_background_probes(hosts: TestHosts, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With --host-probe-interval, hosts are probed without being asked: a new host is seen,
    and a host whose sshd stops is marked unreachable by the next round."""
    monkeypatch.setenv("PTCOPY_SSH_CONFIG", str(hosts.ssh_config))
    with local_daemon(tmp_path, "1") as cli:
        cli.ok("hosts", "add", "reg-bg", hosts[2].name)

        def listed() -> dict[str, Any]:
            found: dict[str, Any] = {h["name"]: h for h in cli.json("hosts", "list")}
            return dict(found["reg-bg"])

        cli.until(lambda: listed()["reachable"] is True, timeout=BOUND)
        hosts[2].stop_sshd()
        try:
            cli.until(lambda: listed()["reachable"] is False, timeout=BOUND)
        finally:
            hosts[2].start_sshd()
        assert "cannot be reached" in str(listed()["last_error"])
        cli.until(lambda: listed()["reachable"] is True, timeout=BOUND)
