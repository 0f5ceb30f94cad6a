"""The Cockpit page against a real cockpit-ws, a real ptcopyd on a private bus, and headless
Chromium: what a person sees and does, with screenshots of each state in docs/cockpit/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.cockpit.conftest import SHOTS
from tests.helpers.daemon import Ptcopyd

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
    els = driver.find_elements("css selector", css)
    return " ".join(e.text for e in els)


def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_not_running_then_empty(cockpit: str, browser: Any,
                                daemon_factory: Callable[..., Ptcopyd]) -> None:
    """Without ptcopyd the page says so and how to start it; when ptcopyd starts, the page
    follows by itself (the bus name's owner) and shows the empty state."""
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
