"""Network namespaces for the test hosts: one per host, joined to the root namespace by a veth
pair with its own /30 in 10.77.0.0/16, and the removal of what a crashed run left behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.system import run

# Everything a run makes carries its pid: netns ptc-<pid>-<cluster>-<host>, base directory
# BASE/<pid>-<cluster>, login user ptc<pid>u<cluster>; a later run removes what belongs to a
# pid that no longer runs (and leaves a parallel run's alone).
BASE = Path(os.environ.get("PTCOPY_TESTHOSTS_DIR", "/run/ptcopy-testhosts"))
NETNS_RE = re.compile(r"^ptc-(\d+)-(\d+)-(\d+)$")
NET = "10.77"


def alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def base_lock() -> Iterator[None]:
    """Held while a run picks addresses and names, so two runs starting at once do not clash."""
    BASE.mkdir(parents=True, exist_ok=True)
    BASE.chmod(0o755)
    with (BASE / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def netns_list() -> list[str]:
    """Names of the machine's named network namespaces."""
    out = run("ip", "netns", "list", timeout=10)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def used_subnets() -> set[int]:
    """Third octets of 10.77.X.0/24 that some address or route of the root namespace uses."""
    text = run("ip", "-4", "-o", "addr", "show", timeout=10) + run("ip", "-4", "route",
                                                                     timeout=10)
    return {int(m) for m in re.findall(r"\b10\.77\.(\d+)\.\d+", text)}


def free_subnet(seed: int) -> int:
    """A third octet no address or route uses yet (call under :func:`base_lock`)."""
    used = used_subnets()
    for k in range(256):
        x = (seed + k) % 256
        if x not in used:
            return x
    raise RuntimeError(f"every 10.77.X.0/24 is in use: {sorted(used)}")


@dataclass
class Link:
    """A host's network namespace and the veth pair that joins it to the root namespace.

    The root side has ``.4i+1``, the host side ``.4i+2`` of the cluster's 10.77.X.0/24."""

    netns: str
    root_if: str
    host_if: str
    root_addr: str
    address: str

    @classmethod
    def make(cls, pid: int, cluster: int, index: int, subnet: int) -> Link:
        """Names and addresses of host ``index`` (0-based, at most 62) of a cluster."""
        assert 0 <= index < 63, "a cluster has at most 63 hosts (one /30 each in a /24)"
        tag = f"{_b36(pid)}-{_b36(cluster)}"   # interface names are at most 15 characters
        return cls(f"ptc-{pid}-{cluster}-{index}", f"ptc{tag}r{index}", f"ptc{tag}h{index}",
                   f"{NET}.{subnet}.{4 * index + 1}", f"{NET}.{subnet}.{4 * index + 2}")

    def create(self) -> None:
        """The namespace with loopback up, the veth pair up with both addresses."""
        run("ip", "netns", "add", self.netns, timeout=10)
        run("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.host_if,
            "netns", self.netns, timeout=10)
        run("ip", "addr", "add", f"{self.root_addr}/30", "dev", self.root_if, timeout=10)
        run("ip", "link", "set", self.root_if, "up", timeout=10)
        for cmd in (("ip", "link", "set", "lo", "up"),
                    ("ip", "addr", "add", f"{self.address}/30", "dev", self.host_if),
                    ("ip", "link", "set", self.host_if, "up")):
            run(*self.exec(*cmd), timeout=10)

    def exec(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (in a mount namespace of its own, as ip makes)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def down(self) -> None:
        """Cut the link: the host's side goes down, so packets to it are dropped silently (a
        connection attempt times out, an open connection hears nothing) as with a cut cable."""
        run(*self.exec("ip", "link", "set", self.host_if, "down"), timeout=10)

    def up(self) -> None:
        run(*self.exec("ip", "link", "set", self.host_if, "up"), timeout=10)

    @property
    def is_up(self) -> bool:
        out = run(*self.exec("ip", "-o", "link", "show", self.host_if), timeout=10)
        return ",UP" in out or "<UP" in out

    def delete(self) -> None:
        """Kill what runs inside, delete the namespace (its veth pair goes with it)."""
        delete_netns(self.netns)


def delete_netns(name: str) -> None:
    """Kill every process inside network namespace ``name`` and delete it."""
    with contextlib.suppress(AssertionError):
        for pid in run("ip", "netns", "pids", name, timeout=10).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=10)


def stale_netns() -> list[str]:
    """Namespaces of earlier runs whose process is gone."""
    found = []
    for name in netns_list():
        m = NETNS_RE.match(name)
        if m and not alive(int(m.group(1))):
            found.append(name)
    return found


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
