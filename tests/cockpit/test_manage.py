"""The page's overflow volumes, schedules and groups: created, changed and deleted from the page,
each change checked through ptcopyd itself (its ObjectManager, not the page), and a refusal
shown in the CLI's words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.cockpit.page import (
    IFACE,
    ROOT,
    alert_text,
    click,
    fill,
    managed,
    shot,
    text_of,
    wait_for,
)
from tests.helpers.bus import PrivateBus
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import BUS_NAME, MIB


def _create_set(bus: PrivateBus, d: Ptcopyd, name: str) -> str:
    m, s, b = d.set_volumes(4 * MIB, kind="independent")
    out = bus.busctl("call", BUS_NAME, ROOT, IFACE + "Manager", "CreateSet", "sssssa{sv}",
                     name, "independent", m, s, b, "0").stdout
    return out.split()[1].strip('"')


def _confirm(browser: Any, css: str) -> None:
    click(browser, css)
    wait_for(browser, "the confirmation", lambda b: b.find_elements("css selector", "#confirm-yes"))
    click(browser, "#confirm-yes")


def _by_name(bus: PrivateBus, iface: str, name: str, key: str = "Name") -> dict[str, Any] | None:
    return next((o for o in managed(bus, iface).values() if o[key] == name), None)


def test_overflow_schedule_group(cockpit: str, browser: Any, system_bus: PrivateBus,
                                 daemon_factory: Callable[..., Ptcopyd]) -> None:
    """A new overflow volume attached to a compact set, its deletion refused in words while
    attached, then detached and deleted; a new schedule with its next runs, a second of the
    same name refused in words, paused, resumed, run now and deleted; a group's members
    changed, then the group deleted (its sets stay); a host added, probed and removed."""
    d = daemon_factory()
    a = _create_set(system_bus, d, "a")
    b = _create_set(system_bus, d, "b")
    browser.get(cockpit)
    wait_for(browser, "the sets", lambda br: "b" in text_of(br, 'tr[data-set="b"]'))

    # an overflow volume: made, attached to a compact dependent set, refused deletion while
    # attached (in words), detached, deleted
    m, sh, bm = d.set_volumes(4 * MIB, 2 * MIB, kind="dependent")
    c = system_bus.busctl("call", BUS_NAME, ROOT, IFACE + "Manager", "CreateSet", "sssssa{sv}",
                          "c", "dependent", m, sh, bm, "0").stdout.split()[1].strip('"')
    ov = d.volume(8 * MIB, "overflow.img")
    click(browser, "#new-overflow")
    wait_for(browser, "the dialog", lambda br: br.find_elements("css selector", "#overflow-path"))
    fill(browser, "#overflow-path", ov)
    click(browser, "#overflow-create")
    wait_for(browser, "the overflow volume",
             lambda br: "overflow.img" in text_of(br, "#overflows tbody"))
    ov_path = next(p for p, o in managed(system_bus, "IIOverflow").items() if o["Path"] == ov)
    click(browser, 'tr[data-set="c"]')
    wait_for(browser, "the set's overflow action",
             lambda br: br.find_elements("css selector", "#act-overflow"))
    click(browser, "#act-overflow")
    wait_for(browser, "the dialog", lambda br: br.find_elements("css selector", "#set-overflow"))
    browser.execute_script("document.getElementById('set-overflow').value = arguments[0]",
                           ov_path)
    click(browser, "#set-overflow-apply")
    wait_for(browser, "the set to spill into it",
             lambda br: managed(system_bus, "IISet")[c]["Overflow"] == ov_path)
    wait_for(browser, "the set's details",
             lambda br: "overflow.img" in text_of(br, '[data-prop="overflow"]'))
    _confirm(browser, f'button[data-overflow-delete="{ov}"]')
    wait_for(browser, "the Dependency refusal", lambda br: "detach" in alert_text(br))
    said = alert_text(browser)
    assert "attached to c" in said and "detach or remove what depends on it first" in said, said
    assert "org.ptcopy" not in said, said
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, "overflow-refused")
    click(browser, "#act-overflow")
    wait_for(browser, "the dialog", lambda br: br.find_elements("css selector", "#set-overflow"))
    browser.execute_script("document.getElementById('set-overflow').value = ''")
    click(browser, "#set-overflow-apply")
    wait_for(browser, "the set to spill no more",
             lambda br: managed(system_bus, "IISet")[c]["Overflow"] == "/")
    _confirm(browser, f'button[data-overflow-delete="{ov}"]')
    wait_for(browser, "the overflow volume to go",
             lambda br: "overflow.img" not in text_of(br, "#overflows"))
    assert managed(system_bus, "IIOverflow") == {}
    assert not alert_text(browser)

    # a schedule over set a, with its next runs
    click(browser, "#new-schedule")
    wait_for(browser, "the dialog", lambda br: br.find_elements("css selector", "#schedule-set-a"))
    fill(browser, "#schedule-name", "often")
    fill(browser, "#schedule-spec", "every 15min")
    click(browser, "#schedule-set-a")
    shot(browser, "new-schedule")
    click(browser, "#schedule-create")
    wait_for(browser, "the schedule", lambda br: "often" in text_of(br, "#schedules tbody"))
    x = _by_name(system_bus, "Schedule", "often")
    assert x is not None and x["Targets"] == [a] and x["Spec"] == "every 15min" and x["Enabled"], x
    wait_for(browser, "its next runs", lambda br: br.execute_script(
        "return document.querySelectorAll('#schedules tbody li').length") == 3)

    # the same name again: refused in plain words, with what to do
    click(browser, "#new-schedule")
    wait_for(browser, "the dialog", lambda br: br.find_elements("css selector", "#schedule-set-b"))
    fill(browser, "#schedule-name", "often")
    click(browser, "#schedule-set-b")
    click(browser, "#schedule-create")
    wait_for(browser, "the refusal",
             lambda br: "already a schedule" in text_of(br, "#dialog-error"))
    said = text_of(browser, "#dialog-error")
    assert "choose another name" in said and "org.ptcopy" not in said, said
    shot(browser, "schedule-refused")
    click(browser, "#new-schedule-dialog .pf-m-link")
    assert len(managed(system_bus, "Schedule")) == 1

    # paused, resumed, run now
    click(browser, 'button[data-schedule-pause="often"]')
    wait_for(browser, "paused", lambda br: "paused" in text_of(br, "#schedules tbody"))
    assert _by_name(system_bus, "Schedule", "often")["Enabled"] is False  # type: ignore[index]
    click(browser, 'button[data-schedule-resume="often"]')
    wait_for(browser, "enabled again", lambda br: "enabled" in text_of(br, "#schedules tbody"))
    assert _by_name(system_bus, "Schedule", "often")["Enabled"] is True  # type: ignore[index]
    click(browser, 'button[data-schedule-run="often"]')
    wait_for(browser, "the run", lambda br: (_by_name(system_bus, "Schedule", "often") or {})
             .get("LastJob", "/") != "/")
    result = "#schedules tbody td[data-label='Last result']"
    wait_for(browser, "the run's result",
             lambda br: text_of(br, result).strip() not in ("", "-"))
    browser.execute_script("document.getElementById('schedules').scrollIntoView()")
    shot(browser, "schedules")
    _confirm(browser, 'button[data-schedule-delete="often"]')
    wait_for(browser, "the schedule to go", lambda br: "often" not in text_of(br, "#schedules"))
    assert managed(system_bus, "Schedule") == {}
    assert not alert_text(browser)

    # a group: its members changed (a out, b in), then the group deleted; the sets stay
    system_bus.busctl("call", BUS_NAME, ROOT, IFACE + "Manager", "CreateGroup", "saoa{sv}",
                      "pair", "1", a, "0")
    wait_for(browser, "the group", lambda br: "pair" in text_of(br, "#groups tbody"))
    click(browser, 'button[data-group-members="pair"]')
    wait_for(browser, "the members", lambda br: br.find_elements("css selector", "#member-b"))
    click(browser, "#member-a")
    click(browser, "#member-b")
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, "members")
    click(browser, "#members-apply")
    wait_for(browser, "the new members",
             lambda br: not br.find_elements("css selector", "#members-dialog")
             and (_by_name(system_bus, "IIGroup", "pair") or {}).get("Sets") == [b])
    _confirm(browser, 'button[data-group-delete="pair"]')
    wait_for(browser, "the group to go", lambda br: "pair" not in text_of(br, "#groups"))
    assert managed(system_bus, "IIGroup") == {}
    assert set(managed(system_bus, "IISet")) == {a, b, c}
    assert not alert_text(browser)

    # a host in ptcopyd's registry: added, probed (nothing listens there), removed
    click(browser, "#add-host")
    wait_for(browser, "the dialog", lambda br: br.find_elements("css selector", "#host-target"))
    fill(browser, "#host-name", "backup")
    fill(browser, "#host-target", "root@127.0.0.1:1")
    click(browser, "#host-add")
    wait_for(browser, "the host", lambda br: "backup" in text_of(br, "#hosts tbody"))
    x = _by_name(system_bus, "Host", "backup")
    assert x is not None and x["Target"] == "root@127.0.0.1:1", x
    click(browser, 'button[data-host-probe="backup"]')
    wait_for(browser, "why it is not reachable", lambda br: "no: " in text_of(br, "#hosts tbody"))
    _confirm(browser, 'button[data-host-remove="backup"]')
    wait_for(browser, "the host to go", lambda br: "backup" not in text_of(br, "#hosts"))
    assert managed(system_bus, "Host") == {}
    assert not alert_text(browser)
