"""The CLI's parsing and rendering against a fake ptcopyd (tests/helpers/fakes.py): what each
command sends (the pinned signatures, the options), what it prints (JSON and text), and how a
refusal becomes a sentence, a hint and an exit code. No bus, no root; the end-to-end tests of
tests/integration/cli run the same commands against a real ptcopyd."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ptcopy import __version__
from ptcopy.cli import iiadm
from ptcopy.cli._contract import MANAGER, SET
from ptcopy.cli._errors import HINTS, ExitCode
from tests.helpers.fakes import ERR, FakeDaemon, Result, run_cli


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


def ok(r: Result) -> Result:
    assert r.returncode == ExitCode.OK, str(r)
    assert "Traceback" not in r.stderr, str(r)
    return r


def as_json(r: Result) -> Any:
    return json.loads(ok(r).stdout)


def test_version_shows_both_sides(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    v = as_json(run_cli(daemon, monkeypatch, "version", "--json"))
    assert v == {"cli": __version__, "daemon": "9.9.9", "data_path": "userspace",
                 "daemon_error": None}
    assert daemon.called("GetAll")[0].body == [MANAGER]


def test_list_renders_sets_by_name(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no sets" in ok(run_cli(daemon, monkeypatch, "list")).stdout
    daemon.add_set("zeta")
    a = daemon.add_set("alpha", "independent", Flags=["copying", "to-shadow"], Status="normal")
    rows = as_json(run_cli(daemon, monkeypatch, "list", "--json"))
    assert [r["name"] for r in rows] == ["alpha", "zeta"]
    assert rows[0]["object"] == a and rows[0]["copying"] is True
    assert rows[0]["direction"] == "shadow" and rows[1]["copying"] is False
    assert ok(run_cli(daemon, monkeypatch, "list", "--quiet")).stdout.split() == ["alpha", "zeta"]
    text = ok(run_cli(daemon, monkeypatch, "list")).stdout
    assert "alpha" in text and "zeta" in text


def test_enable_sends_the_pinned_call_with_absolute_paths_and_options(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/tmp")
    info = as_json(run_cli(daemon, monkeypatch, "enable", "--dependent", "m.img", "/v/s.img",
                           "/v/b.img", "--name", "db", "--no-loop", "--delay", "3",
                           "--json"))
    (call,) = daemon.called("CreateSet")
    assert call.signature == "sssssa{sv}"
    name, kind, master, shadow, bitmap, opts = call.body
    assert (name, kind, master, shadow, bitmap) == ("db", "dependent", "/tmp/m.img",
                                                    "/v/s.img", "/v/b.img")
    assert {k: (v.signature, v.value) for k, v in opts.items()} == {
        "loop": ("b", False), "copy_delay": ("u", 3)}
    assert info["name"] == "db" and info["kind"] == "dependent" and info["job"] is None


def test_enable_names_the_set_after_its_shadow(daemon: FakeDaemon,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ok(run_cli(daemon, monkeypatch, "enable", "--independent", "/v/m.img", "/v/web-s.img",
               "/v/b.img", "--no-wait", "--quiet"))
    (call,) = daemon.called("CreateSet")
    assert call.body[1] == "independent"
    assert call.body[0] == as_json(run_cli(daemon, monkeypatch, "list", "--json"))[0]["name"]


@pytest.mark.parametrize("args, words", [
    (["enable", "/v/m", "/v/s", "/v/b"], "--independent or --dependent"),
    (["enable", "--dependent", "/v/m", "/v/s"], "no BITMAP volume given"),
    (["enable", "--dependent", "/v/m", "/v/s", "/v/b", "--name", ".hidden"], "not a valid"),
    (["status", "a", "--all"], "give sets or --all, not both"),
    (["list", "--no-such-option"], "No such option"),
])
def test_command_line_mistakes_exit_1_before_any_call(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, args: list[str],
        words: str) -> None:
    r = run_cli(daemon, monkeypatch, *args)
    assert r.returncode == ExitCode.USAGE, str(r)
    assert words in r.stdout + r.stderr, str(r)
    assert daemon.calls == [], "a wrong command line must not reach the daemon"


def test_unknown_set_is_explained_with_near_names(daemon: FakeDaemon,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.add_set("database")
    r = run_cli(daemon, monkeypatch, "status", "databse")
    assert r.returncode == ExitCode.FAILED, str(r)
    assert "there is no set named 'databse'" in r.stderr
    assert "did you mean 'database'" in r.stderr


def test_a_group_named_where_a_set_is_wanted(daemon: FakeDaemon,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.add_group("g1", [daemon.add_set("a")])
    r = run_cli(daemon, monkeypatch, "status", "g1")
    assert r.returncode == ExitCode.FAILED
    assert "'g1' is a group, not a set" in r.stderr and "ptcopy group" in r.stderr


@pytest.mark.parametrize("short", ["Busy", "InUse", "Exists", "NotAuthorized"])
def test_a_refusal_gives_the_daemons_message_and_the_hint(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, short: str) -> None:
    daemon.add_set("a")
    daemon.refuse[(SET, "Update")] = (ERR + short, f"refused because {short}")
    r = run_cli(daemon, monkeypatch, "update", "a", "--to", "shadow", "--no-wait")
    assert r.returncode == ExitCode.FAILED, str(r)
    assert f"refused because {short}" in r.stderr
    assert HINTS[short].split()[0] in r.stderr
    assert "Traceback" not in r.stderr


def test_update_to_the_master_needs_a_yes_without_a_terminal(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.add_set("a")
    r = run_cli(daemon, monkeypatch, "update", "a", "--to", "master")
    assert r.returncode == ExitCode.USAGE and "--yes" in r.stderr, str(r)
    assert daemon.called("Update") == []
    ok(run_cli(daemon, monkeypatch, "update", "a", "--to", "master", "--yes", "--no-wait"))
    (call,) = daemon.called("Update")
    direction, opts = call.body
    assert direction == "master" and opts["confirm"].value is True


def test_disable_then_the_set_is_gone(daemon: FakeDaemon,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.add_set("a")
    assert as_json(run_cli(daemon, monkeypatch, "disable", "a", "--json")) == {
        "disabled": ["a"]}
    assert as_json(run_cli(daemon, monkeypatch, "list", "--json")) == []


def test_no_daemon_on_the_bus_is_said_plainly(daemon: FakeDaemon,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.refuse[("org.freedesktop.DBus.ObjectManager", "GetManagedObjects")] = (
        "org.freedesktop.DBus.Error.ServiceUnknown", "no owner")
    r = run_cli(daemon, monkeypatch, "list")
    assert r.returncode == ExitCode.FAILED
    assert "ptcopyd is not running on this bus" in r.stderr


def test_iiadm_translates_to_the_same_calls(daemon: FakeDaemon,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    r = run_cli(daemon, monkeypatch, "-e", "ind", "/v/m.img", "/v/s.img", "/v/b.img",
                main=iiadm.main)
    assert r.returncode == 0, str(r)
    (call,) = daemon.called("CreateSet")
    assert call.body[1:5] == ["independent", "/v/m.img", "/v/s.img", "/v/b.img"]
    r = run_cli(daemon, monkeypatch, "-x", main=iiadm.main)
    assert r.returncode == ExitCode.USAGE
    assert len(daemon.called("CreateSet")) == 1
