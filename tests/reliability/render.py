"""The table of docs/RELIABILITY.md from one or more --json outputs."""

from __future__ import annotations

import json
from pathlib import Path


def render(paths: list[Path]) -> str:
    """Markdown rows for docs/RELIABILITY.md from one or more --json outputs."""
    rows = ["| Figure | Counted | Failures | Key counts | Run (UTC) | Commit | Seed | Time |",
            "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        data = json.loads(path.read_text())
        for name, f in data["figures"].items():
            c = f["counts"]
            if f["skipped"]:
                key = f"skipped: {f['skipped']}"
            elif name == "sigkill":
                key = (f"{c.get('runs')} runs, {c.get('mismatched_runs')} with a mismatch or "
                       f"lost write; {c.get('writes_acked')} writes acknowledged (the last one "
                       f"to each block checked); "
                       f"{c.get('kills_during_a_copy')} kills during a copy; control caught: "
                       f"{c.get('control_caught')}")
            elif name == "vm":
                key = (f"{c.get('runs')} power cuts checked ({c.get('variants')}), "
                       f"{c.get('failed_runs')} with a lost chunk or other failure; "
                       f"{c.get('chunks_copied_at_recovery')} chunks copied at recovery; "
                       f"{len(c.get('boot_failures', []))} boots that failed before the "
                       f"guest's command, not counted")
            elif name == "faults":
                key = (f"{c.get('cases')} cases (3 set kinds x shadow/bitmap/overflow x EIO/"
                       f"ENOSPC), {c.get('failed_cases')} failed")
            elif name == "fuzz":
                named = sum(n for k, n in c.get("replies", {}).items() if k.startswith("named"))
                key = (f"{c.get('calls')} calls, {c.get('crashes')} crashes, "
                       f"{c.get('replies', {}).get('success', 0)} successes, {named} named "
                       f"refusals, {c.get('replies', {}).get('InvalidArgs', 0)} InvalidArgs, "
                       f"{c.get('unexpected')} other")
            else:
                key = (f"{c.get('clients')} clients, {c.get('sets')} sets, "
                       f"{c.get('seconds')} s: {c.get('errors')} errors, {c.get('jobs')} jobs "
                       f"({c.get('jobs_unfinished')} unfinished); RSS max "
                       f"{c.get('rss_max_kib', 0) / 1024:.1f} MiB, start "
                       f"{c.get('rss_start_kib', 0) / 1024:.1f} MiB, growth "
                       f"{c.get('rss_growth_kib', 0) / 1024:+.1f} MiB")
            rows.append(f"| {name} | {f['runs']} | {len(f['failures'])} | {key} | "
                        f"{data['started']} | {data['commit']} | {data['seed']} | "
                        f"{f['seconds']:.0f} s |")
    return "\n".join(rows)
