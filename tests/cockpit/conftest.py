"""Fixtures for the Cockpit page tier (root only): a private system bus and a real ptcopyd (from
tests/helpers/fixtures.py), a real cockpit-ws whose bridge talks to that bus and finds the page
in this checkout, and headless Chromium driven through Selenium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.bus import PrivateBus
from tests.helpers.fixtures import (  # noqa: F401  (fixtures pytest finds here)
    aio,
    daemon_args,
    daemon_factory,
    directory_hooks,
    missing,
    system_bus,
)
from tests.helpers.names import REPO
from tests.helpers.system import terminate

HERE = Path(__file__).parent
COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = REPO / "docs" / "cockpit"


def _why_skip() -> str | None:
    why = missing(("dbus-daemon", "losetup", "cockpit-bridge"),
                  "needs root (ptcopyd serves loop devices over FUSE)")
    if why is not None:
        return why
    for path, pkg in ((COCKPIT_WS, "cockpit-ws"), (CHROMIUM, "chromium"),
                      (CHROMEDRIVER, "chromium-driver"),
                      ("/usr/share/cockpit/shell/index.css.gz", "cockpit-system")):
        if not os.path.exists(path):
            return f"needs {path} (Debian's {pkg}; scripts/setup.sh installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -e '.[test]')"
    return None


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, _why_skip, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cockpit(system_bus: PrivateBus, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """A cockpit-ws on 127.0.0.1 with a local session (no login): its bridge runs as root with
    DBUS_SYSTEM_BUS_ADDRESS at the private bus and finds cockpit/ptcopy of this checkout in
    XDG_DATA_DIRS. Yields the URL of the page on its own (without Cockpit's shell frame)."""
    data = tmp_path / "xdg"
    (data / "cockpit").mkdir(parents=True)
    (data / "cockpit" / "ptcopy").symlink_to(REPO / "cockpit" / "ptcopy")
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": system_bus.address, "HOME": str(home),
           "XDG_DATA_DIRS": f"{data}:/usr/share", "XDG_RUNTIME_DIR": str(tmp_path)}
    log = (tmp_path / "cockpit-ws.log").open("wb")
    proc = subprocess.Popen([COCKPIT_WS, "--no-tls", "--local-session=cockpit-bridge",
                             "--port", str(port), "--address", "127.0.0.1"],
                            env=env, stdout=log, stderr=log)
    end = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > end:
            terminate(proc)
            raise AssertionError("cockpit-ws did not start: "
                                 + (tmp_path / "cockpit-ws.log").read_text(errors="replace"))
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/cockpit/@localhost/ptcopy/index.html"
    finally:
        terminate(proc)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """Headless Chromium (Debian's, through Debian's chromedriver) with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,1200", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)
