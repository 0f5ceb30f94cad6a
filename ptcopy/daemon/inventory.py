"""The host's volumes as the Volume objects show them: every block device discovery knows
(unless only the volumes in use are exported), and every file or device a set or overflow
volume uses, with who uses it and why it could not be a volume of a new set."""

from __future__ import annotations

import os
from collections import OrderedDict

from ptcopy.daemon.candidates import CandidateView, Key, stat_key
from ptcopy.daemon.dbus.paths import NONE, overflow_path, set_path
from ptcopy.daemon.discovery import Discovery, VolumeView, volume_id
from ptcopy.daemon.service import Service

KEY_CACHE = 1024   # volume paths whose identity is remembered (least recently used go first)

# who uses a volume: (object path, role, name, the path given, set id or '')
Use = tuple[str, str, str, str, str]


class BoundedCache(OrderedDict[str, Key | None]):
    """A least-recently-used map of at most ``limit`` entries."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def get_fresh(self, key: str) -> tuple[bool, Key | None]:
        """(found, value), and the entry becomes the most recently used."""
        if key not in self:
            return False, None
        self.move_to_end(key)
        return True, self[key]

    def put(self, key: str, value: Key | None) -> None:
        """Remember key, dropping the least recently used entries beyond the limit."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class Inventory:
    """Views of the host's volumes; read and built on the event loop, which owns the
    discovery tables (worker threads replace them whole)."""

    def __init__(self, service: Service, discovery: Discovery, *, all_volumes: bool) -> None:
        self.service = service
        self.discovery = discovery
        self.all_volumes = all_volumes   # else only the volumes in use
        self._keys = BoundedCache(KEY_CACHE)

    def forget(self) -> None:
        """Drop the remembered identities of volume paths (Refresh starts from scratch)."""
        self._keys.clear()

    def _key(self, path: str) -> Key | None:
        """What a set's volume path is: ('block', rdev) or ('file', dev, ino); cached (only
        for the paths sets and overflow volumes use, and at most KEY_CACHE of them)."""
        hit, key = self._keys.get_fresh(path)
        if hit:
            return key
        key = stat_key(path)
        if key is not None:
            self._keys.put(path, key)
        return key

    def users(self) -> dict[Key, list[Use]]:
        """Who uses which volume: key -> [(object path, role, name, given path, set id)]."""
        out: dict[Key, list[Use]] = {}
        # copies: worker threads add and remove sets while the loop reads
        for sid, ms in list(self.service.sets.items()):
            for role in ("master", "shadow", "bitmap"):
                p = str(getattr(ms.row, role))
                key = self._key(p) if p else None
                if key is not None:
                    out.setdefault(key, []).append(
                        (set_path(sid), role, f"set {ms.row.name}", p, sid))
        for oid, mo in list(self.service.overflows.items()):
            key = self._key(mo.row.path)
            if key is not None:
                out.setdefault(key, []).append(
                    (overflow_path(oid), "overflow", "overflow volumes", mo.row.path, ""))
        return out

    def _served_by(self) -> dict[str, str]:
        """Device node -> what ptcopy serves there."""
        out: dict[str, str] = {}
        for ms in list(self.service.sets.values()):
            sv = ms.served
            if sv is not None:
                if sv.master_device:
                    out[str(sv.master_device)] = f"the master device of set {ms.row.name}"
                if sv.shadow_device:
                    out[str(sv.shadow_device)] = f"the shadow device of set {ms.row.name}"
        return out

    def missing(self, sid: str, role: str) -> bool:
        """Whether set sid waits for its volume in role (False once the set is gone: it may
        be disabled by a worker thread while the loop builds a view)."""
        ms = self.service.sets.get(sid) if sid else None
        return ms is not None and role in ms.missing

    def views(self, everything: bool = False) -> dict[str, VolumeView]:
        """Every volume of the host (with --volumes used, unless everything: only those in
        use) and every file in use, by object id."""
        disc = self.discovery
        users = self.users()
        served = self._served_by()
        views: dict[str, VolumeView] = {}
        seen: set[Key] = set()
        for d in disc.devices.values():
            key = (1, d.devnum, 0)
            seen.add(key)
            why: list[str] = []
            used_by = NONE
            for obj, role, name, _p, sid in users.get(key, []):
                used_by = obj if used_by == NONE else used_by
                gone = self.missing(sid, role)
                why.append(f"is the {role} of {name}" + (" (removed)" if gone else ""))
            parent = disc.devices.get(d.parent)
            if parent is not None:
                for _obj, role, name, _p, _sid in users.get((1, parent.devnum, 0), []):
                    why.append(f"its disk {parent.node} is the {role} of {name}")
            if used_by == NONE and not (self.all_volumes or everything):
                continue
            if d.node in served:
                why.append(f"is {served[d.node]} (ptcopy serves it)")
            else:
                why.extend(disc.problems(d))
            views[volume_id(d.node)] = VolumeView(
                d.path, d.size, d.type, d.fstype, bool(disc.host.mounts.get(d.devnum)),
                d.holders, used_by, not why, "; ".join(why), d.devnum)
        for key, uses in users.items():
            if key in seen:
                continue
            obj, role, name, p, sid = uses[0]
            why = [f"is the {r} of {n}" + (" (removed)" if self.missing(s_, r) else "")
                   for _o, r, n, _p, s_ in uses]
            if key[0] == 2:
                try:
                    size = os.stat(p).st_size
                except OSError:
                    size = 0
                views[volume_id(p)] = VolumeView(p, size, "file", used_by=obj,
                                                 unsuitable="; ".join(why))
                continue
            # a block device in use that udev does not show (removed)
            sys_dev = f"/sys/dev/block/{os.major(key[1])}:{os.minor(key[1])}"
            node = f"/dev/{os.path.basename(os.path.realpath(sys_dev))}" \
                if os.path.exists(sys_dev) else p
            views[volume_id(node)] = VolumeView(
                p, 0, "loop" if node.startswith("/dev/loop") else "disk", used_by=obj,
                unsuitable="; ".join(why) + "; the device is not present", devnum=key[1])
        return views

    def candidate_views(self) -> list[CandidateView]:
        """On the loop: what Candidates' worker thread needs of the volumes (the dicts behind
        the views belong to the loop)."""
        return [CandidateView(vid, v.size, v.available, v.devnum)
                for vid, v in self.views(everything=True).items()]
