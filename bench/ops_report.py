"""The table of bench/run_ops.py: one line per row of issue 13's table, medians side by side
with their baselines, the ratio, the target and whether it is met; then every sample."""

from __future__ import annotations

from dataclasses import dataclass, field

from common import HEADER, Line, MiB, fmt_s, md_table, median
from datapath_rig import ROW
from ops_external import FUSE_ROWS, DaemonFigures, FuseFigures
from ops_group import Stalls
from ops_sets import Samples


@dataclass
class Results:
    sets: dict[int, Samples] = field(default_factory=dict)   # rows 1-4
    daemon: DaemonFigures | None = None                       # row 5
    fuse: FuseFigures | None = None                           # row 6
    group: Stalls | None = None                               # row 7
    group_sets: int = 16
    size: int = 0


def _x(r: float) -> str:
    """A ratio: whole numbers from 10 on, two significant digits below."""
    return f"{r:.0f}x" if r >= 10 else f"{r:.2g}x"


def _faster(r: float) -> str:
    """``r`` = their time / ours."""
    return f"{_x(r)} faster" if r >= 1 else f"{_x(1 / r)} slower"


def _ms(xs: list[float]) -> str:
    return ", ".join(f"{x * 1000:.1f}" for x in xs) + " ms"


def _mibs(xs: list[float]) -> str:
    return ", ".join(f"{x / MiB:.0f}" for x in xs) + " MiB/s"


def lines(res: Results) -> tuple[list[Line], list[str]]:
    """The table's lines and the notes under it (every sample)."""
    out: list[Line] = []
    notes: list[str] = []
    gib = f"{res.size / MiB:.0f} MiB" if res.size < 1024 * MiB else f"{res.size / MiB / 1024:g} GiB"
    s = res.sets.get(1)
    if s and s.ours:
        a, b = median(s.ours), median(s.theirs)
        r = b / a
        out.append(Line("1", f"update of a {gib} independent set, 1 % of its chunks changed, "
                        "Update → Completed", fmt_s(a), "rsync --inplace --no-whole-file -I "
                        "+ fdatasync", fmt_s(b), _faster(r), "≥ 100x faster", r >= 100))
        notes.append(f"row 1 samples: update {_ms(s.ours)}; rsync {_ms(s.theirs)} "
                     f"({s.notes[0] if s.notes else ''})")
    s = res.sets.get(2)
    if s and s.ours:
        a = median(s.ours)
        out.append(Line("2", "update with nothing to copy, Update → Completed", fmt_s(a), "—",
                        "—", "—", "≤ 10 ms", a <= 0.010))
        notes.append(f"row 2 samples: {_ms(s.ours)}")
    s = res.sets.get(3)
    if s and s.ours:
        a, b = median(s.ours), median(s.theirs)
        r = a / b
        out.append(Line("3", "copy-on-write first writes through a dependent set's served "
                        "master (fio 1 MiB seq, O_DIRECT, depth 4)", f"{a / MiB:.0f} MiB/s",
                        "rewrites of the same blocks", f"{b / MiB:.0f} MiB/s", f"{_x(r)}",
                        "≥ 0.5x", r >= 0.5))
        notes.append(f"row 3 samples: first writes {_mibs(s.ours)}; rewrites {_mibs(s.theirs)}")
        if s.bound:
            c = median(s.bound)
            out.append(Line("3", "ceiling: reading the old data alone (the master, cold, fio "
                            "1 MiB, O_DIRECT, depth 4), which every first write must save",
                            f"{c / MiB:.0f} MiB/s", "rewrites of the same blocks",
                            f"{b / MiB:.0f} MiB/s", f"{_x(c / b)}", "—", None))
            notes.append(f"row 3 ceiling samples: reads {_mibs(s.bound)}; first writes reach "
                         f"{a / c:.2f}x of it")
    s = res.sets.get(4)
    if s and s.ours:
        a, b = median(s.ours), median(s.theirs)
        r = b / a
        out.append(Line("4", f"full copy of {gib}, CreateSet → Completed", fmt_s(a),
                        "dd bs=1M iflag=direct oflag=direct, same volumes", fmt_s(b),
                        f"{_x(r)} dd's speed", "≥ 1.5x", r >= 1.5))
        notes.append(f"row 4 samples: CreateSet → Completed {_ms(s.ours)}; dd {_ms(s.theirs)}")
        if s.bound:
            c = median(s.bound)
            out.append(Line("4", "ceiling: reading the master and writing the shadow at once "
                            "(cold, fio 1 MiB, O_DIRECT, depth 8 each), a copy's I/O alone",
                            fmt_s(c),
                            "dd bs=1M iflag=direct oflag=direct", fmt_s(b),
                            f"{_x(b / c)} dd's speed", "—", None))
            notes.append(f"row 4 ceiling samples: fio read + write {_ms(s.bound)}")
    d = res.daemon
    if d and d.gmo_busctl_ms:
        g, f = median(d.gmo_busctl_ms), median(d.gmo_ms)
        out.append(Line("5", f"GetManagedObjects with {d.sets} sets, busctl (process start "
                        "included)", f"{g:.1f} ms", "the same call from dbus-fast",
                        f"{f:.1f} ms", "—", "< 50 ms", g < 50))
        if d.gmo_busctl_quiet_ms:
            q = median(d.gmo_busctl_quiet_ms)
            out.append(Line("5", "the same reply fetched by busctl --quiet (sent and parsed, "
                            "not printed)", f"{q:.1f} ms", "busctl printing it", f"{g:.1f} ms",
                            f"printing {(g - q) / g:.0%} of the call", "—", None))
        rss = median(d.rss_mib)
        out.append(Line("5", f"daemon RSS with {d.sets} sets", f"{rss:.0f} MiB", "—", "—", "—",
                        "< 150 MiB", rss < 150))
        c = median(d.create_ms)
        out.append(Line("5", "CreateSet latency (median, one after another)", f"{c:.1f} ms",
                        "—", "—", "—", "≤ 5 ms", c <= 5))
        notes.append(f"row 5 samples (`--data-path none --volumes used`): busctl "
                     f"{', '.join(f'{x:.1f}' for x in d.gmo_busctl_ms)} ms (--quiet "
                     f"{', '.join(f'{x:.1f}' for x in d.gmo_busctl_quiet_ms)} ms); dbus-fast "
                     f"{', '.join(f'{x:.1f}' for x in d.gmo_ms)} ms; RSS "
                     f"{', '.join(f'{x:.0f}' for x in d.rss_mib)} MiB; CreateSet "
                     f"{', '.join(f'{x:.1f}' for x in d.create_ms)} ms per set")
    fu = res.fuse
    if fu:
        for key in FUSE_ROWS:
            if key not in fu.ours:
                continue
            a, b = median(fu.ours[key]), median(fu.theirs[key])
            r = a / b
            out.append(Line("6", f"userspace path, {ROW[key].title} (fio depth 16)",
                            f"{a / MiB:.0f} MiB/s", "qemu-storage-daemon FUSE export + loop",
                            f"{b / MiB:.0f} MiB/s", f"{_x(r)}", "≥ 1.5x", r >= 1.5))
            notes.append(f"row 6 samples, {ROW[key].title}: ptcopy {_mibs(fu.ours[key])}; "
                         f"qsd {_mibs(fu.theirs[key])}")
        notes += [f"row 6: {n}" for n in fu.notes]
    g7 = res.group
    if g7 and g7.max_s:
        a, b = median(g7.max_s), median(g7.base_max_s)
        out.append(Line("7", f"group point in time, {res.group_sets} sets, a writer on each "
                        "served master: longest write from the group Update call to its reply "
                        f"(median of the rounds' max; p99 {median(g7.p99_s) * 1000:.1f} ms)",
                        fmt_s(a), "the same writers in the second before the call (max; p99 "
                        f"{median(g7.base_p99_s) * 1000:.1f} ms)", fmt_s(b), _x(a / b),
                        "< 10 ms", a < 0.010))
        gap = median(g7.gap_s)
        out.append(Line("7", "the same: longest time no writer on any master completed a "
                        "write (a freeze of every master)", fmt_s(gap), "—", "—", "—",
                        "< 10 ms", gap < 0.010))
        notes.append(f"row 7 samples: longest write until the reply {_ms(g7.max_s)} (p99 "
                     f"{_ms(g7.p99_s)}; {', '.join(map(str, g7.writes))} writes); no writer "
                     f"progressing {_ms(g7.gap_s)}; the second before: longest "
                     f"{_ms(g7.base_max_s)} (p99 {_ms(g7.base_p99_s)}); longest write during "
                     f"the copy after the reply {_ms(g7.copy_max_s)}; group Update → reply "
                     f"{_ms(g7.reply_s)}, → Completed {_ms(g7.call_s)}")
    if g7 and g7.engine_s:
        e = median(g7.engine_s)
        out.append(Line("7", f"the engine alone: pt_group_copy holds {res.group_sets} masters' "
                        "gates (its frozen time; in process, no writers)", fmt_s(e), "—", "—",
                        "—", "< 10 ms", e < 0.010))
        notes.append(f"row 7, engine alone: {_ms(g7.engine_s)}")
    return out, notes


def render(res: Results, head: list[str]) -> str:
    found, notes = lines(res)
    text = [*head, "", md_table(HEADER, [ln.cells() for ln in found]), ""]
    missed = [ln for ln in found if ln.met is False]
    text.append(f"Targets missed: {len(missed)} of {sum(ln.met is not None for ln in found)}."
                if missed else "Every target met.")
    text += [""] + [f"- {n}" for n in notes]
    return "\n".join(text) + "\n"
