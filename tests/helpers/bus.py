"""A private dbus-daemon configured like Debian's system bus (deny by default) that includes
the project's own ``dbus/org.ptcopy.Imaging1.conf``, so the policy that ships is the one tested."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.names import BUS_NAME, DBUS, POLICY, REPO
from tests.helpers.system import terminate

# The project's private-bus configuration (Debian's system bus policy plus ptcopy's), with room
# for the tests' fake polkit, which runs as root (polkit's own file lets user polkitd own it).
FAKE_POLKIT = """<policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>"""


def bus_config(listen: str, *, extra: str = "") -> str:
    """dbus/private-bus.conf.in filled in: listening on ``listen``, with ptcopy's policy."""
    text = (REPO / "dbus" / "private-bus.conf.in").read_text()
    return (text.replace("@LISTEN@", listen).replace("@POLICY@", str(POLICY))
            .replace("@EXTRA@", extra))



@dataclass
class PrivateBus:
    """A private dbus-daemon configured like the system bus."""

    dir: Path
    socket: Path
    address: str
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """Environment for real clients (busctl --system, gdbus --system)."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    @classmethod
    def start(cls, *, extra: str = FAKE_POLKIT, parent: Path | None = None) -> PrivateBus:
        """Start one; ``extra`` is policy added to the configuration (by default the room for
        the tests' fake polkit); its directory is made in ``parent`` (default /tmp), which
        every uid must be able to search."""
        # world-searchable, so a second uid can reach the socket (pytest's tmp dirs are 0700)
        d = Path(tempfile.mkdtemp(prefix="ptcopy-test-bus-", dir=parent or "/tmp"))
        d.chmod(0o755)
        sock = d / "system_bus_socket"
        conf = d / "system.conf"
        conf.write_text(bus_config(f"unix:path={sock}", extra=extra))
        proc = subprocess.Popen(["dbus-daemon", "--config-file", str(conf), "--nofork",
                                 "--print-address"], stdout=subprocess.PIPE,
                                stderr=open(d / "dbus-daemon.log", "wb"))  # noqa: SIM115
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("unix:"):
            proc.kill()
            proc.wait()
            log = (d / "dbus-daemon.log").read_text(errors="replace")
            raise RuntimeError(f"dbus-daemon did not start: {line!r} {log}")
        return cls(d, sock, f"unix:path={sock}", proc)

    def stop(self) -> None:
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def busctl(self, *args: str, check: bool = True, uid: int | None = None,
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.tool("busctl", "--system", *args, check=check, uid=uid, timeout=timeout)

    def gdbus(self, *args: str, check: bool = True, uid: int | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.tool("gdbus", args[0], "--system", *args[1:], check=check, uid=uid,
                         timeout=timeout)

    def tool(self, *cmd: str, check: bool = True, uid: int | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        argv = list(cmd)
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): "
                                 f"{r.stderr.strip()} {r.stdout.strip()}")
        return r

    def owner_pid(self) -> int | None:
        """PID of the connection owning org.ptcopy.Imaging1, None when nobody owns it."""
        r = self.busctl("call", DBUS, "/org/freedesktop/DBus", DBUS,
                        "GetConnectionUnixProcessID", "s", BUS_NAME, check=False, timeout=5)
        if r.returncode != 0:
            return None
        return int(r.stdout.split()[1])

