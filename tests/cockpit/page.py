"""What the tests of the Cockpit page share: waiting for what the page shows, reading it,
clicking and filling it in (through Selenium), screenshots, and asking ptcopyd directly."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.cockpit.conftest import SHOTS
from tests.helpers.bus import PrivateBus
from tests.helpers.names import BUS_NAME

ROOT = "/org/ptcopy/Imaging1"
IFACE = "org.ptcopy.Imaging1."

WAIT = 60.0

def wait_for(driver: Any, what: str, cond: Callable[[Any], Any], timeout: float = WAIT) -> Any:
    """Wait until cond(driver) is true; on timeout fail with the page's text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(cond)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{body}") from None

def text_of(driver: Any, css: str) -> str:
    """The text of what css selects, read at once (the page redraws as the daemon's objects
    change, so elements found earlier may be gone)."""
    return str(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => e.innerText).join(' ')", css))

def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))

def click(driver: Any, css: str) -> None:
    assert driver.execute_script(
        "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e", css), css

def fill(driver: Any, css: str, value: str) -> None:
    el = driver.find_element("css selector", css)
    el.clear()
    el.send_keys(value)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", el)

def enabled(driver: Any, css: str) -> bool:
    return bool(driver.execute_script(
        "const e = document.querySelector(arguments[0]); return !!e && !e.disabled", css))

def prop(driver: Any, name: str) -> str:
    return text_of(driver, f'#set-detail [data-prop="{name}"]')

def alert_text(driver: Any) -> str:
    return text_of(driver, "#alerts .pf-c-alert")

def look_up(bus: PrivateBus, name: str) -> str:
    out = bus.busctl("call", BUS_NAME, ROOT, IFACE + "Manager", "LookUp", "s", name).stdout
    return out.split()[1].strip('"')


def managed(bus: PrivateBus, iface: str) -> dict[str, dict[str, Any]]:
    """What ptcopyd itself says (not the page): its objects with interface ``iface`` (short
    name, e.g. "Schedule"), by path, as {property: value}."""
    out = bus.busctl("--json=short", "call", BUS_NAME, ROOT,
                     "org.freedesktop.DBus.ObjectManager", "GetManagedObjects").stdout
    objs = json.loads(out)["data"][0]
    return {path: {k: v["data"] for k, v in ifaces[IFACE + iface].items()}
            for path, ifaces in objs.items() if IFACE + iface in ifaces}
