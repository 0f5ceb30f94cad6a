"""The host's volumes as the Volume objects show them: every block device discovery knows
(unless only the volumes in use are exported), and every file or device a set or overflow
volume uses, with who uses it and why it could not be a volume of a new set."""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from dataclasses import dataclass

from ptcopy.daemon.candidates import CandidateView, Key, stat_key
from ptcopy.daemon.dbus.paths import NONE, overflow_path, set_path
from ptcopy.daemon.discovery import Discovery, VolumeView, volume_id
from ptcopy.daemon.service import Service
from ptcopy.daemon.state import SetRow

KEY_CACHE = 1024   # volume paths whose identity is remembered (least recently used go first)

# who uses a volume: (object path, role, name, the path given, set id or '')
Use = tuple[str, str, str, str, str]


@dataclass
class KeyedViews:
    """Views by object id, each volume's key, and the keys looked at."""

    views: dict[str, VolumeView]
    keys: dict[str, Key]
    considered: set[Key]


@functools.lru_cache(maxsize=16384)
def _vid(path: str) -> str:
    """volume_id, remembered: escaping every path of every set on each change was most of the
    time CreateSet took with 1,000 sets."""
    return volume_id(path)


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
    discovery tables (worker threads replace them whole).

    Who uses which volume is kept as an index updated set by set (a set whose row did not
    change costs one identity check), and the keys whose users changed are remembered until
    ``take_dirty``: a new set then rebuilds the views of its own volumes only, not those of
    every set (with 1,000 sets that was most of CreateSet's time)."""

    def __init__(self, service: Service, discovery: Discovery, *, all_volumes: bool) -> None:
        self.service = service
        self.discovery = discovery
        self.all_volumes = all_volumes   # else only the volumes in use
        self._keys = BoundedCache(KEY_CACHE)
        self._by_set: dict[str, tuple[SetRow, list[tuple[Key, Use]]]] = {}
        self._index: dict[Key, list[Use]] = {}
        self._dirty: set[Key] = set()

    def forget(self) -> None:
        """Drop the remembered identities of volume paths (Refresh starts from scratch)."""
        self._keys.clear()
        self._by_set.clear()
        self._index.clear()

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

    def _uses_of(self, sid: str, row: SetRow) -> list[tuple[Key, Use]]:
        out = []
        for role in ("master", "shadow", "bitmap"):
            p = str(getattr(row, role))
            key = self._key(p) if p else None
            if key is not None:
                out.append((key, (set_path(sid), role, f"set {row.name}", p, sid)))
        return out

    def _update_index(self) -> None:
        """Bring the per-set index up to date with every set of the Service."""
        # copies: worker threads add and remove sets while the loop reads
        sets = dict(self.service.sets)
        # every volume path of every set stays remembered (else each call stats them all)
        self._keys.limit = max(KEY_CACHE, 4 * len(sets) + 2 * len(self.service.overflows))
        for sid in [s for s in self._by_set if s not in sets]:
            self._update_set(sid)
        for sid in sets:
            self._update_set(sid)

    def _update_set(self, sid: str) -> None:
        """Bring the index up to date with one set (added, changed or gone)."""
        ms = self.service.sets.get(sid)
        had = self._by_set.get(sid)
        row = ms.row if ms is not None else None
        if had is not None and had[0] is row:
            return
        index, dirty = self._index, self._dirty
        if had is not None:
            for key, use in self._by_set.pop(sid)[1]:
                index[key].remove(use)
                if not index[key]:
                    del index[key]
                dirty.add(key)
        if row is None:
            return
        self._keys.limit = max(self._keys.limit, 4 * len(self.service.sets))
        uses = self._uses_of(sid, row)
        self._by_set[sid] = (row, uses)
        for key, use in uses:
            index.setdefault(key, []).append(use)
            dirty.add(key)

    def take_dirty(self, sid: str | None = None) -> set[Key]:
        """The volumes (by key) whose users changed since the last call; the index is
        brought up to date first, for set ``sid`` only (the one an event names) or for all."""
        if sid is None:
            self._update_index()
        else:
            self._update_set(sid)
        dirty, self._dirty = self._dirty, set()
        return dirty

    def users(self) -> dict[Key, list[Use]]:
        """Who uses which volume: key -> [(object path, role, name, given path, set id)]."""
        return {k: list(v) for k, v in self._all_uses().items()}

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

    def _all_uses(self, update: bool = True) -> dict[Key, list[Use]]:
        """The index (brought up to date unless not ``update``) with the overflow volumes'
        uses added; read only (it may be the index)."""
        if update:
            self._update_index()
        out = self._index
        for oid, mo in list(self.service.overflows.items()):
            key = self._key(mo.row.path)
            if key is not None:
                if out is self._index:
                    out = dict(out)
                out[key] = [*out.get(key, []),
                            (overflow_path(oid), "overflow", "overflow volumes", mo.row.path, "")]
        return out

    def views(self, everything: bool = False) -> dict[str, VolumeView]:
        """Every volume of the host (with --volumes used, unless everything: only those in
        use) and every file in use, by object id."""
        return self.keyed_views(everything).views

    def keyed_views(self, everything: bool = False,
                    keys: set[Key] | None = None) -> KeyedViews:
        """As ``views``, with each view's key; with ``keys``, only the views of those volumes
        (and of the partitions of those disks), and ``considered`` says which keys were
        looked at (a volume among them without a view now has none)."""
        disc = self.discovery
        users = self._all_uses(update=keys is None)   # else up to date for those keys
        served: dict[str, str] | None = None
        out = KeyedViews({}, {}, set())
        views, seen = out.views, out.considered
        devices = disc.devices.values()
        if keys is not None and all(k[0] == 2 for k in keys):
            devices = {}.values()   # only files: no device's view depends on them
        for d in devices:
            key = (1, d.devnum, 0)
            parent = disc.devices.get(d.parent)
            pkey = (1, parent.devnum, 0) if parent is not None else None
            if keys is not None and key not in keys and pkey not in keys:
                continue
            seen.add(key)
            why: list[str] = []
            used_by = NONE
            for obj, role, name, _p, sid in users.get(key, []):
                used_by = obj if used_by == NONE else used_by
                gone = self.missing(sid, role)
                why.append(f"is the {role} of {name}" + (" (removed)" if gone else ""))
            if parent is not None and pkey is not None:
                for _obj, role, name, _p, _sid in users.get(pkey, []):
                    why.append(f"its disk {parent.node} is the {role} of {name}")
            if used_by == NONE and not (self.all_volumes or everything):
                continue
            if served is None:
                served = self._served_by()
            if d.node in served:
                why.append(f"is {served[d.node]} (ptcopy serves it)")
            else:
                why.extend(disc.problems(d))
            vid = _vid(d.node)
            out.keys[vid] = key
            views[vid] = VolumeView(
                d.path, d.size, d.type, d.fstype, bool(disc.host.mounts.get(d.devnum)),
                d.holders, used_by, not why, "; ".join(why), d.devnum)
        wanted = users.keys() if keys is None else [k for k in keys if k in users]
        for key in wanted:
            if key in seen:
                continue
            seen.add(key)
            uses = users[key]
            obj, role, name, p, sid = uses[0]
            why = [f"is the {r} of {n}" + (" (removed)" if self.missing(s_, r) else "")
                   for _o, r, n, _p, s_ in uses]
            if key[0] == 2:
                try:
                    size = os.stat(p).st_size
                except OSError:
                    size = 0
                vid = _vid(p)
                out.keys[vid] = key
                views[vid] = VolumeView(p, size, "file", used_by=obj,
                                        unsuitable="; ".join(why))
                continue
            # a block device in use that udev does not show (removed)
            sys_dev = f"/sys/dev/block/{os.major(key[1])}:{os.minor(key[1])}"
            node = f"/dev/{os.path.basename(os.path.realpath(sys_dev))}" \
                if os.path.exists(sys_dev) else p
            vid = _vid(node)
            out.keys[vid] = key
            views[vid] = VolumeView(
                p, 0, "loop" if node.startswith("/dev/loop") else "disk", used_by=obj,
                unsuitable="; ".join(why) + "; the device is not present", devnum=key[1])
        if keys is not None:
            seen.update(keys)
        return out

    def candidate_views(self) -> list[CandidateView]:
        """On the loop: what Candidates' worker thread needs of the volumes (the dicts behind
        the views belong to the loop)."""
        return [CandidateView(vid, v.size, v.available, v.devnum)
                for vid, v in self.views(everything=True).items()]
