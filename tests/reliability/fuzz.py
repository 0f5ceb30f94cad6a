"""Figure fuzz: random calls to every method of the contract and of the standard interfaces."""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast import introspection as intr

from ptcopy.engine import (
    Kind,
    bitmap_size,
)
from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client, plain, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import (
    CONTRACT,
    ERR,
    IFACE,
    IGROUP,
    IOVERFLOW,
    ISET,
    MANAGER,
    MIB,
    OM,
    PROPS,
    ROOT,
)
from tests.reliability.figure import STD, Figure, say

CONTRACT_NODE = intr.Node.parse(CONTRACT.read_text())
METHODS = [(i.name, m) for i in CONTRACT_NODE.interfaces for m in i.methods]
PROPS_OF = {i.name: [p.name for p in i.properties] for i in CONTRACT_NODE.interfaces}
STANDARD = [(PROPS, "Get", "ss"), (PROPS, "GetAll", "s"), (PROPS, "Set", "ssv"),
            ("org.freedesktop.DBus.Introspectable", "Introspect", ""),
            ("org.freedesktop.DBus.Peer", "Ping", ""), ("org.freedesktop.DBus.Peer",
                                                       "GetMachineId", ""),
            (OM, "GetManagedObjects", "")]
NOT_THERE = {STD + x for x in ("UnknownObject", "UnknownMethod", "UnknownInterface",
                               "UnknownProperty", "PropertyReadOnly", "InvalidArgs")}
OPTION_KEYS = ["chunk_size", "overflow", "group", "copy_delay", "copy_units",
               "bitmap_in_memory", "loop", "confirm"]
# Answers of the D-Bus library (dbus-fast) and the bus to standard interfaces, not refusals of
# ptcopyd's own methods: counted and listed apart (RELIABILITY.md), not failures.
LIBRARY_ANSWERS = {
    ("org.freedesktop.DBus.Peer", "GetMachineId", STD + "AccessDenied"):
        "dbus-fast answers it by asking the bus, which the system bus policy denies",
    (PROPS, "Get", STD + "NotSupported"): "dbus-fast: an empty interface name",
    (PROPS, "GetAll", STD + "NotSupported"): "dbus-fast: an empty interface name",
    (PROPS, "Set", STD + "NotSupported"): "dbus-fast: an empty interface name",
}
MAX_DELAY = 200     # longer throttles make copies outlive the fuzzing (not what is tested)


class Fuzzer:
    def __init__(self, fig: Figure, d: Ptcopyd, c: Client, rng: random.Random,
                 base: Path) -> None:
        self.fig, self.d, self.c, self.rng, self.base = fig, d, c, rng, base
        self.files: list[str] = []
        self.objects: list[str] = [ROOT]
        self.replies: Counter[str] = Counter()
        self.crashes = 0
        self.serial = 0
        self.quirks: Counter[str] = Counter()
        self.live: dict[str, dict[str, dict[str, Any]]] = {}

    # -- values --

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return "".join(self.rng.choice("abcXYZ019-_. é/") for _ in range(self.rng.randint(
                0, 20)))
        if r < 0.6:
            return ""
        if r < 0.7:
            return self.rng.choice(["n" * 65, "n" * 4097, "é" * 3000, "x" * 100_000])
        if r < 0.8:
            return "".join(chr(self.rng.choice([self.rng.randint(1, 0xD7FF),
                                                self.rng.randint(0xE000, 0x10FFFF)]))
                           for _ in range(self.rng.randint(1, 12)))
        return self.rng.choice(["dependent", "independent", "shadow", "master", "..", "/",
                                "%s%n", "\t\n"])

    def path(self) -> str:
        r = self.rng.random()
        if r < 0.6 and self.files:
            return self.rng.choice(self.files)
        if r < 0.7:
            return str(self.base / "outside.img")      # outside --file-volumes: refused
        if r < 0.8:
            return str(self.d.vol_dir / "missing.img")
        # random text only as a suffix of a path under the temporary directory
        return str(self.d.vol_dir) + "/" + self.text().replace("..", "_").replace("\0", "")

    def objpath(self) -> str:
        r = self.rng.random()
        if r < 0.7:
            return self.rng.choice(self.objects)
        if r < 0.9:
            return self.rng.choice([ROOT + "/sets/nope", ROOT + "/jobs/999999", "/",
                                    ROOT + "/groups/x_y", ROOT + "/overflow/0",
                                    "/org/freedesktop/DBus"])
        return "/" + "/".join("".join(self.rng.choice("abz_09") for _ in range(
            self.rng.randint(1, 8))) for _ in range(self.rng.randint(1, 4)))

    def u32(self) -> int:
        return self.rng.choice([0, 1, 4095, 4096, 32768, 65536, 1 << 20, 60000, 60001, 2**31,
                                2**32 - 1, self.rng.randrange(2**32)])

    def double(self) -> float:
        return self.rng.choice([-1.0, 0.0, -0.0, 1e-9, 0.05, 0.3, 1e308, -1e308, math.inf,
                                -math.inf, math.nan, self.rng.uniform(-10, 10)])

    def variant(self) -> Variant:
        r = self.rng.randrange(10)
        return [lambda: Variant("u", self.u32()), lambda: Variant("b", self.rng.random() < .5),
                lambda: Variant("s", self.text()), lambda: Variant("o", self.objpath()),
                lambda: Variant("t", self.rng.randrange(2**64)),
                lambda: Variant("i", self.rng.randrange(-2**31, 2**31)),
                lambda: Variant("d", self.double()),
                lambda: Variant("as", [self.text()]), lambda: Variant("ay", b"\x00\xff"),
                lambda: Variant("v", Variant("u", 4096))][r]()

    def options(self) -> dict[str, Variant]:
        out: dict[str, Variant] = {}
        for _ in range(self.rng.choice([0, 0, 1, 2, 3])):
            key = self.rng.choice(OPTION_KEYS) if self.rng.random() < 0.8 else self.text()
            typed = {"chunk_size": lambda: u(self.rng.choice([4096, 32768, 3000, 0, 2**31])),
                     "overflow": lambda: Variant("o", self.objpath()),
                     "group": lambda: Variant("o", self.objpath()),
                     "copy_delay": lambda: u(self.rng.randint(0, MAX_DELAY)),
                     "copy_units": lambda: u(self.rng.choice([0, 1, 8, 2**32 - 1])),
                     "bitmap_in_memory": lambda: Variant("b", self.rng.random() < 0.5),
                     "loop": lambda: Variant("b", self.rng.random() < 0.5),
                     "confirm": lambda: Variant("b", self.rng.random() < 0.5)}
            v = typed[key]() if key in typed and self.rng.random() < 0.7 else self.variant()
            if key == "copy_delay" and v.signature == "u" and v.value > MAX_DELAY:
                v = u(v.value % (MAX_DELAY + 1))
            out[key] = v
        return out

    def value(self, name: str, sig: str) -> Any:
        if sig == "a{sv}":
            return self.options()
        if sig == "ao":
            return [self.objpath() for _ in range(self.rng.randint(0, 3))]
        if sig == "o":
            return self.objpath()
        if sig == "d":
            return self.double()
        if sig == "u":
            return self.rng.randint(0, MAX_DELAY) if name == "delay" else self.u32()
        if sig == "s":
            if name in ("master", "shadow", "bitmap", "path"):
                return self.path()
            if name == "kind" and self.rng.random() < 0.8:
                return self.rng.choice(["dependent", "independent"])
            if name == "direction" and self.rng.random() < 0.8:
                return self.rng.choice(["shadow", "master"])
            if name == "name" and self.rng.random() < 0.6:
                self.serial += 1
                return f"fz{self.serial}"
            return self.text()
        if sig == "v":
            return self.variant()
        if sig == "b":
            return self.rng.random() < 0.5
        if sig == "as":
            return [self.text() for _ in range(self.rng.randint(0, 3))]
        raise AssertionError(f"no generator for {sig}")

    # -- world --

    async def setup(self) -> None:
        need = bitmap_size(MIB, MIB, 0, Kind.INDEPENDENT)
        for i in range(6):
            self.files += [self.d.volume(MIB, f"m{i}.img"), self.d.volume(MIB, f"s{i}.img"),
                           self.d.volume(max(need, bitmap_size(MIB, MIB, 0, Kind.DEPENDENT)),
                                         f"b{i}.img")]
        self.files += [self.d.volume(256 * 1024, "compact.img"), self.d.volume(MIB, "ov0.img"),
                       self.d.volume(16 * 1024, "tiny.img"), self.d.volume(0, "empty.img")]
        with (self.base / "outside.img").open("wb") as f:
            f.truncate(MIB)
        await self.replenish()

    async def replenish(self) -> None:
        objs = await self.c.objects()
        kinds = [ifs[ISET]["Kind"] for ifs in objs.values() if ISET in ifs]
        used = {ifs[ISET][k] for ifs in objs.values() if ISET in ifs
                for k in ("Master", "Shadow", "Bitmap")}
        used |= {ifs[IOVERFLOW]["Path"] for ifs in objs.values() if IOVERFLOW in ifs}
        triples = [tuple(self.files[i:i + 3]) for i in range(0, 18, 3)]
        for kind in ("dependent", "independent"):
            if kinds.count(kind) >= 1:
                continue
            for t in triples:
                if not set(t) & used:
                    self.serial += 1
                    await self.c.call(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                                      [f"fz-{kind[:3]}-{self.serial}", kind, *t, {}])
                    used |= set(t)
                    break
        if not any(IGROUP in ifs for ifs in objs.values()):
            self.serial += 1
            await self.c.call(ROOT, MANAGER, "CreateGroup", "saoa{sv}",
                              [f"fz-g-{self.serial}", [], {}])
        if not any(IOVERFLOW in ifs for ifs in objs.values()) and self.files[19] not in used:
            await self.c.call(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [self.files[19], {}])
        objs = await self.c.objects()
        self.live = objs
        for p in objs:
            if p not in self.objects:
                self.objects.append(p)

    # -- calls --

    def target(self, iface: str) -> str:
        if iface == MANAGER:
            return ROOT if self.rng.random() < 0.9 else self.objpath()
        mine = [p for p, ifs in self.live.items() if iface in ifs]
        if mine and self.rng.random() < 0.85:
            return self.rng.choice(mine)
        return self.objpath()

    async def one(self) -> None:
        r = self.rng.random()
        if r < 0.75:
            iface, m = self.rng.choice(METHODS)
            path = self.target(iface)
            sig = m.in_signature
            body = [self.value(a.name or "", a.signature) for a in m.in_args]
            member = m.name
            if self.rng.random() < 0.08:    # the wrong signature for this method
                sig, body = self.rng.choice([("", []), ("s", [self.text()]), ("u", [7]),
                                             ("d", [self.double()]), ("v", [self.variant()]),
                                             ("ss", ["a", "b"]), ("a{sv}", [{}])])
        else:
            iface, member, sig = self.rng.choice(STANDARD)
            path = self.rng.choice([*self.objects, ROOT + "/nope"])
            ifaces = [i for i in self.live.get(path, {}) if i.startswith(IFACE)] or [ISET]
            pi = self.rng.choice(ifaces) if self.rng.random() < 0.8 else self.text()
            props = PROPS_OF.get(pi, ["Name"])
            pn = self.rng.choice(props) if self.rng.random() < 0.8 else self.text()
            body = {"ss": [pi, pn], "s": [pi], "ssv": [pi, pn, self.variant()], "": []}[sig]
        await self.call(path, iface, member, sig, body)

    async def call(self, path: str, iface: str, member: str, sig: str, body: list[Any]) -> None:
        self.fig.runs += 1
        contract = any(i == iface and m.name == member and m.in_signature == sig
                       for i, m in METHODS)
        exists = (path == ROOT and iface == MANAGER) or iface in self.live.get(path, {})
        shown = repr(plain(body))
        what = f"{iface}.{member}({sig}) on {path} {shown[:300]}"
        msg = Message(destination="org.ptcopy.Imaging1", path=path, interface=iface,
                      member=member, signature=sig, body=body)
        try:
            reply = await asyncio.wait_for(self.c.bus.call(msg), 15)
        except TimeoutError:
            if member == "Wait" and exists:     # Wait(long) on a running job may block
                self.replies["blocked-wait"] += 1
                return
            self.fig.fail(f"no reply in 15 s: {what}")
            return
        except Exception as e:
            self.replies[f"not sent: {type(e).__name__}"] += 1
            self.fig.runs -= 1
            return
        assert reply is not None
        if not self.d.running:
            self.crashes += 1
            self.fig.fail(f"ptcopyd DIED after {what}:\n{self.d.log_tail(40)}")
            self.d.start()
            return
        if reply.message_type is not MessageType.ERROR:
            self.replies["success"] += 1
            return
        name = reply.error_name or ""
        text = str(reply.body[0]) if reply.body else ""
        if name.startswith(ERR):
            self.replies["named " + name[len(ERR):]] += 1
            if not text.strip():
                self.fig.fail(f"{name} without a message: {what}")
            return
        if name == STD + "InvalidArgs":
            self.replies["InvalidArgs"] += 1
            return
        if name in NOT_THERE and not (contract and exists):
            self.replies["standard " + name[len(STD):]] += 1
            return
        if name in NOT_THERE and contract:
            # the object lost the interface since the last look (the fuzzer disabled or
            # deleted it): the call named no method of a live object after all
            self.live = await self.c.objects()
            if iface not in self.live.get(path, {}):
                self.replies["standard " + name[len(STD):] + " (object gone)"] += 1
                return
        quirk = LIBRARY_ANSWERS.get((iface, member, name))
        if quirk is not None:
            self.replies[f"library {name[len(STD):]} to {member}"] += 1
            self.quirks[f"{iface}.{member} -> {name}: {quirk}"] += 1
            return
        self.replies["OTHER " + name] += 1
        self.fig.fail(f"unexpected error {name}: {text!r}: {what}")


async def fig_fuzz(fig: Figure, bus: PrivateBus, calls: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ptcopy-rel-fuzz-") as tmp:
        d = Ptcopyd(bus, Path(tmp) / "d", [])
        c: Client | None = None
        try:
            d.start()
            c = await Client.connect(bus.address)
            f = Fuzzer(fig, d, c, random.Random(seed), Path(tmp))
            await f.setup()
            t0 = time.monotonic()
            for i in range(calls):
                if i % 25 == 0:
                    await f.replenish()
                await f.one()
                if (i + 1) % 1000 == 0:
                    say(f"fuzz {i + 1}/{calls} calls, {time.monotonic() - t0:.0f} s, "
                        f"{len(fig.failures)} failure(s)")
            await c.ping()
            n = await c.refresh()
            if n:
                fig.fail(f"Manager.Refresh() found {n} change(s) after the fuzzing")
            with (Path(tmp) / "outside.img").open("rb") as fh:
                if fh.read() != bytes(MIB):
                    fig.fail("a file outside --file-volumes was written")
            fig.counts.update(calls=fig.runs, crashes=f.crashes, replies=dict(f.replies),
                              library_answers=dict(f.quirks), unexpected=len(fig.failures))
            c.disconnect()
            c = None
            await asyncio.sleep(1.0)    # let the daemon see the client go before SIGTERM
            d.stop_and_check()
            if "Traceback" in d.log_text():
                fig.fail(f"ptcopyd logged a traceback during the fuzzing:\n{d.log_tail(60)}")
        except Exception as e:
            fig.fail(f"fuzzing broke off: {type(e).__name__}: {e}\n{d.log_tail(30)}")
        finally:
            if c is not None:
                c.disconnect()
            d.cleanup()
