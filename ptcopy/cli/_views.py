"""How ptcopy's objects look: as JSON documents and as rich tables (used through Output)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from rich.table import Table
from rich.text import Text

from ptcopy.cli import _output as fmt
from ptcopy.cli._client import (
    NO_OBJECT,
    GroupInfo,
    Inventory,
    JobInfo,
    OverflowInfo,
    SetInfo,
    VolumeInfo,
    when,
)

STATUS_STYLE = {"normal": "green", "degraded": "yellow", "error": "bold red"}
SPECIAL_FLAGS = {"copying", "to-shadow", "to-master", "abort-requested", "compact",
                 "out-of-space", "spilled", "exported", "imported", "incomplete", "recovered",
                 "suspended", "restore-held"}


T = TypeVar("T")


def chosen(table: Mapping[str, T], paths: list[str], key: Callable[[T], str]) -> list[T]:
    """The objects at paths that still exist, in that order; all of them sorted by key when
    none were named."""
    if paths:
        return [table[p] for p in paths if p in table]
    return sorted(table.values(), key=key)


def _ref(inv: Inventory, path: str) -> str | None:
    return None if path == NO_OBJECT else inv.name_of(path)


# ---- sets -------------------------------------------------------------------------------------

def set_json(s: SetInfo, inv: Inventory) -> dict[str, Any]:
    """Everything iiadm -i showed about a set, as plain JSON."""
    job = inv.jobs.get(s.job)
    return {
        "name": s.name,
        "object": s.path,
        "kind": s.kind,
        "compact": "compact" in s.flags,
        "master": s.master,
        "master_device": s.master_device or None,
        "shadow": s.shadow,
        "shadow_device": s.shadow_device or None,
        "bitmap": s.bitmap or None,
        "overflow": _ref(inv, s.overflow),
        "group": _ref(inv, s.group),
        "status": s.status,
        "flags": list(s.flags),
        "copying": s.copying,
        "suspended": "suspended" in s.flags,
        "direction": s.direction,
        "abort_requested": "abort-requested" in s.flags,
        "offline": s.offline,
        "out_of_space": "out-of-space" in s.flags,
        "spilled": "spilled" in s.flags,
        "exported": "exported" in s.flags,
        "imported": "imported" in s.flags,
        "incomplete": "incomplete" in s.flags,
        "difference_percent": s.difference_percent,
        "copy_percent": s.copy_percent,
        "size": s.size,
        "chunk_size": s.chunk_size,
        "shadow_chunks_total": s.shadow_chunks_total,
        "shadow_chunks_used": s.shadow_chunks_used,
        "copy_delay_ms": s.copy_delay,
        "copy_units": s.copy_units,
        "last_modified": when(s.last_modified),
        "locked_by": s.locked_by or None,
        "job": None if s.job == NO_OBJECT else s.job,
        "job_state": None if job is None else job_state(job),
    }


def job_state(j: JobInfo) -> str:
    if not j.done:
        return "running"
    return "done" if j.success else "failed"


def _local(usec: int) -> str:
    if not usec:
        return "never"
    return datetime.fromtimestamp(usec / 1e6).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _copy_text(s: SetInfo, inv: Inventory) -> str:
    if "suspended" in s.flags:
        return (f"suspended while copying to the {s.direction}, "
                f"{fmt.percent(s.copy_percent)} done (ptcopy resume {s.name} continues it)")
    if s.copying:
        text = f"copying to the {s.direction}, {fmt.percent(s.copy_percent)} done"
        if "abort-requested" in s.flags:
            text += ", abort requested"
        return text
    job = inv.jobs.get(s.job)
    if job is not None:
        return f"idle (last: {job.operation}, {job.message or job_state(job)})"
    return "idle"


def set_panel(s: SetInfo, inv: Inventory) -> Table:
    """One set, as iiadm -i showed it: a two-column table of what matters."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    kind = s.kind + (", compact" if "compact" in s.flags else "")

    def served(volume: str, device: str) -> str:
        return f"{volume}  (use {device})" if device else volume

    t.add_row(Text(f"set {s.name}", style="bold underline"), "")
    t.add_row("kind", kind)
    state = Text(s.status, style=STATUS_STYLE.get(s.status, ""))
    problems = [f"{v} offline" for v in s.offline]
    problems += [f.replace("-", " ") for f in s.flags if f in
                 ("out-of-space", "spilled", "exported", "imported", "incomplete")]
    if problems:
        state.append(" (" + ", ".join(problems) + ")")
    t.add_row("state", state)
    t.add_row("master", served(s.master, s.master_device))
    t.add_row("shadow", served(s.shadow, s.shadow_device))
    t.add_row("bitmap", s.bitmap or "(in memory)")
    t.add_row("overflow", _ref(inv, s.overflow) or "-")
    t.add_row("group", _ref(inv, s.group) or "-")
    t.add_row("copy", _copy_text(s, inv))
    t.add_row("differs", f"{fmt.percent(s.difference_percent)} of the chunks")
    t.add_row("size", f"{fmt.size(s.size)} in chunks of {fmt.size(s.chunk_size)}")
    t.add_row("shadow chunks", f"{s.shadow_chunks_used} used of {s.shadow_chunks_total}")
    throttle = "none" if not s.copy_delay else \
        f"pause {s.copy_delay} ms every {s.copy_units} chunks"
    t.add_row("throttle", throttle)
    t.add_row("modified", _local(s.last_modified))
    if s.locked_by:
        t.add_row("locked by", s.locked_by)
    if s.job != NO_OBJECT:
        t.add_row("job", s.job)
    return t


def sets_table(sets: list[SetInfo], inv: Inventory) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("NAME", "KIND", "STATE", "COPY", "DIFFERS", "MASTER", "SHADOW", "GROUP"):
        t.add_column(col, overflow="fold")
    for s in sets:
        copy = f"to {s.direction} {fmt.percent(s.copy_percent)}" if s.copying else "-"
        if "suspended" in s.flags:
            copy += " suspended"
        kind = s.kind + ("/compact" if "compact" in s.flags else "")
        t.add_row(s.name, kind, Text(s.status, style=STATUS_STYLE.get(s.status, "")), copy,
                  fmt.percent(s.difference_percent), s.master_device or s.master,
                  s.shadow_device or s.shadow, _ref(inv, s.group) or "-")
    return t


# ---- groups ----------------------------------------------------------------------------------

def group_json(g: GroupInfo, inv: Inventory) -> dict[str, Any]:
    return {"name": g.name, "object": g.path, "status": g.status,
            "sets": [inv.name_of(p) for p in g.sets],
            "job": None if g.job == NO_OBJECT else g.job, "hosts": list(g.hosts)}


def groups_table(groups: list[GroupInfo], inv: Inventory) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    spans = any(g.hosts for g in groups)   # the column only where a group spans hosts
    for col in ("GROUP", "STATE", "SETS", *(("ALSO ON",) if spans else ())):
        t.add_column(col, overflow="fold")
    for g in groups:
        members = ", ".join(str(inv.name_of(p)) for p in g.sets) or "(none)"
        t.add_row(g.name, Text(g.status, style=STATUS_STYLE.get(g.status, "")), members,
                  *((", ".join(g.hosts) or "-",) if spans else ()))
    return t


# ---- overflow volumes ------------------------------------------------------------------------

def overflow_json(o: OverflowInfo, inv: Inventory) -> dict[str, Any]:
    return {"volume": o.volume, "object": o.path, "sets": [inv.name_of(p) for p in o.sets],
            "chunks_total": o.chunks_total, "chunks_used": o.chunks_used,
            "chunks_free": max(0, o.chunks_total - o.chunks_used),
            "counters_valid": o.counters_valid}


def overflows_table(ovs: list[OverflowInfo], inv: Inventory) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("OVERFLOW VOLUME", "CHUNKS USED", "FREE", "TOTAL", "SETS"):
        t.add_column(col, overflow="fold")
    for o in ovs:
        used = str(o.chunks_used) + ("" if o.counters_valid else " (counters not valid)")
        t.add_row(o.volume, used, str(max(0, o.chunks_total - o.chunks_used)),
                  str(o.chunks_total), ", ".join(str(inv.name_of(p)) for p in o.sets) or "-")
    return t


def overflow_panel(o: OverflowInfo, inv: Inventory) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    t.add_row(Text(f"overflow volume {o.volume}", style="bold underline"), "")
    t.add_row("sets", ", ".join(str(inv.name_of(p)) for p in o.sets) or "(none attached)")
    t.add_row("chunks", f"{o.chunks_used} used, {max(0, o.chunks_total - o.chunks_used)} free, "
                        f"{o.chunks_total} in all")
    if not o.counters_valid:
        t.add_row("warning", Text("the counters are not valid after an unclean stop, until "
                                  "every attached set has been reopened", style="yellow"))
    return t


# ---- volumes and jobs ------------------------------------------------------------------------

def volume_json(v: VolumeInfo, inv: Inventory) -> dict[str, Any]:
    return {"path": v.volume, "object": v.path, "size": v.size, "type": v.type,
            "fs_type": v.fs_type or None, "mounted": v.mounted, "holders": list(v.holders),
            "used_by": _ref(inv, v.used_by), "available": v.available,
            "unsuitable": v.unsuitable or None}


def volumes_table(vols: list[VolumeInfo], inv: Inventory) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("VOLUME", "TYPE", "SIZE", "USED BY", "NOTE"):
        t.add_column(col, overflow="fold")
    for v in vols:
        t.add_row(v.volume, v.type, fmt.size(v.size), _ref(inv, v.used_by) or "-",
                  v.unsuitable or ("available" if v.available else "-"))
    return t


def job_json(j: JobInfo) -> dict[str, Any]:
    return {"job": j.path, "operation": j.operation, "objects": list(j.objects),
            "state": job_state(j), "success": j.success if j.done else None,
            "message": j.message, "progress": j.progress, "bytes": j.bytes, "rate": j.rate,
            "started": when(j.start_time), "expected_end": when(j.expected_end_time),
            "started_by_uid": j.started_by_uid}
