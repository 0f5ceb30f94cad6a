"""Fixtures for the Cockpit page tier (root only): a private system bus and a real ptcopyd (from
tests/helpers/fixtures.py), a real cockpit-ws whose bridge talks to that bus and finds the page
in this checkout, and headless Chromium driven through Selenium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cockpit import multihost
from tests.helpers.bus import PrivateBus
from tests.helpers.fixtures import (  # noqa: F401  (fixtures pytest finds here)
    aio,
    daemon_args,
    daemon_factory,
    directory_hooks,
    missing,
    system_bus,
)
from tests.helpers.names import NOBODY, REPO
from tests.helpers.system import terminate
from tests.remote.fixtures import MakeHosts, make_hosts, shared_hosts  # noqa: F401  (fixtures)
from tests.remote.testhosts import skip_reason as remote_skip_reason

HERE = Path(__file__).parent
COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Screenshots of each state: build/cockpit-shots (ignored by git) unless PTCOPY_COCKPIT_SHOTS
# names another directory; the ones in the docs are made with PTCOPY_COCKPIT_SHOTS=docs/cockpit.
SHOTS = REPO / os.environ.get("PTCOPY_COCKPIT_SHOTS", "build/cockpit-shots")


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


def _start_cockpit(bus: PrivateBus, base: Path, uid: int | None,
                   extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """cockpit-ws on a free port of 127.0.0.1 with a local session (no login): its bridge runs
    as root, or as ``uid``, with DBUS_SYSTEM_BUS_ADDRESS at the private bus and finds
    cockpit/ptcopy of this checkout in XDG_DATA_DIRS. Returns the process and the URL of the
    page on its own (without Cockpit's shell frame)."""
    data = base / "xdg"
    (data / "cockpit").mkdir(parents=True)
    (data / "cockpit" / "ptcopy").symlink_to(REPO / "cockpit" / "ptcopy")
    home = base / "home"
    run = base / "run"
    for d in (home, run):
        d.mkdir(mode=0o700, exist_ok=True)
        if uid is not None:
            os.chown(d, uid, uid)
    port = _free_port()
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus.address, "HOME": str(home),
           "XDG_DATA_DIRS": f"{data}:/usr/share", "XDG_RUNTIME_DIR": str(run),
           **(extra_env or {})}
    argv = [COCKPIT_WS, "--no-tls", "--local-session=cockpit-bridge", "--port", str(port),
            "--address", "127.0.0.1"]
    if uid is not None:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    log_path = base / "cockpit-ws.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=base)
    end = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > end:
            terminate(proc)
            raise AssertionError("cockpit-ws did not start: "
                                 + log_path.read_text(errors="replace"))
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/cockpit/@localhost/ptcopy/index.html"


@pytest.fixture
def cockpit(system_bus: PrivateBus, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """The URL of the page served by a cockpit-ws whose bridge runs as root."""
    proc, url = _start_cockpit(system_bus, tmp_path, None)
    try:
        yield url
    finally:
        terminate(proc)


@pytest.fixture
def cockpit_nobody(system_bus: PrivateBus) -> Iterator[str]:  # noqa: F811
    """The same with the bridge running as nobody: no administrative access, no polkit."""
    base = Path(tempfile.mkdtemp(prefix="ptcopy-cockpit-", dir="/tmp"))
    base.chmod(0o755)  # nobody reaches its home, run and data directories below
    proc, url = _start_cockpit(system_bus, base, NOBODY)
    try:
        yield url
    finally:
        terminate(proc)
        shutil.rmtree(base, ignore_errors=True)


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


@pytest.fixture
def cockpit_remote(system_bus: PrivateBus, make_hosts: MakeHosts,  # noqa: F811
                   tmp_path: Path) -> Iterator[multihost.Remote]:
    """Cockpit's multi-host mode: a cockpit-ws (local session, bridge as root) whose shell
    knows one test host (tests/remote: its own network namespace, sshd, bus and ptcopyd) with
    this checkout's page installed there (tests/cockpit/multihost.py)."""
    why = remote_skip_reason()
    if why is None and not os.path.exists(multihost.COCKPIT_SSH):
        why = f"needs {multihost.COCKPIT_SSH} (Debian's cockpit-bridge)"
    if why is not None:
        pytest.skip(why)
    host = make_hosts(1, fresh=True)[0]
    env = multihost.ws_environment(host, tmp_path)
    multihost.install_page(host)
    proc, url = _start_cockpit(system_bus, tmp_path, None, env)
    try:
        yield multihost.Remote(host, local_page=url, key=tmp_path / "home" / ".ssh" / "id_ed25519",
                               shell_url=url.split("/cockpit/@localhost/")[0]
                               + f"/@{host.address}/ptcopy")
    finally:
        terminate(proc)
