"""Where the system files of a pip installation are, and the commands that install them.

The Debian package installs ptcopy's D-Bus policy and activation file, polkit action, systemd
units and udev rules itself. The wheel and the sdist carry the same files as data files under
``<prefix>/share/ptcopy`` (``sys.prefix`` of the environment pip installed into); ``ptcopyd
--help`` ends with the commands below, filled in with this installation's paths.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# name under share/ptcopy -> where the system looks for it
TARGETS = {
    "dbus/org.ptcopy.Imaging1.conf": "/etc/dbus-1/system.d/org.ptcopy.Imaging1.conf",
    "dbus/org.ptcopy.Imaging1.service":
        "/usr/local/share/dbus-1/system-services/org.ptcopy.Imaging1.service",
    "dbus/org.ptcopy.imaging.policy": "/usr/share/polkit-1/actions/org.ptcopy.imaging.policy",
    "systemd/ptcopyd.service": "/etc/systemd/system/ptcopyd.service",
    "systemd/ptcopy-update@.service": "/etc/systemd/system/ptcopy-update@.service",
    "udev/99-ptcopy.rules": "/etc/udev/rules.d/99-ptcopy.rules",
}


def data_dir() -> Path | None:
    """``share/ptcopy`` of this installation, or None (a source checkout: see dbus/, packaging/)."""
    here = Path(__file__).resolve().parent
    # <prefix>/lib/python3.X/site-packages/ptcopy: the prefix is three levels up
    prefixes = [Path(sys.prefix), *here.parents[2:3], Path("/usr/local"), Path("/usr")]
    for prefix in prefixes:
        if (prefix / "share" / "ptcopy" / "systemd").is_dir():
            return prefix / "share" / "ptcopy"
    return None


def install_commands() -> str:
    """Shell commands, as root, that put the system files where D-Bus, polkit, systemd and udev
    look, with the units pointing at this installation's ptcopyd and ptcopy."""
    found = data_dir()
    src = str(found) if found is not None else "<prefix>/share/ptcopy"
    bindir = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    ptcopyd = shutil.which("ptcopyd") or (str(bindir / "ptcopyd") if bindir else "ptcopyd")
    ptcopy = shutil.which("ptcopy") or str(Path(ptcopyd).with_name("ptcopy"))
    lines = [f"  S={src}"]
    for name, target in TARGETS.items():
        if name.startswith(("systemd/", "udev/")):
            lines.append(f"  sed -e 's#/usr/bin/ptcopyd#{ptcopyd}#'"
                         f" -e 's#/usr/bin/ptcopy #{ptcopy} #' $S/{name} > {target}")
        else:
            lines.append(f"  install -D -m 644 $S/{name} {target}")
    lines.append("  systemctl daemon-reload && udevadm control --reload")
    return "\n".join(lines)


def help_epilog() -> str:
    return ("system files: the Debian package installs them. After `pip install ptcopy`, "
            "install them as root with:\n" + install_commands() + "\n"
            "(remove those files to undo; dbus and polkit notice changes by themselves). "
            "Then the first call on the system bus starts ptcopyd through D-Bus.")
