"""The reliability figures' quick mode (`python -m tests.reliability --quick`) as part of the
suite: SIGKILL of ptcopyd under write load (with a control run that must be caught), fault
injection on the shadow, bitmap and overflow volumes, fuzzed D-Bus calls and a short load, each
with zero failures. The full mode, run by hand, gives the figures of docs/RELIABILITY.md; the VM
power cuts are left to tests/vm/test_kernel_poweroff.py here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.fixtures import missing
from tests.helpers.names import REPO

FIGURES = ("sigkill", "faults", "fuzz", "load")

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _why_skip() -> str | None:
    return missing(("dbus-daemon", "losetup"),
                   "needs root (ptcopyd serves loop devices over FUSE)")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    why = _why_skip()
    if why is not None:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("reliability") / "quick.json"
    # a fixed seed: a failure in CI is reproduced by the same command
    r = subprocess.run([sys.executable, "-m", "tests.reliability", "--quick", "--seed", "4242",
                        "--only", ",".join(FIGURES), "--json", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=600, check=False)
    if not out.exists():
        pytest.fail(f"python -m tests.reliability --quick wrote no results (exit {r.returncode}):\n"
                    f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}", pytrace=False)
    data: dict[str, object] = json.loads(out.read_text())
    data["_output"] = r.stdout[-6000:] + r.stderr[-2000:]
    data["_returncode"] = r.returncode
    return data


@pytest.mark.parametrize("name", FIGURES)
def test_quick_figure_has_no_failure(quick: dict[str, object], name: str) -> None:
    figures = quick["figures"]
    assert isinstance(figures, dict) and name in figures, quick["_output"]
    fig = figures[name]
    assert not fig["skipped"], fig["skipped"]
    assert fig["runs"] > 0, f"{name} counted nothing:\n{quick['_output']}"
    assert fig["failures"] == [], (f"{name}: {len(fig['failures'])} failure(s):\n"
                                   + "\n".join(fig["failures"][:10]))


def test_quick_counts_mean_something(quick: dict[str, object]) -> None:
    """The counts show the checks ran and could fail: the SIGKILL control run was caught, kills
    landed in copies, the fuzzer reached the daemon's logic, the load ran jobs."""
    figs = quick["figures"]
    assert isinstance(figs, dict)
    kill = figs["sigkill"]["counts"]
    assert kill["control_caught"] is True, kill
    assert kill["writes_acked"] > 0, kill
    fuzz = figs["fuzz"]["counts"]
    assert fuzz["crashes"] == 0, fuzz
    replies = fuzz["replies"]
    assert replies.get("success", 0) >= 10, replies
    assert sum(n for k, n in replies.items() if k.startswith("named ")) >= 10, replies
    load = figs["load"]["counts"]
    assert load["jobs"] > 0 and load["jobs_unfinished"] == 0 and load["errors"] == 0, load
    assert load["rss_max_kib"] > 0, load
    assert quick["_returncode"] == 0, quick["_output"]
