"""A figure's counts and failures, and what every figure uses to report."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BLOCK = 4096
STD = "org.freedesktop.DBus.Error."


@dataclass
class Figure:
    name: str
    runs: int = 0                       # runs, cases or calls: what the figure counts
    failures: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str = ""

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"  FAILURE [{self.name}]: {what}", flush=True)
        if FINDINGS is not None:
            with FINDINGS.open("a") as f:
                f.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, "
                        f"{self.name} (commit {commit()})\n\n{what}\n\nReproduce: "
                        f"`{REPRO.format(fig=self.name)}`\n")


FINDINGS: Path | None = None
REPRO = ""


def commit() -> str:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or "?"


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)
