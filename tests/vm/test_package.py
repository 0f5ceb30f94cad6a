"""The Debian package on a clean Debian 12 booted with systemd (issue 16; docs/packaging.md).

The host builds the package (scripts/build-package.sh: dpkg-buildpackage, lintian without
errors), unpacks the cached clean Debian 12 root (scripts/package-root.sh, made by setup.sh),
installs the .deb there with apt in a chroot (apt resolves every dependency from the archive's
package lists; the files come from apt's cache, no network) and purges it again, so the guest
boots without ptcopy but with its dependencies. The root goes into an ext4 image; qemu boots the
VM tier's kernel with a busybox initramfs that mounts it and hands over to systemd, which runs
tests/vm/package-guest.sh from a oneshot unit: install with apt, D-Bus activation, a set's
enable/update/status on file volumes, an unprivileged user refused a change, stop and
re-activation, purge leaving nothing behind. Each check prints a line this test reads back.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.vm import vm_initramfs, vmkit

HERE = Path(__file__).resolve().parent
REPO = vmkit.REPO
GUEST_SCRIPT = HERE / "package-guest.sh"
IMAGE_MIB = 2048

# The initramfs only mounts the root image: virtio disk and ext4.
ROOT_MODULES = ("crc32c_generic", "virtio_pci", "virtio_blk", "ext4")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r ko; do insmod "/lib/modules/$ko" || echo "PKGVM-ERROR: insmod $ko"; done \\
    </lib/modules/order
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
mount -t ext4 -o rw /dev/vda /newroot || { echo "PKGVM-ERROR: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys /dev
exec switch_root /newroot /lib/systemd/systemd
"""

# The unit that runs the guest script; the console is the test's only channel.
UNIT = """[Unit]
Description=ptcopy package test (tests/vm/package-guest.sh)
After=basic.target dbus.service systemd-udevd.service
Wants=dbus.service

[Service]
Type=oneshot
ExecStart=/bin/bash /root/pkgtest/package-guest.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
"""

# quiet boot: only the guest script's lines and kernel errors on the console
KERNEL_ARGS = ("console=ttyS0 panic=-1 no_timer_check quiet loglevel=3 "
               "systemd.show_status=0 systemd.log_level=warning")

# Units that would only slow the boot or fight over the console.
MASKED = ("serial-getty@ttyS0.service", "getty@tty1.service", "apt-daily.timer",
          "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
          "fstrim.timer", "systemd-timesyncd.service")


OFFLINE = ("-o", "Acquire::http::Proxy=http://127.0.0.1:9", "-o",
           "Acquire::https::Proxy=http://127.0.0.1:9")


def _cache() -> Path:
    return Path(os.environ.get("PTCOPY_VM_CACHE") or vmkit.DEFAULT_CACHE) / "package-root"


def _run(*cmd: str | Path, log: Path) -> None:
    with log.open("ab") as f:
        f.write(f"+ {' '.join(map(str, cmd))}\n".encode())
        f.flush()
        r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{tail}", pytrace=False)


def _chroot_install(root: Path, deb: Path, log: Path) -> None:
    """apt installs the .deb with its dependencies from the archive (apt's cache, no network),
    then it is purged: the guest starts with the dependencies and without ptcopy. (The root's
    /dev has the device nodes mmdebstrap made; only proc is mounted.)"""
    shutil.copy2(deb, root / "root" / "pkgtest" / deb.name)
    proc = root / "proc"
    _run("mount", "-t", "proc", "proc", proc, log=log)
    try:
        env = ["env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8",
               "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        # Offline: a download would go to a proxy nobody listens on and fail. (Not
        # --no-download: apt 2.6 refuses it with a .deb file to install.)
        _run("chroot", root, *env, "apt-get", "install", "-y", "-q", *OFFLINE,
             f"/root/pkgtest/{deb.name}", log=log)
        _run("chroot", root, *env, "apt-get", "purge", "-y", "-q", "ptcopy", log=log)
    finally:
        subprocess.run(["umount", str(proc)], check=False)


def _prepare_root(root: Path, deb: Path, nonce: str, log: Path) -> None:
    cache = _cache()
    for name in ("root.tar", "modules.tar"):
        _run("tar", "-x", "-f", cache / name, "-C", root, log=log)
    pkgtest = root / "root" / "pkgtest"
    pkgtest.mkdir(parents=True)
    shutil.copy2(GUEST_SCRIPT, pkgtest / "package-guest.sh")
    (pkgtest / "nonce").write_text(nonce)
    # the backup disk of the udev automation: GPT, one partition named ptcopy-update-nightly
    backup = pkgtest / "backup.img"
    with backup.open("wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["sfdisk", "-q", str(backup)], check=True, capture_output=True,
                   input=b'label: gpt\nsize=4MiB, type=L, name="ptcopy-update-nightly"\n')
    _chroot_install(root, deb, log)
    system = root / "etc" / "systemd" / "system"
    (system / "pkgtest-guest.service").write_text(UNIT)
    wants = system / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "pkgtest-guest.service").symlink_to("/etc/systemd/system/pkgtest-guest.service")
    for unit in MASKED:
        link = system / unit
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/dev/null")
    (root / "etc" / "machine-id").write_text(secrets.token_hex(16) + "\n")


def _initramfs(kit: vmkit.Kit, where: Path) -> Path:
    modules_dir = kit.kernel.parent / "lib" / "modules" / kit.kernel_version / "kernel"
    modules = vm_initramfs.module_load_order(modules_dir, ROOT_MODULES)
    c = vm_initramfs.Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        c.directory(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", vmkit.BUSYBOX.read_bytes(), 0o755)
    c.file("init", INIT.encode(), 0o755)
    for ko in modules:
        c.file(f"lib/modules/{ko.name}", ko.read_bytes())
    c.file("lib/modules/order", "".join(f"{ko.name}\n" for ko in modules).encode())
    path = where / "pkg-initramfs.cpio"
    path.write_bytes(c.finish())
    return path


def _boot(kit: vmkit.Kit, image: Path, initrd: Path, console: Path,
          timeout: float) -> tuple[str, bool]:
    args = [kit.qemu, "-accel", kit.accel, "-cpu", "host" if kit.accel == "kvm" else "max",
            "-smp", "2", "-m", "1024", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-kernel", str(kit.kernel), "-initrd", str(initrd),
            "-append", KERNEL_ARGS,
            "-drive", f"file={image},format=raw,if=none,id=root,cache=unsafe",
            "-device", "virtio-blk-pci,drive=root",
            # systemd wants entropy early; without a source the boot can stall
            "-device", "virtio-rng-pci"]
    with console.open("wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            timed_out = True
    return console.read_text(errors="replace").replace("\r", ""), timed_out


@pytest.mark.slow
def test_package_on_clean_debian_with_systemd(vm_kit: vmkit.Kit, tmp_path: Path) -> None:
    cache = _cache()
    if not (cache / ".complete").exists():
        pytest.fail(f"no clean Debian 12 root in {cache}: run scripts/setup.sh "
                    "(scripts/package-root.sh)", pytrace=False)
    log = tmp_path / "host.log"
    started = time.monotonic()

    out = tmp_path / "package"
    _run("bash", REPO / "scripts" / "build-package.sh", out, log=log)
    deb = next(out.glob("ptcopy_*.deb"))
    lintian = (out / "lintian.txt").read_text()
    assert not re.search(r"^E: ", lintian, re.M), lintian

    nonce = secrets.token_hex(8)
    root = tmp_path / "root"
    root.mkdir()
    try:
        _prepare_root(root, deb, nonce, log)
        image = tmp_path / "root.img"
        _run("mke2fs", "-q", "-t", "ext4", "-d", root, "-L", "pkgroot", image,
             f"{IMAGE_MIB}M", log=log)
    finally:
        if not os.path.ismount(root / "proc"):   # never remove through a mount left behind
            shutil.rmtree(root, ignore_errors=True)
    initrd = _initramfs(vm_kit, tmp_path)

    console_log = tmp_path / "console.log"
    console, timed_out = _boot(vm_kit, image, initrd, console_log, timeout=1200)
    image.unlink()
    lines = console.splitlines()
    checks = [ln.split(": ", 1)[1] for ln in lines if ln.startswith(f"PKGVM {nonce}: ")]
    exits = [ln.rsplit(": ", 1)[1] for ln in lines if ln.startswith(f"PKGVM-EXIT {nonce}: ")]
    tail = "\n".join(lines[-80:])
    where = f"(console: {console_log}, host log: {log})"
    assert not timed_out, f"the guest did not finish in time {where}:\n{tail}"
    assert exits == ["0"], f"guest checks failed {where}:\n" + "\n".join(checks) + f"\n{tail}"
    ok = [c for c in checks if c.startswith("ok: ")]
    assert len(ok) == 10 and not [c for c in checks if c.startswith("FAIL")], "\n".join(checks)
    print(f"package test: {len(ok)} guest checks passed in {time.monotonic() - started:.0f} s")
