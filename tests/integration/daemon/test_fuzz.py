"""hypothesis-driven fuzzing of every method of the contract over D-Bus.

For each method of dbus/org.ptcopy.Imaging1.xml, random values of the right D-Bus types (and
wrong option keys and types, empty and huge strings, nonexistent paths and object paths), called
through dbus-fast with a timeout. Every error must be named org.ptcopy.Imaging1.Error.* with a
message (standard org.freedesktop.DBus.Error.* only where D-Bus itself answers: a signature that
matches no method, an object that is not there); every success must carry the contract's reply
signature; the daemon stays alive and Refresh() finds nothing to change afterwards.

Safety: every path the fuzzer sends lies under this module's temporary directory (random text
is appended to a temporary prefix, never used as a path on its own, and never contains '..'),
so the daemon is never pointed at a real device. Files outside --file-volumes are among the
candidates: they must always be refused (and stay untouched).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast import introspection as intr
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client, Runner, plain, u
from tests.helpers.daemon import Ptcopyd, finish
from tests.helpers.names import (
    CONTRACT,
    ERR,
    IFACE,
    IGROUP,
    IHOST,
    IJOB,
    IOVERFLOW,
    ISCHEDULE,
    ISET,
    IVOLUME,
    MANAGER,
    MIB,
    PROPS,
    ROOT,
)

pytestmark = pytest.mark.root

CALL_TIMEOUT = 10.0
EXAMPLES = int(os.environ.get("PTCOPY_FUZZ_EXAMPLES", "150"))
CONTRACT_NODE = intr.Node.parse(CONTRACT.read_text())
METHODS = [(i.name, m) for i in CONTRACT_NODE.interfaces for m in i.methods]
OPTION_KEYS = ["chunk_size", "overflow", "group", "copy_delay", "copy_units",
               "bitmap_in_memory", "loop", "confirm"]
STD_ERRORS = ("org.freedesktop.DBus.Error.UnknownMethod",
              "org.freedesktop.DBus.Error.UnknownObject", "org.freedesktop.DBus.Error.InvalidArgs")
# A copy throttled by more than this cannot be aborted or stopped promptly (a known bug, see
# /tmp/ptcopy-bugs/daemon.md and test_abort_and_stop_are_prompt_with_a_long_copy_delay): the
# fuzzer keeps delays short so that it stays bounded; every other integer is fuzzed in full.
MAX_DELAY = 200


@dataclass
class World:
    d: Ptcopyd
    c: Client
    aio: Runner
    base: Path
    files: list[str]
    outside: list[str]
    bad_paths: list[str]
    object_paths: list[str]
    names: list[str]
    problems: list[str] = field(default_factory=list)
    serial: int = 0
    calls: int = 0
    successes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


async def build(c: Client, d: Ptcopyd, base: Path, aio: Runner) -> World:
    dep_b = bitmap_size(1 * MIB, 1 * MIB, 0, Kind.DEPENDENT)
    ind_b = bitmap_size(1 * MIB, 1 * MIB, 0, Kind.INDEPENDENT)
    files = []
    for i in range(4):
        files += [d.volume(1 * MIB, f"m{i}.img"), d.volume(1 * MIB, f"s{i}.img"),
                  d.volume(max(dep_b, ind_b), f"b{i}.img")]
    files += [d.volume(256 * 1024, "compact.img"), d.volume(1 * MIB, "ov0.img"),
              d.volume(1 * MIB, "ov1.img"), d.volume(16 * 1024, "tiny.img"),
              d.volume(0, "empty.img")]
    outside_dir = base / "outside"
    outside_dir.mkdir()
    bad = outside_dir / "outside.img"
    with bad.open("wb") as f:
        f.truncate(1 * MIB)
    (d.vol_dir / "escape.img").symlink_to(bad)
    outside = [str(bad), str(d.vol_dir / "escape.img"),
               str(d.vol_dir / ".." / ".." / "outside" / "outside.img")]
    bad_paths = [str(d.vol_dir / "missing.img"), str(d.vol_dir), str(base), "", "relative.img",
                 str(d.vol_dir) + "/", str(d.vol_dir / "m0.img") + "/x",
                 str(base / "nodir" / "x.img"), str(base / ("long" * 1100)), "x" * 70000]

    set_a, _ = await c.create_set("fz-a", "dependent", files[0], files[1], files[2])
    set_b, job_b = await c.create_set("fz-b", "independent", files[3], files[4], files[5])
    if job_b != "/":      # a small initial copy may end before CreateSet returns
        await c.wait_job(job_b)
    group = await c.create_group("fz-g", [set_a])
    (ov,) = await c.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [files[13], {}])
    job_a = await c.update(set_a)
    await c.wait_job(job_a)
    objs = await c.objects()
    object_paths = [
        *sorted(objs), "/", ROOT, ROOT + "/sets/nope", ROOT + "/groups/nope",
        ROOT + "/overflow/nope",
        ROOT + "/jobs/999", ROOT + "/jobs/3", ROOT + "/jobs/4", ROOT + "/jobs/5",
        ROOT + "/volumes/x", ROOT + "/sets", "/org/freedesktop/DBus", set_b + "/sub"]
    assert group in object_paths and ov in object_paths
    return World(d, c, aio, base, files, outside, bad_paths, object_paths,
                 ["fz-a", "fz-b", "fz-g"])


@pytest.fixture(scope="module")
def world(system_bus: PrivateBus, aio: Runner,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("fuzz")
    d = Ptcopyd(system_bus, base / "d", [])
    try:
        d.start()
        c = aio.run(Client.connect(system_bus.address), timeout=15)
        w = aio.run(build(c, d, base, aio))
    except BaseException:
        d.cleanup()
        raise
    yield w
    c.disconnect()
    # let the daemon handle the disconnect (locks the fuzzer took) before SIGTERM: SIGTERM
    # racing that work is a known bug with its own test (test_sigterm_while_an_operation_runs)
    time.sleep(1.0)
    finish([d])


# ---- strategies --------------------------------------------------------------------------------

SAFE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
text = st.text(SAFE_CHARS, max_size=40)
huge = st.sampled_from(["n" * 65, "n" * 4097, "é" * 3000, "x" * 200_000])
u32 = st.one_of(st.sampled_from([0, 1, 2, 3, 4095, 4096, 32768, 65536, 1 << 20, 1 << 21,
                                 60000, 60001, 2**31, 2**32 - 1]),
                st.integers(0, 2**32 - 1))
floats = st.one_of(st.sampled_from([-1.0, 0.0, 1e-9, 0.01, 0.2, -0.0, 1e308, -1e308,
                                    math.inf, -math.inf, math.nan]),
                   st.floats(allow_nan=True, allow_infinity=True))
OBJ_RE = r"\A/([A-Za-z0-9_]{1,12}(/[A-Za-z0-9_]{1,12}){0,5})?\Z"


class Dyn(str):
    """An object path chosen when the call is made (from the objects known by then, which
    include those the fuzzer created): strategies must not depend on state that changes."""

    i: int
    prefix: str

    def __new__(cls, i: int, prefix: str = "/") -> Dyn:
        s = super().__new__(cls, f"/dyn/{i}")
        s.i = i
        s.prefix = prefix
        return s


def resolve(w: World, live: list[str], v: Any) -> Any:
    """Dyn placeholders become objects that exist now (else ones that existed)."""
    if isinstance(v, Dyn):
        pool = ([p for p in live if p.startswith(v.prefix)]
                or [p for p in w.object_paths if p.startswith(v.prefix)] or w.object_paths)
        return pool[v.i % len(pool)]
    if isinstance(v, Variant):
        return Variant(v.signature, resolve(w, live, v.value))
    if isinstance(v, list):
        return [resolve(w, live, x) for x in v]
    if isinstance(v, dict):
        return {k: resolve(w, live, x) for k, x in v.items()}
    return v


async def replenish(w: World) -> list[str]:
    """Keep one dependent and one independent set, a group and an overflow volume around, so
    that calls keep reaching the daemon's logic after the fuzzer disabled or deleted them.
    Returns the object paths that exist now."""
    objs = await w.c.objects()
    kinds = [ifs[ISET]["Kind"] for ifs in objs.values() if ISET in ifs]
    used = {ifs[IVOLUME]["Path"] for ifs in objs.values() if IVOLUME in ifs}
    triples = [tuple(w.files[i:i + 3]) for i in range(0, 12, 3)]
    changed = False
    for kind in ("dependent", "independent"):
        if kind in kinds:
            continue
        for m, s, b in triples:
            if not {m, s, b} & used:
                w.serial += 1
                r = await w.c.call(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                                   [f"fz-{kind[:3]}-{w.serial}", kind, m, s, b, {}])
                changed = True
                if r.message_type is MessageType.METHOD_RETURN:
                    used |= {m, s, b}
                    break
    if not any(IGROUP in ifs for ifs in objs.values()):
        w.serial += 1
        await w.c.call(ROOT, MANAGER, "CreateGroup", "saoa{sv}", [f"fz-g-{w.serial}", [], {}])
        changed = True
    sets = [p for p, ifs in objs.items() if ISET in ifs]
    if sets and not any(ISCHEDULE in ifs for ifs in objs.values()):
        w.serial += 1
        await w.c.call(ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                       [f"fz-s-{w.serial}", "hourly", sets[:1], {}])
        changed = True
    if not any(IHOST in ifs for ifs in objs.values()):
        # a host that cannot be resolved: its probes fail at once, nothing leaves the machine
        w.serial += 1
        await w.c.call(ROOT, MANAGER, "AddHost", "ssa{sv}",
                       [f"fz-h-{w.serial}", "fuzz-host.invalid", {}])
        changed = True
    if not any(IOVERFLOW in ifs for ifs in objs.values()):
        for f in (w.files[13], w.files[14]):
            if f not in used:
                await w.c.call(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [f, {}])
                changed = True
                break
    if changed:
        objs = await w.c.objects()
    for p in objs:
        if p not in w.object_paths:
            w.object_paths.append(p)
    return [ROOT, *objs]


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, by weight (hypothesis starts from small selector values, so the
    first choice is also the one tried first)."""
    scale = 16   # hypothesis likes the ends of a range: make them a small share of it
    total = sum(w for w, _ in choices) * scale

    def pick(k: int) -> st.SearchStrategy[Any]:
        k //= scale
        for weight, strategy in choices:
            if k < weight:
                return strategy
            k -= weight
        raise AssertionError(k)

    return st.integers(0, total - 1).flatmap(pick)


def spread(items: list[str] | tuple[str, ...]) -> st.SearchStrategy[str]:
    """Like sampled_from, spread more evenly (hypothesis favours the first element)."""
    pool = tuple(items)
    return st.integers(0, 1 << 20).map(lambda i: pool[(i * 7919) % len(pool)])


def strategies(w: World) -> dict[str, st.SearchStrategy[Any]]:
    fixed = tuple(w.object_paths)
    objpath = weighted((3, st.integers(0, 10_000).map(Dyn)), (2, st.sampled_from(fixed)),
                       (1, st.from_regex(OBJ_RE)))
    safe_tail = text.filter(lambda s: ".." not in s)
    path = weighted(
        (8, spread(w.files)),
        (1, st.sampled_from(w.outside)),
        (1, st.sampled_from(w.bad_paths)),
        (1, safe_tail.map(lambda s: str(w.base / "rnd") + s)),
        (1, safe_tail.map(lambda s: str(w.d.vol_dir / "m0.img") + s)),
    )
    name = weighted((4, st.integers(0, 1 << 30).map(lambda i: f"fz{i}")),
                    (1, st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")),
                    (1, spread(w.names)), (1, text), (1, huge), (1, st.just("")))
    variant = st.one_of(
        u32.map(lambda v: Variant("u", v)),
        st.integers(0, MAX_DELAY).map(lambda v: Variant("u", v)),
        st.booleans().map(lambda v: Variant("b", v)),
        text.map(lambda v: Variant("s", v)),
        objpath.map(lambda v: Variant("o", v)),
        st.integers(0, 2**64 - 1).map(lambda v: Variant("t", v)),
        st.integers(-(2**31), 2**31 - 1).map(lambda v: Variant("i", v)),
        floats.map(lambda v: Variant("d", v)),
        st.lists(text, max_size=3).map(lambda v: Variant("as", v)),
        st.binary(max_size=16).map(lambda v: Variant("ay", v)),
        st.just(Variant("v", Variant("u", 4096))),
        st.just(Variant("a{sv}", {})),
    )
    typed = {   # the known keys with their own types and plausible values
        "chunk_size": st.sampled_from([4096, 32768, 65536, 1 << 20, 3000, 0]).map(u),
        "overflow": st.integers(0, 10_000).map(lambda i: Variant("o", Dyn(i, ROOT + "/over"))),
        "group": st.integers(0, 10_000).map(lambda i: Variant("o", Dyn(i, ROOT + "/groups/"))),
        "copy_delay": st.integers(0, MAX_DELAY).map(u),
        "copy_units": st.sampled_from([1, 8, 256, 0, 2**32 - 1]).map(u),
        "bitmap_in_memory": st.booleans().map(lambda v: Variant("b", v)),
        "loop": st.booleans().map(lambda v: Variant("b", v)),
        "confirm": st.booleans().map(lambda v: Variant("b", v)),
    }
    valid_options = st.lists(st.sampled_from(sorted(typed)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: typed[k] for k in keys}))
    key = st.one_of(st.sampled_from(OPTION_KEYS), text, huge)
    options = weighted((4, st.just({})), (3, valid_options),
                       (3, st.dictionaries(key, variant, max_size=4))).map(_bound_delays)
    return {
        "objpath": objpath, "path": path, "name": name, "u32": u32, "float": floats,
        "options": options,
        "kind": weighted((4, spread(["dependent", "independent"])), (1, name)),
        "direction": weighted((4, spread(["shadow", "master"])), (1, name)),
        "paths": st.lists(objpath, max_size=4),
        "delay": st.integers(0, MAX_DELAY),
    }


def _bound_delays(opts: dict[str, Variant]) -> dict[str, Variant]:
    v = opts.get("copy_delay")
    if v is not None and v.signature == "u" and v.value > MAX_DELAY:
        opts["copy_delay"] = u(v.value % (MAX_DELAY + 1))
    return opts


def argument(strats: dict[str, st.SearchStrategy[Any]], name: str, sig: str,
             ) -> st.SearchStrategy[Any]:
    if sig == "a{sv}":
        return strats["options"]
    if sig == "ao":
        return strats["paths"]
    if sig == "o":
        return strats["objpath"]
    if sig == "d":
        return strats["float"]
    if sig == "b":
        return st.booleans()
    if sig == "as":
        return st.lists(strats["name"], max_size=3)
    if sig == "u":
        return strats["delay"] if name == "delay" else strats["u32"]
    if sig == "s":
        if name in ("master", "shadow", "bitmap", "path"):
            return strats["path"]
        if name in ("kind", "direction"):
            return strats[name]
        return strats["name"]
    raise AssertionError(f"no strategy for {name} ({sig}): extend test_fuzz.py")


TARGETS = {MANAGER: "Manager", ISET: "sets", IGROUP: "groups", IOVERFLOW: "overflow",
           IJOB: "jobs", ISCHEDULE: "schedules", IHOST: "hosts"}


def target(fixed: tuple[str, ...], iface: str) -> st.SearchStrategy[str]:
    """Mostly an object that has the interface, sometimes any object path."""
    if iface == MANAGER:
        return weighted((9, st.just(ROOT)), (1, st.sampled_from(fixed)))
    prefix = f"{ROOT}/{TARGETS[iface]}/"
    mine = [p for p in fixed if p.startswith(prefix)]
    # mostly an object of this kind that exists now (maybe one the fuzzer created)
    return weighted((6, st.integers(0, 10_000).map(lambda i: Dyn(i, prefix))),
                    (3, st.sampled_from(mine)), (1, st.sampled_from(fixed)))


# ---- one call ----------------------------------------------------------------------------------


def describe(path: str, iface: str, member: str, body: list[Any]) -> str:
    shown = repr(plain(body))
    if len(shown) > 300:
        shown = shown[:300] + "..."
    return f"{iface}.{member} on {path} {shown}"


async def one_call(w: World, path: str, iface: str, member: str, sig: str, body: list[Any],
                   *, out_sig: str | None, contract_call: bool) -> None:
    w.calls += 1
    objs = await w.c.objects()
    exists = (path == ROOT and iface == MANAGER) or iface in objs.get(path, {})
    what = describe(path, iface, member, body)
    msg = Message(destination="org.ptcopy.Imaging1", path=path, interface=iface, member=member,
                  signature=sig, body=body)
    try:
        reply = await asyncio.wait_for(w.c.bus.call(msg), CALL_TIMEOUT)
    except TimeoutError:
        if member == "Wait" and exists and await _job_may_block(w, path, body):
            return
        w.problems.append(f"no reply in {CALL_TIMEOUT}s: {what}")
        return
    assert reply is not None
    if w.d.proc is None or w.d.proc.poll() is not None:
        w.problems.append(f"ptcopyd died after {what}:\n{w.d.log_tail()}")
        pytest.fail("\n".join(w.problems), pytrace=False)
    if reply.message_type is MessageType.ERROR:
        name = reply.error_name or ""
        text = str(reply.body[0]) if reply.body else ""
        w.errors[name] = w.errors.get(name, 0) + 1
        if name.startswith(ERR):
            if not text.strip():
                w.problems.append(f"{name} without a message: {what}")
            elif "internal error" in text:
                w.problems.append(f"{name}: {text!r} (not a message a person can act on): "
                                  f"{what}")
            if not exists:
                w.problems.append(f"{name} from an object without {iface}: {what}")
            if member.startswith("Create"):     # a refusal leaves nothing half-created
                after = await w.c.objects()
                new = sorted(set(after) - set(objs))
                if new:
                    w.problems.append(f"refused ({name}) but created {new}: {what}")
        elif name in STD_ERRORS and (not exists or not contract_call):
            pass
        else:
            w.problems.append(f"unnamed or unexpected error {name}: {text!r}: {what}")
        return
    if contract_call:
        w.successes[member] = w.successes.get(member, 0) + 1
        if reply.signature != out_sig:
            w.problems.append(f"reply signature {reply.signature!r}, contract says "
                              f"{out_sig!r}: {what}")
        if iface == MANAGER and member in ("CreateSet", "CreateOverflow"):
            used = {x for x in body if isinstance(x, str)} & set(w.outside)
            if used:
                w.problems.append(f"a file outside --file-volumes was accepted: {what}")
        if member in ("CreateSet", "CreateGroup") and isinstance(body[0], str):
            w.names.append(body[0])


async def _job_may_block(w: World, path: str, body: list[Any]) -> bool:
    """Wait(timeout) legitimately blocks for a job that has not ended."""
    timeout = body[0] if body else 0.0
    long_wait = math.isnan(timeout) or timeout < 0 or timeout >= CALL_TIMEOUT - 1
    done = await w.c.get(path, IJOB, "Done")
    return long_wait and not done


# ---- the tests ---------------------------------------------------------------------------------


def examples_for(m: intr.Method) -> int:
    """EXAMPLES spread over the methods; creation (where most can go wrong) gets three shares."""
    shares = sum(3 if x.name.startswith("Create") else 1 for _, x in METHODS)
    return max(3, round(EXAMPLES * (3 if m.name.startswith("Create") else 1) / shares))


@pytest.mark.parametrize("method", METHODS, ids=[f"{i.rsplit('.', 1)[1]}.{m.name}"
                                                 for i, m in METHODS])
def test_fuzz_method(world: World, method: tuple[str, intr.Method]) -> None:
    """Random arguments for one method of the contract (every method gets its share of the
    EXAMPLES, so none is left out by chance)."""
    w = world
    iface, m = method
    strats = strategies(w)
    fixed = tuple(w.object_paths)
    n0 = len(w.problems)

    @st.composite
    def calls(draw: st.DrawFn) -> tuple[str, list[Any]]:
        path = draw(target(fixed, iface))
        body = [draw(argument(strats, a.name or "", a.signature)) for a in m.in_args]
        return path, body

    @settings(max_examples=examples_for(m), deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(calls())
    def run(call: tuple[str, list[Any]]) -> None:
        live = w.aio.run(replenish(w), timeout=60)
        path, body = resolve(w, live, call[0]), resolve(w, live, call[1])
        w.aio.run(one_call(w, path, iface, m.name, m.in_signature, body,
                           out_sig=m.out_signature, contract_call=True), timeout=60)
        w.aio.run(w.c.ping(), timeout=15)

    run()
    problems = w.problems[n0:]
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(dict.fromkeys(problems))


SIGNATURES = {"": [], "s": ["x"], "u": [7], "i": [-1], "b": [True], "o": [ROOT],
              "ss": ["a", "b"], "as": [["a"]], "a{sv}": [{}], "sa{sv}a{sv}": ["x", {}, {}],
              "v": [Variant("s", "x")], "d": [1.5], "ao": [[ROOT]], "uuu": [1, 2, 3]}


def test_fuzz_wrong_signatures_and_standard_interfaces(world: World) -> None:
    """Signatures that match no method, and junk for the standard interfaces: standard errors
    from D-Bus, never a crash."""
    w = world
    n0 = len(w.problems)

    @settings(max_examples=60, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(METHODS), st.sampled_from(sorted(SIGNATURES)),
           st.sampled_from(tuple(w.object_paths)), text,
           st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,30}\Z"))
    def run(method: tuple[str, intr.Method], sig: str, path: str, a: str, b: str) -> None:
        iface, m = method
        if sig != m.in_signature:
            w.aio.run(one_call(w, path, iface, m.name, sig, list(SIGNATURES[sig]),
                               out_sig=None, contract_call=False), timeout=60)
        w.aio.run(one_call(w, path, PROPS, "Get", "ss", [a or iface, b], out_sig=None,
                           contract_call=False), timeout=60)
        w.aio.run(one_call(w, path, PROPS, "Set", "ssv", [iface, b or "Name", Variant("s", a)],
                           out_sig=None, contract_call=False), timeout=60)
        w.aio.run(one_call(w, path, iface, b, "", [], out_sig=None,
                           contract_call=False), timeout=60)
        w.aio.run(w.c.ping(), timeout=15)

    run()
    problems = [p for p in w.problems[n0:]
                # Properties.Set of a read-only property answers a standard error
                if "org.freedesktop.DBus.Error." not in p.split(":")[0]]
    assert not problems, "\n".join(dict.fromkeys(problems))


async def test_files_outside_the_volume_dirs_are_refused(world: World) -> None:
    w = world
    free = [f for f in w.files if os.path.basename(f) in ("m3.img", "s3.img", "b3.img")]
    for bad in w.outside:
        for i in range(3):
            args = list(free)
            args[i] = bad
            name, text = await w.c.fails(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                                         ["outside", "dependent", *args, {}])
            if name == ERR + "InUse":   # the fuzzer may have used the free files
                continue
            assert name == ERR + "NotAuthorized", (bad, i, name, text)
        name, _ = await w.c.fails(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [bad, {}])
        assert name == ERR + "NotAuthorized", (bad, name)


async def test_after_the_fuzzing(world: World) -> None:
    """Alive, nothing to reconcile, nothing outside the volume directory touched."""
    w = world
    assert w.d.running, w.d.log_tail()
    assert w.calls >= EXAMPLES
    # the fuzzer reached the daemon's logic, not only its argument checks
    assert sum(w.successes.values()) >= 10, w.successes
    assert len([e for e in w.errors if e.startswith(ERR)]) >= 5, w.errors
    await w.c.ping()
    n = await w.c.refresh()
    assert n == 0, f"Manager.Refresh() found {n} change(s) after the fuzzing"
    with open(w.outside[0], "rb") as f:
        assert f.read() == bytes(MIB), "a file outside --file-volumes was written"
    objs = await w.c.objects()
    for p, ifs in objs.items():
        for iface in ifs:
            if iface.startswith(IFACE):
                await w.c.props(p, iface)      # every object still answers
