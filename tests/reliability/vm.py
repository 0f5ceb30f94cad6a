"""Figure vm: power cuts of the VM tier's kernel data path (tests/vm/poweroff.py)."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tests.reliability.figure import Figure, say


def _never_started(g: Any) -> bool:
    """A boot that failed before the guest ran its command (kernel panic at boot, a module that
    would not load): it tested nothing of ptcopy."""
    return g is not None and f"PTVM-BEGIN {g.nonce}" not in g.console.splitlines()


def fig_vm(fig: Figure, runs: int, seed: int) -> None:
    """``runs`` power cuts whose recovery ran its check; a run whose boot failed before the
    guest's command is counted apart (boot_failures) and replaced, up to 5 extra attempts."""
    from tests.vm import poweroff, vmkit
    try:
        vmkit.prepare()
    except vmkit.VmUnavailable as exc:
        fig.skipped = f"VM tier unavailable: {exc}"
        return
    rng = random.Random(seed)
    variants = list(poweroff.VARIANTS)
    copied = []
    by_variant: Counter[str] = Counter()
    boot_failures: list[str] = []
    i = 0
    while fig.runs < runs and i < runs + 5:
        sc = poweroff.Scenario(variants[i % len(variants)], rng.randrange(1 << 30),
                               round(rng.uniform(0.2, 6.0), 2))
        i += 1
        with tempfile.TemporaryDirectory(prefix="ptcopy-rel-vm-") as tmp:
            run = poweroff.run(sc, Path(tmp), control=i == 1)
            problems = run.problems()
            r = run.result or {}
            if problems and r.get("problems") is None and any(
                    _never_started(g) for g in (run.load, run.recover, run.control)):
                boot_failures.append(f"{sc}: {problems[0][:400]} ({run.results})")
                say(f"vm attempt {i}: BOOT FAILED (not counted): {problems[0][:300]}")
                continue
            fig.runs += 1
            by_variant[sc.variant] += 1
            if isinstance(r.get("chunks_copied"), int):
                copied.append(r["chunks_copied"])
            say(f"vm [{fig.runs}/{runs}] {'ok' if not problems else 'FAILED'}: {run.summary()}")
            if problems:
                fig.fail(f"power cut {sc} (consoles in {run.results}): " + "; ".join(problems))
            else:
                run.cleanup()
    fig.counts.update(runs=fig.runs, failed_runs=len(fig.failures), variants=dict(by_variant),
                      chunks_copied_at_recovery=sum(copied), attempts=i,
                      boot_failures=boot_failures)
