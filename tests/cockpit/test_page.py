"""The Cockpit page against a real cockpit-ws, a real ptcopyd on a private bus, and headless
Chromium: what a person sees and does, with screenshots of each state in docs/cockpit/."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ptcopy.engine import Kind, bitmap_size
from tests.cockpit.page import (
    IFACE,
    ROOT,
    alert_text,
    click,
    enabled,
    fill,
    look_up,
    prop,
    shot,
    text_of,
    wait_for,
)
from tests.helpers.bus import PrivateBus
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import BUS_NAME, MIB


def test_not_running_then_empty(cockpit: str, browser: Any,
                                daemon_factory: Callable[..., Ptcopyd]) -> None:
    """Without ptcopyd the page says so and how to start it; when ptcopyd starts (or stops and
    starts again), the page follows by itself (the bus name's owner) and shows the empty state;
    the page in Cockpit's shell."""
    d = daemon_factory(start=False)
    browser.get(cockpit)
    wait_for(browser, "the not-running state",
             lambda b: "ptcopyd is not running" in text_of(b, "#not-running"))
    assert "systemctl start ptcopyd" in text_of(browser, "#not-running")
    shot(browser, "not-running")
    d.start()
    wait_for(browser, "the empty state", lambda b: "No sets yet" in text_of(b, "#sets-empty"))
    assert "New set" in text_of(browser, "#sets-empty")
    shot(browser, "empty")

    # ptcopyd stopping and starting again while the page is open
    d.stop_and_check()
    wait_for(browser, "the not-running state",
             lambda b: "ptcopyd is not running" in text_of(b, "#not-running"))
    d.start()
    wait_for(browser, "the empty state", lambda b: "No sets yet" in text_of(b, "#sets-empty"))

    # in Cockpit's shell: listed under Tools, shown in the shell's frame
    browser.get(cockpit.split("/cockpit/@localhost/")[0] + "/ptcopy")
    frame = 'iframe[name="cockpit1:localhost/ptcopy"]'
    wait_for(browser, "the shell's frame", lambda b: b.find_elements("css selector", frame))
    wait_for(browser, "the menu entry", lambda b: "Point-in-time copies" in text_of(b, "nav"))
    browser.switch_to.frame(browser.find_element("css selector", frame))
    wait_for(browser, "the page in the frame", lambda b: "No sets yet" in text_of(b, "#sets-empty"))
    browser.switch_to.default_content()
    shot(browser, "shell")


def test_set_lifecycle(cockpit: str, browser: Any, system_bus: PrivateBus,
                       daemon_factory: Callable[..., Ptcopyd]) -> None:
    """New set through the dialog (the bitmap size computed for the user), its initial copy's
    progress bar moving to the end, an update refused while it copies (the daemon's Busy error
    in words), a new point in time after the master changed, restoring the master only after
    confirmation, a group update, and disabling the set."""
    d = daemon_factory()
    size = 32 * MIB
    need = bitmap_size(size, size, 0, Kind.INDEPENDENT)
    master = d.volume(size, "master.img", data=b"m" * MIB)
    shadow = d.volume(size, "shadow.img")
    bitmap = d.volume(need, "bitmap.img")
    browser.get(cockpit)
    wait_for(browser, "the empty state", lambda b: "No sets yet" in text_of(b, "#sets-empty"))

    click(browser, "#new-set")
    wait_for(browser, "the New set dialog", lambda b: b.find_elements("css selector", "#new-name"))
    fill(browser, "#new-name", "db")
    fill(browser, "#new-master", master)
    fill(browser, "#new-shadow", shadow)
    fill(browser, "#new-bitmap", bitmap)
    # slow enough to watch: 1024 chunks, a 40 ms pause every 8
    fill(browser, "#new-delay", "40")
    fill(browser, "#new-units", "8")
    wait_for(browser, "the bitmap size", lambda b: "large enough" in text_of(b, "#bitmap-need"))
    assert f"needs {need / 1024:.1f} KiB" in text_of(browser, "#bitmap-need")
    shot(browser, "new-set")
    click(browser, "#new-create")

    # the new row appears with its copy's progress bar, which moves
    bar = 'tr[data-set="db"] [role="progressbar"]'
    seen: set[float] = set()

    def progress(b: Any) -> bool:
        for v in b.execute_script("return Array.from(document.querySelectorAll(arguments[0]))"
                                  ".map(e => e.getAttribute('aria-valuenow'))", bar):
            seen.add(float(v))
        return len([v for v in seen if 0 < v < 100]) >= 2
    wait_for(browser, "the copy's progress bar to move", progress)
    assert "copying to the shadow" in prop(browser, "copy")
    shot(browser, "copying")

    # an update while the copy runs: refused, in plain words with what to do
    click(browser, "#act-update")
    wait_for(browser, "the Busy refusal", lambda b: "wait for the copy to end" in alert_text(b))
    assert "org.ptcopy" not in alert_text(browser)
    shot(browser, "refused")

    wait_for(browser, "the copy to finish", lambda b: prop(b, "copy").startswith("idle"),
             timeout=120)
    assert not browser.find_elements("css selector", bar)
    assert max(seen) > min(seen)

    # a change on the master, then a new point in time of it
    dev = prop(browser, "master").split("(use ")[1].rstrip(")")
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, b"x" * MIB, 4 * MIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    wait_for(browser, "the difference to show",
             lambda b: prop(b, "differs") != "0.0 % of the chunks")
    job_before = prop(browser, "job")
    click(browser, "#act-update")
    wait_for(browser, "the update to end",
             lambda b: prop(b, "job") != job_before and prop(b, "copy").startswith("idle (last")
             and prop(b, "differs") == "0.0 % of the chunks")
    browser.execute_script("document.getElementById('set-detail').scrollIntoView()")
    shot(browser, "detail")
    browser.execute_script("window.scrollTo(0, 0)")

    # restoring the master asks first: cancelled, nothing happens
    job_before = prop(browser, "job")
    click(browser, "#act-restore")
    wait_for(browser, "the confirmation", lambda b: b.find_elements("css selector", "#confirm-no"))
    assert "is overwritten" in text_of(browser, "#confirm-dialog")
    shot(browser, "restore-confirm")
    click(browser, "#confirm-no")
    wait_for(browser, "the dialog to close",
             lambda b: not b.find_elements("css selector", "#confirm-dialog"))
    assert prop(browser, "job") == job_before
    click(browser, "#act-restore")
    wait_for(browser, "the confirmation", lambda b: b.find_elements("css selector", "#confirm-yes"))
    click(browser, "#confirm-yes")
    wait_for(browser, "the restore to end",
             lambda b: prop(b, "job") != job_before and prop(b, "copy").startswith("idle (last"))
    assert not alert_text(browser)

    # a group of the set, made and updated from the page
    set_path = look_up(system_bus, "db")
    click(browser, "#new-group")
    wait_for(browser, "the New group dialog",
             lambda b: b.find_elements("css selector", "#group-set-db"))
    fill(browser, "#group-name", "nightly")
    click(browser, "#group-set-db")
    shot(browser, "new-group")
    click(browser, "#group-create")
    wait_for(browser, "the group", lambda b: "nightly" in text_of(b, "#groups tbody"))
    assert "db" in text_of(browser, "#groups tbody")
    assert not browser.find_elements("css selector", "#new-group-dialog")
    click(browser, 'button[data-group="nightly"]')
    wait_for(browser, "the group's update to end", lambda b: "done" in text_of(b, "#groups")
             or "succeeded" in text_of(b, "#groups") or "finished" in text_of(b, "#groups"))
    assert not alert_text(browser)
    browser.execute_script("document.getElementById('groups').scrollIntoView()")
    shot(browser, "groups")

    # the read-only lists: an overflow volume, a schedule and a remote host made with busctl
    ov = d.volume(8 * MIB, "overflow.img")
    mgr = (BUS_NAME, ROOT, IFACE + "Manager")
    system_bus.busctl("call", *mgr, "CreateOverflow", "sa{sv}", ov, "0")
    sched = system_bus.busctl("call", *mgr, "CreateSchedule", "ssaoa{sv}", "hourly-db", "hourly",
                              "1", set_path, "0").stdout.split()[1].strip('"')
    system_bus.busctl("call", *mgr, "AddHost", "ssa{sv}", "backup", "root@127.0.0.1:1", "0")
    wait_for(browser, "the lists", lambda b: "overflow.img" in text_of(b, "#overflows")
             and "hourly-db" in text_of(b, "#schedules") and "backup" in text_of(b, "#hosts"))
    assert "db" in text_of(browser, "#schedules tbody")
    assert "root@127.0.0.1:1" in text_of(browser, "#hosts tbody")
    browser.execute_script("document.getElementById('overflows').scrollIntoView()")
    shot(browser, "lists")
    system_bus.busctl("call", BUS_NAME, sched, IFACE + "Schedule", "Delete", "a{sv}", "0")
    wait_for(browser, "the schedule to go", lambda b: "hourly-db" not in text_of(b, "#schedules"))

    # a full copy, suspended, resumed and aborted from the page
    browser.execute_script("window.scrollTo(0, 0)")
    job_before = prop(browser, "job")
    click(browser, "#act-copy")
    wait_for(browser, "the full copy to run", lambda b: b.find_elements("css selector", bar))
    wait_for(browser, "Suspend to be enabled", lambda b: enabled(b, "#act-suspend"))
    click(browser, "#act-suspend")
    wait_for(browser, "the copy to be suspended",
             lambda b: prop(b, "copy").startswith("suspended while copying to the shadow"))
    assert enabled(browser, "#act-resume") and not enabled(browser, "#act-suspend")
    click(browser, "#act-resume")
    wait_for(browser, "the copy to run again",
             lambda b: prop(b, "copy").startswith("copying to the shadow")
             and enabled(b, "#act-abort"))
    click(browser, "#act-abort")
    # (the job's Done and Message may come in separate PropertiesChanged signals)
    wait_for(browser, "the copy to stop, saying so", lambda b: prop(b, "job") != job_before
             and prop(b, "copy").startswith("idle (last") and "abort" in prop(b, "copy").lower())
    assert not alert_text(browser)

    # no throttle any more, then a full copy onto the master (asks first)
    click(browser, "#act-throttle")
    wait_for(browser, "the throttle dialog",
             lambda b: b.find_elements("css selector", "#throttle-delay"))
    fill(browser, "#throttle-delay", "0")
    click(browser, "#throttle-apply")
    wait_for(browser, "no throttle", lambda b: prop(b, "throttle") == "none")
    # the aborted copy left the shadow incomplete: refused, saying what to do
    click(browser, "#act-copy-master")
    wait_for(browser, "the confirmation", lambda b: b.find_elements("css selector", "#confirm-yes"))
    click(browser, "#confirm-yes")
    wait_for(browser, "the Incomplete refusal",
             lambda b: "run the update again to complete it" in alert_text(b))
    job_before = prop(browser, "job")
    click(browser, "#act-update")
    wait_for(browser, "the update to end", lambda b: prop(b, "job") != job_before
             and prop(b, "copy").startswith("idle (last"))
    job_before = prop(browser, "job")
    click(browser, "#act-copy-master")
    wait_for(browser, "the confirmation", lambda b: b.find_elements("css selector", "#confirm-yes"))
    click(browser, "#confirm-yes")
    wait_for(browser, "the copy to the master to end", lambda b: prop(b, "job") != job_before
             and prop(b, "copy").startswith("idle (last: copy-to-master"))
    assert not alert_text(browser)

    # the volume browser of New set: the set's volumes, and why each cannot serve a new set
    click(browser, "#new-set")
    wait_for(browser, "the volume browser", lambda b: "master.img" in text_of(b, "#volume-browser"))
    rows = text_of(browser, "#volume-browser tbody tr")
    assert "used by db" in rows, rows
    assert "32.0 MiB" in rows, rows
    fill(browser, "#new-master", master)
    wait_for(browser, "the bitmap size", lambda b: "needs" in text_of(b, "#bitmap-need"))
    shot(browser, "volumes")
    # a compact dependent set (shadow smaller than the master) needs an index too: the page
    # computes the size as the engine does
    small = d.volume(8 * MIB, "small.img")
    browser.execute_script("const k = document.getElementById('new-kind'); k.value = 'dependent';"
                           "k.dispatchEvent(new Event('change'))")
    fill(browser, "#new-shadow", small)
    compact = bitmap_size(size, 8 * MIB, 0, Kind.DEPENDENT)
    assert compact > need
    wait_for(browser, "the compact bitmap size",
             lambda b: f"needs {compact / 1024:.1f} KiB" in text_of(b, "#bitmap-need"))
    click(browser, "#new-cancel")

    # disabling asks first; then the row goes and the empty state is back
    browser.execute_script("window.scrollTo(0, 0)")
    click(browser, "#act-disable")
    wait_for(browser, "the confirmation", lambda b: b.find_elements("css selector", "#confirm-yes"))
    click(browser, "#confirm-yes")
    wait_for(browser, "the set to go", lambda b: "No sets yet" in text_of(b, "#sets-empty"))
    assert not alert_text(browser)
    assert "db" not in text_of(browser, "#groups")


def test_unprivileged_session(cockpit_nobody: str, browser: Any,
                              daemon_factory: Callable[..., Ptcopyd]) -> None:
    """A session without administrative access (the bridge runs as nobody, there is no polkit):
    everything is shown, and a change is refused in plain words with what to do."""
    d = daemon_factory()
    m, s, b = d.set_volumes(4 * MIB, kind="independent")
    browser.get(cockpit_nobody)
    wait_for(browser, "the empty state", lambda b: "No sets yet" in text_of(b, "#sets-empty"))
    click(browser, "#new-set")
    wait_for(browser, "the New set dialog", lambda b: b.find_elements("css selector", "#new-name"))
    fill(browser, "#new-name", "db")
    fill(browser, "#new-master", m)
    fill(browser, "#new-shadow", s)
    fill(browser, "#new-bitmap", b)
    click(browser, "#new-create")
    wait_for(browser, "the refusal", lambda b: "not authorized" in text_of(b, "#dialog-error"))
    said = text_of(browser, "#dialog-error")
    assert "administrative access" in said and "org.ptcopy.imaging.manage" in said, said
    shot(browser, "not-authorized")
