"""ptcopy enable, status, list, copy, update, wait, abort, suspend, resume, param, reset, rename,
export, join and disable against a real ptcopyd."""

from __future__ import annotations

import pytest

from tests.helpers.cli import Cli
from tests.helpers.names import KIB, MIB

pytestmark = pytest.mark.root

JOB_PREFIX = "/org/ptcopy/Imaging1/jobs/"


def test_enable_a_dependent_set_and_see_it(cli: Cli) -> None:
    m, s, b = cli.vol("m", 4 * MIB), cli.vol("s", 4 * MIB), cli.vol("b", 256 * KIB)
    name = cli.name("dep")
    st = cli.json("enable", "--dependent", m, s, b, "--name", name)   # with loop devices
    assert st["name"] == name
    assert st["kind"] == "dependent" and st["compact"] is False
    assert (st["master"], st["shadow"], st["bitmap"]) == (m, s, b)
    assert st["master_device"].startswith("/dev/loop")
    assert st["shadow_device"].startswith("/dev/loop")
    assert st["status"] == "normal" and st["flags"] == []
    assert st["copying"] is False and st["direction"] is None and st["job"] is None
    assert st["size"] == 4 * MIB and st["chunk_size"] == 32 * KIB
    assert st["shadow_chunks_total"] == 128 and st["shadow_chunks_used"] == 0
    assert st["group"] is None and st["overflow"] is None and st["offline"] == []
    assert st["difference_percent"] == 0.0 and st["last_modified"] is None

    # named by its shadow volume, as iiadm named sets
    (by_shadow,) = cli.json("status", s)
    assert by_shadow["name"] == name and by_shadow["object"] == st["object"]

    human = cli.ok("status", name).stdout
    for text in (f"set {name}", "kind", "dependent", "state", "normal", m,
                 f"(use {st['master_device']})", "differs", "shadow chunks", "0 used of 128",
                 "modified", "never", "throttle"):
        assert text in human, text

    rows = {r["name"]: r for r in cli.json("list")}
    assert rows[name]["master_device"] == st["master_device"]
    assert rows[name]["kind"] == "dependent" and rows[name]["status"] == "normal"
    assert name in cli.ok("list", "-q").stdout.split()
    assert name in cli.ok("list", proc=True).stdout     # the installed console script
    assert name in cli.ok("--quiet", "list").stdout.split()   # output options before the command
    assert f"{name} normal" in cli.ok("status", "-q").stdout.splitlines()
    everything = [x["name"] for x in cli.json("status", "--all")]
    assert name in everything and everything == sorted(everything)


def test_enable_names_the_set_after_its_shadow_and_takes_relative_paths(cli: Cli) -> None:
    for f, size in (("m.img", 4 * MIB), (f"{cli.prefix}-snap.img", 4 * MIB),
                    ("b.img", 256 * KIB)):
        cli.vol(f.removesuffix(".img"), size)
    r = cli.ok("enable", "--dependent", "m.img", f"{cli.prefix}-snap.img", "b.img", "--no-loop",
               cwd=cli.dir)
    name = f"{cli.prefix}-snap"
    assert f"enabled dependent set {name}" in r.stdout
    st = cli.status(name)
    assert st["master"] == str(cli.dir / "m.img")
    assert st["master_device"].endswith("/master")   # served as a file only


def test_update_without_a_terminal_prints_the_job_then_wait(cli: Cli) -> None:
    name = cli.enable("u")
    job = cli.ok("update", name, "--to", "shadow").stdout.strip()   # no terminal: no waiting
    assert job.startswith(JOB_PREFIX)
    (waited,) = cli.json("wait", job)
    assert waited["target"] == job and waited["state"] == "done" and waited["success"] is True
    assert waited["operation"] == "update-to-shadow"
    (by_set,) = cli.json("wait", name)
    assert by_set["job"] == job

    done = cli.json("update", name, "--to", "shadow", "--wait")
    assert done["operation"] == "update-to-shadow" and done["state"] == "done"
    assert done["success"] is True and done["message"] == "done"
    started = cli.json("copy", name, "--to", "shadow", "--no-wait")
    assert started["job"].startswith(JOB_PREFIX) and started["state"] == "running"
    assert cli.ok("wait", name, "-q").stdout == ""
    assert cli.status(name)["job"] == started["job"]
    assert cli.ok("update", name, "--to", "shadow", "-q").stdout.startswith(JOB_PREFIX)


def test_independent_copy_abort_wait_and_writing_the_master(cli: Cli) -> None:
    name = cli.enable("ind", kind="independent", size=16 * MIB,
                      extra=["--delay", "40", "--units", "8"])   # about 2.5 s of copying
    st = cli.status(name)
    assert st["copying"] is True and st["direction"] == "shadow"
    assert st["copy_delay_ms"] == 40 and st["copy_units"] == 8
    assert st["job_state"] == "running"
    assert "copying to the shadow" in cli.ok("status", name).stdout

    assert cli.json("abort", name) == {"aborted": [name]}
    r = cli.fails(2, "wait", name)
    assert "aborted: the target is incomplete" in r.stderr
    assert cli.status(name)["copying"] is False

    cli.ok("param", name, "--delay", "0")
    done = cli.json("update", name, "--to", "shadow", "--wait")
    assert done["success"] is True

    # Writing the master: no terminal and no --yes -> refused before anything is asked.
    before = cli.status(name)["job"]
    r = cli.fails(1, "update", name, "--to", "master")
    assert "no terminal" in r.stderr and "--yes" in r.stderr and "nothing was done" in r.stderr
    assert cli.status(name)["job"] == before
    done = cli.json("copy", name, "--to", "master", "--yes", "--wait")
    assert done["operation"] == "copy-to-master" and done["success"] is True

    r = cli.ok("abort", name)
    assert "nothing to abort" in r.stdout


def test_param_reset_rename_export_join_disable(cli: Cli) -> None:
    name = cli.enable("p")
    shown = cli.json("param", name)
    assert set(shown) == {"name", "copy_delay_ms", "copy_units"}
    assert cli.json("param", name, "--delay", "5", "--units", "64") == {
        "name": name, "copy_delay_ms": 5, "copy_units": 64}
    assert cli.json("param", name, "--units", "32")["copy_delay_ms"] == 5
    assert "pause 5 ms every 32 chunks" in cli.ok("param", name).stdout
    assert "pause 5 ms every 32 chunks" in cli.ok("status", name).stdout

    assert "no resync needed" in cli.ok("reset", name).stdout
    assert cli.json("reset", name) == {"job": None, "status": "normal"}

    files = cli.status(name)["master_device"]
    new = cli.name("p2")
    assert cli.json("rename", name, new)["name"] == new   # served: its files move
    st = cli.status(new)
    assert st["master_device"] == files.replace(f"/{name}/", f"/{new}/")
    cli.fails(2, "status", name)
    name = new

    r = cli.fails(2, "export", name)
    assert "dependent" in r.stderr and "hint:" in r.stderr
    ind = cli.enable("pi", kind="independent")
    cli.ok("wait", ind)
    assert cli.json("export", ind) == {"name": ind, "exported": True}
    st = cli.status(ind)
    assert st["exported"] is True and "exported" in st["flags"]
    r = cli.fails(2, "update", ind, "--to", "shadow")
    assert "exported" in r.stderr

    # the other host's bitmap: here a copy of the set's own (same set, same sizes)
    other = cli.vol("join-b", 0)
    with open(st["bitmap"], "rb") as src, open(other, "wb") as dst:
        dst.write(src.read())
    assert cli.json("join", ind, other) == {"name": ind, "exported": False}
    r = cli.fails(2, "join", ind, other)
    assert "not exported" in r.stderr
    cli.ok("update", ind, "--to", "shadow", "--wait")

    assert cli.json("disable", name, ind) == {"disabled": [name, ind]}
    r = cli.fails(2, "status", name)
    assert f"there is no set named {name!r}" in r.stderr


def test_enable_suggests_volumes_that_would_do(cli: Cli) -> None:
    """A refused volume: enable names the host's volumes that could serve instead."""
    import subprocess
    import time

    m, small, b = cli.vol("m", 4 * MIB), cli.vol("small", 1 * MIB), cli.vol("b", 256 * KIB)
    spare = cli.vol("spare", 8 * MIB)
    dev = subprocess.run(["losetup", "--find", "--show", spare], check=True,
                         capture_output=True, text=True).stdout.strip()
    try:
        deadline = time.monotonic() + 5   # discovery sees the new loop device within a second
        while True:
            r = cli.fails(2, "enable", "--independent", m, small, b, "--name", cli.name("sug"))
            if dev in r.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "at least" in r.stderr and small in r.stderr, r.stderr   # the refusal itself
        assert "could be the shadow: " in r.stderr and dev in r.stderr, r.stderr
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_suspend_and_resume_a_copy(cli: Cli) -> None:
    name = cli.enable("sr", kind="independent", size=8 * MIB,
                      extra=["--delay", "50", "--units", "2"])
    cli.until(lambda: cli.status(name)["copy_percent"] > 0)
    r = cli.ok("suspend", name)
    assert "suspended at" in r.stdout and f"ptcopy resume {name}" in r.stdout
    st = cli.status(name)
    assert st["suspended"] is True and st["copying"] is True and 0 < st["copy_percent"] < 100
    assert "suspended while copying to the shadow" in cli.ok("status", name).stdout
    r = cli.fails(2, "suspend", name)
    assert "suspended already" in r.stderr
    r = cli.fails(2, "update", name, "--to", "shadow")
    assert "suspended" in r.stderr and "resume" in r.stderr
    cli.ok("param", name, "--delay", "0")
    done = cli.json("resume", name, "--wait")
    assert done["success"] is True and done["operation"] == "resume-to-shadow"
    st = cli.status(name)
    assert st["suspended"] is False and st["copying"] is False and st["incomplete"] is False
    with open(st["master"], "rb") as m, open(st["shadow"], "rb") as s:
        assert m.read() == s.read()
    r = cli.fails(2, "suspend", name)
    assert "no copy running" in r.stderr
    r = cli.fails(2, "resume", name)
    assert "no suspended copy" in r.stderr
