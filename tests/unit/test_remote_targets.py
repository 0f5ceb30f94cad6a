"""Where a remote host is, and the ssh command line ptcopy runs to reach it: what is accepted,
what is refused before ssh ever runs (nothing that ssh would read as an option), and how ssh's
failures are explained. No network: the SSH tests of tests/remote run the real thing."""

from __future__ import annotations

import pytest

from ptcopy.remote.ssh import SshOptions, explain_failure, ssh_argv
from ptcopy.remote.targets import (
    BadTarget,
    Target,
    check_host_name,
    host_object_id,
    parse_target,
)


@pytest.mark.parametrize(("text", "want"), [
    ("db1", Target("db1")),
    ("root@db1.example.org", Target("db1.example.org", "root")),
    ("admin@10.0.0.7:2222", Target("10.0.0.7", "admin", 2222)),
    ("[fe80::1%eth0]:22", Target("fe80::1%eth0", "", 22)),
    ("ops@[2001:db8::5]", Target("2001:db8::5", "ops")),
])
def test_targets_parse_and_print_back(text: str, want: Target) -> None:
    got = parse_target(text)
    assert got == want
    assert parse_target(str(got)) == got


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("-oProxyCommand=evil", "not a host"),
    ("root@-p", "not a host"),
    ("-l@host", "not a user"),
    ("host:0", "not a port"),
    ("host:70000", "not a port"),
    ("host:ssh", "not a port"),
    ("[::1", "[IPv6]"),
    ("[::1]x", "only :PORT"),
    ("a b", "not a host"),
])
def test_bad_targets_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(BadTarget, match=why):
        parse_target(text)


def test_the_host_goes_after_the_end_of_options_and_checking_is_strict() -> None:
    argv = ssh_argv(Target("h", "u", 2200), SshOptions(connect_timeout=2.5, config="/c"))
    assert argv[:2] == ["ssh", "-xT"]
    assert argv[argv.index("--") + 1:] == ["h", "systemd-stdio-bridge"]
    opts = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")
    assert opts["BatchMode"] == "yes"
    assert opts["StrictHostKeyChecking"] == "yes"
    assert opts["ConnectTimeout"] == "3"
    assert argv[argv.index("-F") + 1] == "/c"
    assert argv[argv.index("-l") + 1] == "u" and argv[argv.index("-p") + 1] == "2200"


@pytest.mark.parametrize(("stderr", "rc", "kind"), [
    ("ssh: connect to host 10.9.9.9 port 22: Connection timed out", 255, "unreachable"),
    ("ssh: connect to host x port 22: Connection refused", 255, "unreachable"),
    ("ssh: Could not resolve hostname nope: Name or service not known", 255, "unreachable"),
    ("No ED25519 host key is known for x and you have requested strict checking.\n"
     "Host key verification failed.", 255, "host-key"),
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.",
     255, "changed-key"),
    ("root@x: Permission denied (publickey).", 255, "login"),
    ("Timeout, server x not responding.", 255, "lost"),
    ("bash: line 1: systemd-stdio-bridge: command not found", 127, "no-bridge"),
    ("", 3, "failed"),
])
def test_ssh_failures_are_explained(stderr: str, rc: int, kind: str) -> None:
    f = explain_failure(Target("x"), stderr, rc)
    assert f.kind == kind
    assert f.message.startswith("host x: ")
    if kind == "failed":
        assert "status 3" in f.message


def test_registry_names_and_their_object_ids() -> None:
    assert check_host_name("db-1.site_a") == "db-1.site_a"
    assert host_object_id("db-1.site_a") == "db_2d1_2esite_5fa"
    assert host_object_id("db1") == "db1"
    for bad in ("", "-x", ".x", "a/b", "x" * 64, "root@x"):
        with pytest.raises(BadTarget):
            check_host_name(bad)
