"""Host side of the kernel data path's power-off scenario (tests/vm/guest/poweroff_scenario.py,
whose docstring says what each phase and variant does): make the disk images, boot the load
phase and cut the power (qemu killed), boot again to recover and check, read the verdict back.
Shared by tests/vm/test_kernel_poweroff.py and tests/stress/torture_kernel.py.

``run(Scenario(variant, seed, kill_delay), workdir, control=False) -> Run``
    The disk images go to ``workdir``; the guest's state.json/result.json and both boots'
    console logs go to a directory under build/vm-results/ (the guest writes to the repository
    share, never to the host's /tmp). ``control=True`` then writes a few chunks of the
    independent master's image behind era's back and boots ``recover --control``, which must
    name exactly those chunks as lost. ``Run.problems()`` lists what went wrong (empty: the
    run passed); ``Run.cleanup()`` removes the images and the results directory.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.vm import vmkit
from tests.vm.guest import poweroff_scenario as scenario

# run in the guest from the repository (its working directory) as a module of the tests package
SCENARIO = "tests.vm.guest.poweroff_scenario"
VARIANTS = scenario.VARIANTS
CHUNK = 64 * 1024
CONTROL_CHUNKS = 3
LOAD_TIMEOUT = 240.0      # TCG, and other boots may share the CPUs
RECOVER_TIMEOUT = 420.0


@dataclass(frozen=True)
class Scenario:
    variant: str
    seed: int
    kill_delay: float      # seconds from the marker to the power cut

    def __str__(self) -> str:
        return f"{self.variant}-seed{self.seed}-cut{self.kill_delay:g}s"


@dataclass
class Run:
    scenario: Scenario
    disks: list[Path]
    results: Path
    load: vmkit.GuestResult | None = None
    recover: vmkit.GuestResult | None = None
    result: dict[str, Any] | None = None
    host_equal: bool | None = None          # raw images of pi's master and shadow
    control: vmkit.GuestResult | None = None
    control_chunks: list[int] = field(default_factory=list)
    control_result: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def writes(self) -> dict[str, int]:
        """The load phase's last write counters before the cut (PTCOPY-WRITES line)."""
        if self.load is None:
            return {}
        lines = [ln for ln in self.load.output.splitlines() if ln.startswith("PTCOPY-WRITES ")]
        if not lines:
            return {}
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", lines[-1]) if k != "t"}

    def problems(self) -> list[str]:
        """What went wrong, most fundamental first; empty when the run passed."""
        if self.load is None:
            return ["the load phase did not run"]
        if not self.load.killed:
            return [f"the load phase ended without the power cut: {self.load.describe()}"]
        out = []
        if self.writes.get("errors", 0):
            out.append(f"writes to the master devices failed before the cut: {self.writes}")
        if self.recover is None:
            return [*out, "the recovery boot did not run"]
        if self.result is None:
            return [*out, f"no result.json from the recovery boot: {self.recover.describe()}"]
        out += self.result["problems"]
        if self.recover.returncode is None:
            out.append(f"the recovery boot did not finish: {self.recover.describe(tail=20)}")
        if "ind_equal" not in self.result:   # the recovery broke off before its update
            return out
        if self.result.get("chunks_copied", 0) <= 0:
            out.append("the update after the crash copied nothing: the run tested nothing")
        if self.host_equal is False:
            out.append("on the host, the raw images of pi's master and shadow differ after the "
                       "recovery")
        if self.control_chunks:
            cr = self.control_result
            got = None if cr is None else cr.get("lost_chunks")
            if got != self.control_chunks:
                why = cr if cr is not None else self.control and self.control.describe()
                out.append(f"control: chunks {self.control_chunks} written behind era's back "
                           f"should be reported lost, the check reported {got} ({why})")
        return out

    def summary(self) -> str:
        r = self.result or {}
        parts = [f"{self.scenario}: {self.seconds:.1f} s"]
        for name, g in (("load", self.load), ("recover", self.recover),
                        ("control", self.control)):
            if g is not None:
                parts.append(f"{name} {g.seconds:.1f} s")
        w = self.writes
        parts.append(f"writes before the cut {w.get('im', 0)}+{w.get('dm', 0)}+{w.get('is', 0)}"
                     f" (cycles {w.get('cycles', 0)})")
        parts.append(f"copied {r.get('chunks_copied', '?')} chunks"
                     f"{' after an interrupted copy' if r.get('ind_incomplete_at_open') else ''}")
        return ", ".join(parts)

    def cleanup(self) -> None:
        for d in self.disks:
            d.unlink(missing_ok=True)
        shutil.rmtree(self.results, ignore_errors=True)


def make_disks(workdir: Path, seed: int) -> list[Path]:
    """vda.img .. vdf.img: the masters random, the rest zero (sparse)."""
    rng = random.Random(seed)
    disks = []
    for i, size in enumerate(scenario.disk_sizes()):
        path = workdir / f"vd{'abcdef'[i]}.img"
        with path.open("wb") as f:
            if i in (0, 3):
                f.write(rng.randbytes(size))
            else:
                f.truncate(size)
        disks.append(path)
    return disks


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _command(*args: str) -> str:
    return shlex.join([".venv/bin/python", "-m", SCENARIO, *args])


def run(sc: Scenario, workdir: Path, *, control: bool = False) -> Run:
    """Both boots (and the control boot) of one scenario; see the module docstring."""
    t0 = time.monotonic()
    results = vmkit.RESULTS / f"poweroff-{time.strftime('%Y%m%d-%H%M%S')}-{sc}-" \
                              f"{secrets.token_hex(3)}"
    results.mkdir(parents=True)
    r = Run(sc, make_disks(workdir, sc.seed), results)
    try:
        r.load = vmkit.run_guest(
            _command("load", str(results), "--variant", sc.variant, "--seed", str(sc.seed)),
            disks=r.disks, kill_on=f"^{scenario.MARKER}$", kill_delay=sc.kill_delay,
            timeout=LOAD_TIMEOUT, log_path=results / "load.log")
        if not r.load.killed:
            return r
        r.recover = vmkit.run_guest(_command("recover", str(results)), disks=r.disks,
                                    timeout=RECOVER_TIMEOUT, log_path=results / "recover.log")
        r.result = _read_json(results / "result.json")
        if r.recover.returncode is not None and r.result and "ind_equal" in r.result:
            r.host_equal = _sha256(r.disks[0]) == _sha256(r.disks[1])
        if control and r.result is not None and r.result.get("ind_equal") and r.host_equal:
            rng = random.Random(sc.seed + 1)
            r.control_chunks = sorted(rng.sample(range(scenario.MASTER_SIZE // CHUNK),
                                                 CONTROL_CHUNKS))
            with r.disks[0].open("r+b") as f:
                for c in r.control_chunks:
                    f.seek(c * CHUNK)
                    f.write(rng.randbytes(CHUNK))
            r.control = vmkit.run_guest(_command("recover", str(results), "--control"),
                                        disks=r.disks, timeout=RECOVER_TIMEOUT,
                                        log_path=results / "control.log")
            r.control_result = _read_json(results / "result-control.json")
        return r
    finally:
        r.seconds = time.monotonic() - t0
