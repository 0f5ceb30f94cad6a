"""The VM test tier: run a command inside Debian's stock kernel, which has the device-mapper targets
the test machines' own kernel lacks, under qemu (software emulation: TCG), and report back.

The guest boots a small busybox initramfs (vm_initramfs.py, guest-init.sh) that loads the
device-mapper modules and chroots into the host's root, shared read-only over virtio-9p, so the
host's own Python, dmsetup and this repository's .venv run there. The repository is shared
read-write at its own path (results, pytest output). The kernel comes from the cache
scripts/setup.sh fills (tests/vm/prepare-kernel.sh); nothing is downloaded here.

API:

``prepare() -> Kit``
    Finds and checks the kernel cache and the tools, and builds the initramfs (once per process,
    in a temporary directory removed at exit). Raises ``VmUnavailable``, saying to run
    scripts/setup.sh, when something is missing.

``run_guest(command: str, *, disks: Sequence[Path] = (), timeout: float = 300,
mem_mib: int = 1024, smp: int = 2, kill_on: str | None = None, kill_delay: float = 0.0,
log_path: Path | None = None) -> GuestResult``
    Boots the guest and runs ``/bin/sh -c command`` in the chroot, working directory the
    repository, environment PATH (standard), HOME=/tmp, DM_DISABLE_UDEV=1, PTCOPY_IN_VM=1. There
    is no udev in the guest: devtmpfs gives /dev/mapper/control and /dev/dm-N for each dm device;
    /dev/mapper/<name> exists only when the creator makes the node (dmsetup/libdevmapper do with
    DM_DISABLE_UDEV=1, and remove it again; raw ioctls do not), and there is no /dev/block/M:m.
    Mounted there: proc, sys, devtmpfs on /dev, tmpfs on /tmp, /run and /dev/shm. ``disks`` are
    raw image files attached as virtio disks /dev/vda, /dev/vdb, ... in order; what a boot writes
    to them stays for the next boot. ``kill_on`` is a regular expression:
    when a console line matches, qemu is killed with SIGKILL ``kill_delay`` seconds later (a power
    cut); ``timeout`` kills it too. Serial console lines go to ``log_path`` as they arrive.

``GuestResult``
    ``returncode: int | None`` (the command's exit status; None when qemu was killed or the guest
    printed no exit marker), ``console: str`` (the serial console, without \\r), ``killed: bool``
    (by ``kill_on``), ``timed_out: bool``, ``seconds: float`` (wall time of qemu), ``nonce: str``
    (this boot's, in every marker /init prints: PTVM-EXIT <nonce>: <status>, ...); properties
    ``output`` (what the command printed), ``dm_targets`` (what ``dmsetup targets`` listed at
    boot), ``error`` (why the guest gave up before running the command); ``describe()`` for
    assertion messages.

``run_guest_pytest(paths: Sequence[str], *, args: Sequence[str] = (), disks: Sequence[Path] = (),
timeout: float = 600, mem_mib: int = 1024, smp: int = 2, log_path: Path | None = None)
-> GuestPytestResult``
    Runs ``.venv/bin/python -m pytest -q --color=no -p no:cacheprovider --junitxml=... *args
    *paths`` in the guest and reads the JUnit XML back: ``tests: dict[str, CaseOutcome]``
    ("<classname>::<name>" -> outcome "passed", "failed", "error" or "skipped" and message),
    ``failures``, ``ok``, ``describe()``, ``guest`` (the GuestResult). The XML is written under
    build/vm-results/; the directory is removed when every test passed and kept otherwise.

Also: ``parse_junit(path: Path) -> dict[str, CaseOutcome]``, ``pick_accel() -> str``, ``REPO``.

Environment: PTCOPY_VM_CACHE (kernel cache, default /var/cache/ptcopy-vm), PTCOPY_VM_ACCEL (kvm or
tcg; by default kvm only on a CPU with vmx/svm and without kvm_pvm, under which a stock kernel hangs
at boot).
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import secrets
import selectors
import shlex
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.vm import vm_initramfs

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path("/var/cache/ptcopy-vm")
BUSYBOX = Path("/bin/busybox")
RESULTS = REPO / "build" / "vm-results"
SETUP_HINT = "run scripts/setup.sh as root (or tests/vm/prepare-kernel.sh for the kernel alone)"
# quiet/loglevel=3: only kernel errors interleave with the command's output. panic=-1 with qemu's
# -no-reboot turns a kernel panic (also /init dying) into qemu exiting.
# no_timer_check: under software emulation on a busy host the kernel's IO-APIC timer check can
# miss its ticks and panic at boot ("IO-APIC + timer doesn't work"); the check proves nothing here.
KERNEL_ARGS = "console=ttyS0 quiet loglevel=3 panic=-1 no_timer_check"


class VmUnavailable(RuntimeError):
    """The VM tier cannot run here: its kernel cache or a tool is missing."""


@dataclass(frozen=True)
class Kit:
    """What every boot shares."""

    kernel_version: str
    kernel: Path  # vmlinux (booted through PVH) or, failing that, the bzImage
    initramfs: Path  # the shared part; each boot appends its own small archive
    modules: tuple[str, ...]  # in load order
    qemu: str
    accel: str
    workdir: Path


def _cache_dir() -> Path:
    return Path(os.environ.get("PTCOPY_VM_CACHE") or DEFAULT_CACHE)


def _is_static(path: Path) -> bool:
    """No PT_INTERP program header in this ELF64 file: it needs no dynamic loader."""
    with path.open("rb") as f:
        head = f.read(64)
        phoff = int.from_bytes(head[0x20:0x28], "little")
        phentsize = int.from_bytes(head[0x36:0x38], "little")
        phnum = int.from_bytes(head[0x38:0x3A], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(int.from_bytes(table[i:i + 4], "little") != 3
               for i in range(0, len(table), phentsize))


def pick_accel() -> str:
    """kvm only where it can boot a stock kernel: a CPU with VT-x/AMD-V and no kvm_pvm (software
    nested virtualisation, under which the kernel hangs at "Probing EDD")."""
    forced = os.environ.get("PTCOPY_VM_ACCEL")
    if forced:
        return forced
    flags = re.search(r"\b(vmx|svm)\b", Path("/proc/cpuinfo").read_text())
    if (flags and os.access("/dev/kvm", os.R_OK | os.W_OK)
            and not Path("/sys/module/kvm_pvm").exists()):
        return "kvm"
    return "tcg"


@functools.cache
def prepare() -> Kit:
    """The kit every boot of this process uses (see the module docstring)."""
    cache = _cache_dir()
    current = cache / "current"
    if not (current / ".complete").exists():
        raise VmUnavailable(f"no VM test kernel in {current} (PTCOPY_VM_CACHE): {SETUP_HINT}")
    kver = current.resolve().name
    kernel = current / "vmlinux"
    if not kernel.exists():
        kernel = current / "boot" / f"vmlinuz-{kver}"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise VmUnavailable(
            f"qemu-system-x86_64 not found (Debian's qemu-system-x86): {SETUP_HINT}")
    if shutil.which("modinfo") is None:
        raise VmUnavailable(f"modinfo not found (Debian's kmod): {SETUP_HINT}")
    if not BUSYBOX.exists() or not _is_static(BUSYBOX):
        raise VmUnavailable(f"{BUSYBOX} is missing or not static (Debian's busybox-static): "
                            f"{SETUP_HINT}")
    try:
        modules = vm_initramfs.module_load_order(current / "lib" / "modules" / kver / "kernel")
    except FileNotFoundError as exc:
        raise VmUnavailable(f"{exc}: {SETUP_HINT}") from exc

    workdir = Path(tempfile.mkdtemp(prefix="ptcopy-vm-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    initramfs = workdir / "base.cpio"
    initramfs.write_bytes(vm_initramfs.base_archive(BUSYBOX, modules))
    return Kit(kver, kernel, initramfs, tuple(m.name for m in modules), qemu, pick_accel(),
               workdir)


@dataclass(frozen=True)
class GuestResult:
    returncode: int | None
    console: str
    killed: bool
    timed_out: bool
    seconds: float
    nonce: str

    def _marked(self, marker: str) -> list[str]:
        prefix = f"{marker} {self.nonce}: "
        return [ln[len(prefix):] for ln in self.console.splitlines() if ln.startswith(prefix)]

    @property
    def output(self) -> str:
        """The console between the start of the command and its exit marker (or the end)."""
        lines = self.console.splitlines()
        begin = f"PTVM-BEGIN {self.nonce}"
        if begin not in lines:
            return ""
        out = lines[lines.index(begin) + 1:]
        end = [i for i, ln in enumerate(out) if ln.startswith(f"PTVM-EXIT {self.nonce}: ")]
        return "".join(f"{ln}\n" for ln in out[:end[0] if end else None])

    @property
    def dm_targets(self) -> frozenset[str]:
        found = self._marked("PTVM-TARGETS")
        return frozenset(found[0].split()) if found else frozenset()

    @property
    def error(self) -> str | None:
        found = self._marked("PTVM-ERROR")
        return found[0] if found else None

    def describe(self, tail: int = 60) -> str:
        if self.killed:
            state = "killed"
        elif self.timed_out:
            state = "timed out"
        elif self.returncode is not None:
            state = f"exit status {self.returncode}"
        elif self.error is not None:
            state = f"gave up before the command ({self.error})"
        else:
            state = "stopped without an exit status"
        last = "\n".join(self.console.splitlines()[-tail:])
        return f"guest {state} after {self.seconds:.1f} s; last console lines:\n{last}"


def _qemu_args(kit: Kit, initrd: Path, disks: Sequence[Path], mem_mib: int, smp: int,
               ) -> list[str]:
    def opt(path: Path) -> str:
        return str(path).replace(",", ",,")  # qemu's escape for a comma inside an option value

    args = [
        kit.qemu, "-accel", kit.accel, "-cpu", "host" if kit.accel == "kvm" else "max",
        "-smp", str(smp), "-m", str(mem_mib),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-kernel", str(kit.kernel), "-initrd", str(initrd), "-append", KERNEL_ARGS,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={opt(REPO)},mount_tag=repo,security_model=none,multidevs=remap",
    ]
    for i, disk in enumerate(disks):
        # cache=unsafe ignores the guest's flushes: qemu is killed but the host lives on, so all
        # that qemu wrote reaches the file anyway, and host fsyncs would only cost time.
        args += ["-drive", f"file={opt(disk)},format=raw,if=none,id=disk{i},cache=unsafe",
                 "-device", f"virtio-blk-pci,drive=disk{i}"]
    return args


def _watch(proc: subprocess.Popen[bytes], deadline: float, kill_on: re.Pattern[str] | None,
           kill_delay: float, log: IO[str] | None) -> tuple[list[str], bool, bool]:
    """Collect qemu's console until it exits; kill it ``kill_delay`` seconds after a line matches
    ``kill_on`` or at ``deadline``. Returns (lines, killed, timed_out)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    pending = b""
    kill_at: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                proc.kill()
                return lines, True, False
            if now >= deadline:
                proc.kill()
                return lines, False, True
            if not sel.select(min(deadline, deadline if kill_at is None else kill_at) - now):
                continue
            chunk = os.read(fd, 65536)
            *complete, pending = (pending + chunk).split(b"\n")
            if not chunk:  # qemu exited
                complete.append(pending)
            for raw in complete:
                line = raw.decode(errors="replace").replace("\r", "")
                lines.append(line)
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                if kill_on is not None and kill_at is None and kill_on.search(line):
                    kill_at = time.monotonic() + kill_delay
            if not chunk:
                return lines, False, False


def run_guest(command: str, *, disks: Sequence[Path] = (), timeout: float = 300,
              mem_mib: int = 1024, smp: int = 2, kill_on: str | None = None,
              kill_delay: float = 0.0, log_path: Path | None = None) -> GuestResult:
    """Boot the guest, run ``command`` there, report back (see the module docstring)."""
    kit = prepare()
    for disk in disks:
        if not Path(disk).is_file():
            raise FileNotFoundError(f"disk image {disk} does not exist")
    nonce = secrets.token_hex(8)
    initrd = kit.workdir / f"boot-{nonce}.cpio"
    shutil.copyfile(kit.initramfs, initrd)
    with initrd.open("ab") as f:
        f.write(vm_initramfs.run_archive(
            {"command": command, "nonce": nonce, "repo": str(REPO)}))

    pattern = re.compile(kill_on) if kill_on is not None else None
    log = log_path.open("w") if log_path is not None else None
    start = time.monotonic()
    try:
        # qemu's own errors (a disk it cannot open, ...) land in the console too
        proc = subprocess.Popen(_qemu_args(kit, initrd, disks, mem_mib, smp),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            lines, killed, timed_out = _watch(proc, start + timeout, pattern, kill_delay, log)
            proc.wait(timeout=30)  # after EOF qemu is exiting; after kill() it is gone
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    finally:
        if log is not None:
            log.close()
        initrd.unlink()
    seconds = time.monotonic() - start

    returncode = None
    prefix = f"PTVM-EXIT {nonce}: "
    exits = [ln[len(prefix):] for ln in lines if ln.startswith(prefix)]
    if exits and not killed and not timed_out:
        returncode = int(exits[-1])
    return GuestResult(returncode, "\n".join(lines), killed, timed_out, seconds, nonce)


@dataclass(frozen=True)
class CaseOutcome:
    name: str
    outcome: str  # "passed", "failed", "error" or "skipped"
    message: str


def parse_junit(path: Path) -> dict[str, CaseOutcome]:
    """Per-test outcomes from pytest's JUnit XML."""
    tests: dict[str, CaseOutcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        found = {child.tag: child for child in case}
        outcome = next((tag for tag in ("failure", "error", "skipped") if tag in found), "passed")
        message = "\n".join(
            f"{child.get('message', '')}\n{child.text or ''}".strip()
            for child in case if child.tag in ("failure", "error", "skipped"))
        tests[name] = CaseOutcome(name, "failed" if outcome == "failure" else outcome, message)
    return tests


@dataclass(frozen=True)
class GuestPytestResult:
    guest: GuestResult
    junit: Path
    tests: dict[str, CaseOutcome]

    @property
    def failures(self) -> list[CaseOutcome]:
        return [t for t in self.tests.values() if t.outcome in ("failed", "error")]

    @property
    def ok(self) -> bool:
        """pytest exited 0, reported at least one test and none failed."""
        return self.guest.returncode == 0 and bool(self.tests) and not self.failures

    def describe(self) -> str:
        if not self.tests:
            return f"no test results in {self.junit}; {self.guest.describe()}"
        counts: dict[str, int] = {}
        for t in self.tests.values():
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        parts = [f"guest pytest exit status {self.guest.returncode}: "
                 + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))]
        parts += [f"--- {t.name} {t.outcome}:\n{t.message}" for t in self.failures]
        parts.append(self.guest.describe(tail=30))
        return "\n".join(parts)


def run_guest_pytest(paths: Sequence[str], *, args: Sequence[str] = (),
                     disks: Sequence[Path] = (), timeout: float = 600, mem_mib: int = 1024,
                     smp: int = 2, log_path: Path | None = None) -> GuestPytestResult:
    """Run pytest on ``paths`` in the guest; per-test results (see the module docstring)."""
    results = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}"
    results.mkdir(parents=True)
    junit = results / "junit.xml"
    command = shlex.join([str(REPO / ".venv" / "bin" / "python"), "-m", "pytest", "-q",
                          "--color=no", "-p", "no:cacheprovider", f"--junitxml={junit}",
                          *args, *paths])
    guest = run_guest(command, disks=disks, timeout=timeout, mem_mib=mem_mib, smp=smp,
                      log_path=log_path)
    tests = parse_junit(junit) if junit.exists() else {}
    result = GuestPytestResult(guest, junit, tests)
    if result.ok:
        shutil.rmtree(results)
    return result
