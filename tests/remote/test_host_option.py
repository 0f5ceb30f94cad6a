"""``ptcopy --host``: every command runs on the named host's ptcopyd over real SSH, acts there
and only there, as the SSH login there; an unreachable host, an unknown or changed host key and a
link cut mid-command give a clear error within seconds, and the remote job goes on."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.helpers.cli import PTCOPY
from tests.helpers.names import KIB, MIB
from tests.remote.fixtures import MakeHosts
from tests.remote.testhosts import TestHost, TestHosts


def ptcopy(hosts: TestHosts, *args: str, config: Path | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed ptcopy with the cluster's ssh configuration, no terminal."""
    r = subprocess.run([str(PTCOPY), *args], env=hosts.env(config), capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def ok(hosts: TestHosts, *args: str) -> Any:
    r = ptcopy(hosts, "--json", *args)
    assert r.returncode == 0, f"ptcopy {' '.join(args)}: {r.stderr}{r.stdout}"
    return json.loads(r.stdout) if r.stdout.strip() else None


def local(host: TestHost, *args: str) -> Any:
    """The same command straight on the host's own bus (what is true there)."""
    r = subprocess.run([str(PTCOPY), "--bus", host.bus_address, "--json", *args],
                       capture_output=True, text=True, timeout=60, check=False,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"local ptcopy {' '.join(args)}: {r.stderr}"
    return json.loads(r.stdout) if r.stdout.strip() else None


def volumes(hosts: TestHosts, tag: str, size: int = 4 * MIB) -> list[str]:
    """Master, shadow and bitmap files in the storage every host may use."""
    paths = []
    for role, n in (("m", size), ("s", size), ("b", 256 * KIB)):
        p = hosts.shared_dir / f"{tag}-{role}.img"
        with p.open("xb"):
            pass
        os.truncate(p, n)
        paths.append(str(p))
    return paths


def names(listing: Any) -> set[str]:
    return {s["name"] for s in listing}


def test_every_command_acts_on_the_named_host_only(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    h1, h2 = hosts[0], hosts[1]
    tag = "opt" + uuid.uuid4().hex[:6]
    on1 = ("--host", h1.name)
    m, s, b = volumes(hosts, tag)
    with open(m, "r+b") as f:
        f.write(os.urandom(1 * MIB))

    ok(hosts, *on1, "enable", "--independent", m, s, b, "--name", tag, "--no-loop", "--wait")
    assert tag in names(local(h1, "list")) and tag not in names(local(h2, "list"))
    (st,) = ok(hosts, *on1, "status", tag)
    (there,) = local(h1, "status", tag)
    for key in ("name", "object", "kind", "master", "shadow", "bitmap", "size", "status"):
        assert st[key] == there[key], key
    ok(hosts, *on1, "param", tag, "--delay", "2", "--units", "64")
    assert local(h1, "status", tag)[0]["copy_delay_ms"] == 2
    ok(hosts, *on1, "update", tag, "--to", "shadow", "--wait")
    ok(hosts, *on1, "copy", tag, "--to", "shadow", "--no-wait")
    ok(hosts, *on1, "wait", tag)
    ok(hosts, *on1, "rename", tag, tag + "r")
    ok(hosts, *on1, "group", "create", tag + "g", tag + "r")
    assert [g["name"] for g in ok(hosts, *on1, "group", "list")].count(tag + "g") == 1
    assert tag + "g" not in [g["name"] for g in local(h2, "group", "list")]
    ok(hosts, *on1, "group", "update", tag + "g", "--to", "shadow", "--wait")
    ok(hosts, *on1, "group", "delete", tag + "g")
    ok(hosts, *on1, "schedule", "create", tag + "s", "hourly", tag + "r")
    assert any(x["name"] == tag + "s" for x in local(h1, "schedule", "list"))
    ok(hosts, *on1, "schedule", "delete", tag + "s")
    ok(hosts, *on1, "reset", tag + "r")
    ok(hosts, *on1, "volumes")
    ok(hosts, *on1, "disable", tag + "r")
    assert tag + "r" not in names(local(h1, "list"))


def test_a_login_without_rights_reads_but_cannot_change(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    h1 = hosts[0]
    tag = "ro" + uuid.uuid4().hex[:6]
    m, s, b = volumes(hosts, tag)
    as_user = ("--host", f"{hosts.user}@{h1.name}")
    assert ptcopy(hosts, *as_user, "list").returncode == 0
    r = ptcopy(hosts, *as_user, "enable", "--dependent", m, s, b, "--name", tag, "--no-loop")
    assert r.returncode == 2
    assert "not authorized" in r.stderr
    assert tag not in names(local(h1, "list"))


def failing(hosts: TestHosts, host: str, config: Path | None = None) -> str:
    """``ptcopy --host HOST list``, which must fail (exit 2) in a bounded time: its stderr."""
    r = ptcopy(hosts, "--host", host, "list", config=config, timeout=40)
    assert r.returncode == 2, r
    assert f"host {host}" in r.stderr, r.stderr
    return r.stderr


def test_an_unknown_host_key_is_refused_and_trust_is_explicit(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    err = failing(hosts, hosts[1].name, hosts.untrusted_config())
    assert "host key is not known" in err and "ptcopy hosts trust" in err


def test_a_changed_host_key_is_refused(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    err = failing(hosts, hosts[1].name, hosts.wrong_key_config(hosts[1]))
    assert "CHANGED" in err
    # the other host, whose key is right, still works with the same configuration
    assert ptcopy(hosts, "--host", hosts[0].name, "list",
                  config=hosts.wrong_key_config(hosts[1])).returncode == 0


def test_an_unreachable_host_fails_fast(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    h2 = hosts[1]
    h2.stop_link()
    try:
        err = failing(hosts, h2.name)
        assert "cannot be reached" in err
    finally:
        h2.start_link()
    h2.stop_sshd()
    try:
        assert "cannot be reached" in failing(hosts, h2.name)
    finally:
        h2.start_sshd()


def test_a_host_without_ptcopyd_says_so(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    h2 = hosts[1]
    h2.stop_daemon()
    try:
        err = failing(hosts, h2.name)
        assert "ptcopyd is not running" in err
    finally:
        h2.start_daemon()


def test_a_link_cut_mid_command_fails_fast_and_the_job_goes_on(make_hosts: MakeHosts) -> None:
    hosts = make_hosts(2)
    h1 = hosts[0]
    tag = "cut" + uuid.uuid4().hex[:6]
    m, s, b = volumes(hosts, tag, 16 * MIB)
    # a copy throttled to last well beyond the link cut: 512 chunks, 100 ms after each 4
    local(h1, "enable", "--independent", m, s, b, "--name", tag, "--no-loop", "--no-wait",
          "--delay", "100", "--units", "4")
    proc = subprocess.Popen([str(PTCOPY), "--host", h1.name, "wait", tag], env=hosts.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        time.sleep(1.5)        # the wait is under way over SSH
        assert proc.poll() is None, proc.communicate()
        h1.stop_link()
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
        h1.start_link()
    assert proc.returncode == 2, (out, err)
    assert f"host {h1.name}" in err and "connection was lost" in err, err
    # the copy was not stopped by the broken connection: it goes on there, and ends well
    (st,) = local(h1, "status", tag)
    assert not st["abort_requested"] and not st["incomplete"], st
    local(h1, "param", tag, "--delay", "0")
    local(h1, "wait", tag)
    (st,) = local(h1, "status", tag)
    assert not st["copying"] and st["difference_percent"] == 0, st
    local(h1, "disable", tag)
