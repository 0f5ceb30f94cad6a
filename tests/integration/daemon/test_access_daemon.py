"""Security review finding 1 on a running ptcopyd: what it serves is root's alone.

The daemon makes its run directory private itself (even one left 0755, as systemd's
RuntimeDirectory= makes it by default), serves files 0600 on a mount with kernel permission
checks, and uid 65534 can open none of them, nor the loop devices, by any route tried.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptcopy.daemon.main import parse_args
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ISET, MIB, NOBODY
from tests.helpers.system import mounts_under

pytestmark = pytest.mark.root

DEFAULT_RUN_DIR = Path(parse_args([]).run_dir)

PROBE = r"""
import errno, json, os, sys
out = {}
for path in json.loads(sys.argv[1]):
    for name, flags in (("read", os.O_RDONLY), ("write", os.O_WRONLY)):
        try:
            fd = os.open(path, flags)
            os.close(fd)
            out[f"{path} {name}"] = "ok"
        except OSError as e:
            out[f"{path} {name}"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


def nobody_opens(paths: list[str]) -> dict[str, str]:
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "/usr/bin/python3", "-c", PROBE, json.dumps(paths)],
                       capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    got: dict[str, str] = json.loads(r.stdout)
    return got


def mode_of(path: str | Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid


async def check_private(d: Ptcopyd, client: Client) -> None:
    m, s, bm = d.set_volumes(4 * MIB, kind="independent")
    set_path, job = await client.create_set("priv", "independent", m, s, bm)
    if job != "/":
        await client.wait_job(job)
    p = await client.props(set_path, ISET)
    devices = [p["MasterDevice"], p["ShadowDevice"]]
    mount = d.run_dir / "volumes"
    files = [str(f) for f in sorted(mount.glob("*/*"))]
    assert len(files) == 2, files
    assert mode_of(d.run_dir) == (stat.S_IFDIR, 0o700, 0)
    assert mode_of(mount) == (stat.S_IFDIR, 0o700, 0)
    for f in files:
        assert mode_of(f) == (stat.S_IFREG, 0o600, 0)
    before = Path(m).read_bytes()
    # a route around the private run directory: the mount, bound where anyone can walk
    base = Path(tempfile.mkdtemp(prefix="ptcopy-access-", dir="/tmp"))
    base.chmod(0o755)
    exposed = base / "volumes"
    exposed.mkdir(mode=0o777)
    subprocess.run(["mount", "--bind", str(mount), str(exposed)], check=True, timeout=30)
    try:
        routes = [*files, *devices, *(str(exposed / Path(f).relative_to(mount)) for f in files)]
        got = nobody_opens(routes)
    finally:
        subprocess.run(["umount", str(exposed)], check=True, timeout=30)
        shutil.rmtree(base)
    assert len(got) == 2 * len(routes)
    allowed = {k: v for k, v in got.items() if v not in ("EACCES", "EPERM")}
    assert not allowed, f"uid {NOBODY} got through: {allowed}"
    assert Path(m).read_bytes() == before
    # root is served as before
    with open(files[0], "rb", buffering=0) as f:
        assert f.read(4096) == before[:4096]
    await client.set_call(set_path, "Disable")   # nothing the probes did holds a file open


async def test_daemon_makes_a_loose_run_directory_private(
        daemon_factory: Callable[..., Ptcopyd], client: Client) -> None:
    d = daemon_factory(start=False)
    d.run_dir.mkdir(mode=0o755)
    d.run_dir.chmod(0o755)
    d.start()
    await check_private(d, client)


@pytest.fixture
def default_run_dir() -> Iterator[Path]:
    """ptcopyd's default run directory, removed afterwards when the test made it. Requested
    before daemon_factory, so it is torn down after the daemon stopped."""
    assert str(DEFAULT_RUN_DIR) == "/run/ptcopy"
    if mounts_under(DEFAULT_RUN_DIR):
        pytest.skip(f"{DEFAULT_RUN_DIR} is in use by another ptcopyd")
    existed = DEFAULT_RUN_DIR.exists()
    yield DEFAULT_RUN_DIR
    if not existed and not mounts_under(DEFAULT_RUN_DIR):
        shutil.rmtree(DEFAULT_RUN_DIR, ignore_errors=True)


async def test_daemon_default_run_directory_is_private(
        default_run_dir: Path, daemon_factory: Callable[..., Ptcopyd], client: Client) -> None:
    d = daemon_factory(start=False)
    d.run_dir = default_run_dir
    d.start()
    await check_private(d, client)
