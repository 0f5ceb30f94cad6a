"""The page in Cockpit's multi-host mode: opened in the shell for another host (a test host of
tests/remote, reached over real SSH by cockpit-ssh), it shows that host's sets, not this one's,
and its changes reach that host's ptcopyd."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selenium.common.exceptions import WebDriverException

from tests.cockpit.multihost import Remote, load_key
from tests.cockpit.page import IFACE, ROOT, click, shot, text_of, wait_for
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import BUS_NAME, MIB
from tests.remote.testhosts import TestHost


def _busctl(host: TestHost, *args: str) -> str:
    """busctl on the host's own bus, directly (not through the page)."""
    return host.bus.busctl(*args).stdout


def _create_set(bus_call: Callable[..., str], d: Ptcopyd, name: str) -> str:
    m, s, b = d.set_volumes(4 * MIB, kind="independent")
    out = bus_call("call", BUS_NAME, ROOT, IFACE + "Manager", "CreateSet", "sssssa{sv}",
                   name, "independent", m, s, b, "0")
    return out.split()[1].strip('"')


def in_frame(driver: Any, css: str, cond: Callable[[], bool]) -> bool:
    """Whether cond() holds inside the frame css selects (the shell may replace its frames
    while it connects); stays in the frame when it does."""
    driver.switch_to.default_content()
    frames = driver.find_elements("css selector", css)
    if not frames:
        return False
    try:
        driver.switch_to.frame(frames[0])
        if cond():
            return True
    except WebDriverException:
        pass
    driver.switch_to.default_content()
    return False


def _job_of(host: TestHost, set_path: str) -> str:
    out = _busctl(host, "get-property", BUS_NAME, set_path, IFACE + "IISet", "Job")
    return out.split()[1].strip('"')


def test_remote_host(cockpit_remote: Remote, browser: Any,
                     daemon_factory: Callable[..., Ptcopyd]) -> None:
    """The shell's page for a remote host: that host's sets only; a new point in time taken
    there from the page, checked through that host's ptcopyd."""
    host = cockpit_remote.host
    local = daemon_factory()
    _create_set(lambda *a: local.bus.busctl(*a).stdout, local, "local-db")
    remote_path = _create_set(lambda *a: _busctl(host, *a), host.daemon, "remote-db")

    load_key(browser, cockpit_remote)
    browser.get(cockpit_remote.shell_url)
    frame = f'iframe[name="cockpit1:{host.address}/ptcopy"]'
    wait_for(browser, "the host's set in the shell's frame for the host",
             lambda b: in_frame(b, frame, lambda: "remote-db" in text_of(b, "#sets tbody")))
    assert "local-db" not in text_of(browser, "#sets")
    # the page's own files come from that host's bridge (its copy of the package)
    browser.switch_to.default_content()
    src = browser.find_element("css selector", frame).get_attribute("src")
    assert f"/cockpit/@{host.address}/ptcopy/" in src or "/cockpit/$" in src, src
    browser.switch_to.frame(browser.find_element("css selector", frame))

    bar = 'tr[data-set="remote-db"] [role="progressbar"]'
    wait_for(browser, "the initial copy to end",
             lambda b: not b.find_elements("css selector", bar))
    click(browser, 'tr[data-set="remote-db"]')
    wait_for(browser, "the set's details", lambda b: b.find_elements("css selector", "#act-update"))
    job_before = _job_of(host, remote_path)
    click(browser, "#act-update")
    wait_for(browser, "the host's ptcopyd to run the update",
             lambda b: _job_of(host, remote_path) != job_before)
    job = _job_of(host, remote_path)
    op = _busctl(host, "get-property", BUS_NAME, job, IFACE + "Job", "Operation")
    assert "update" in op, op
    browser.switch_to.default_content()
    shot(browser, "remote-host")
