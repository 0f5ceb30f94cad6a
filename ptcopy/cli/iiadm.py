"""iiadm: Sun AVS Instant Image's classic command line, translated to ptcopy.

Old scripts keep working: ``iiadm -e ind M S B``, ``iiadm -u s SET``, ``iiadm -i all``, ... become
the same ptcopy command a person would type (``ptcopy enable --independent M S B``, ...), run by
the same code, with ptcopy's output and AVS's exit codes (0 ok, 1 usage, 2 operation failed).
``iiadm --explain ...`` prints the ptcopy command line instead of running it.
docs/iiadm.md has the whole mapping and the few deliberate differences.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from ptcopy.cli._errors import ExitCode, UsageProblem
from ptcopy.cli._output import print_error
from ptcopy.cli.main import main as ptcopy_main

PROG = "iiadm"
TICK_MS = 10   # -P delay was in Solaris clock ticks (hz = 100): 10 ms each

# Options taking an argument, and options that are plain flags. -s/-r (suspend/resume),
# -B, -C, -G, -M, -N, -X (groups) and -Z come from the patent's iiadm (US 2003/0033327).
WITH_ARG = set("ecudwagPOADQREIJsrBNZ")
FLAGS = set("npilvhmLCGMX")
GROUP_FLAGS = set("wadi")   # after -g GROUP these act on the group and take no set

USAGE = """\
usage: iiadm [--bus ADDRESS] [--explain] OPTIONS
  iiadm -e ind|dep master shadow bitmap [name]   enable a set (named after its shadow)
  iiadm -d set...                          disable
  iiadm [-n] -c s|m set                    full copy to shadow or master (-n: do not ask)
  iiadm [-n] -u s|m set                    update to shadow or master
  iiadm -w set...     iiadm -a set...      wait for / abort copies
  iiadm -s set...|all iiadm -r set...|all  suspend / resume copies
  iiadm -i [set...|all]  iiadm -l          status / list
  iiadm -R set                             reset (bring offline volumes back)
  iiadm -P delay units set   iiadm -P set  copy throttle (delay in ticks of 10 ms) / show it
  iiadm -g group -C [ind|dep]              create a group (-N new: rename, -X: delete)
  iiadm -g group -m|-M set...              move sets into a group (-g "" takes them out)
  iiadm -B set...                          take sets out of their group
  iiadm -g group -c|-u s|m                 copy / update a group at one point in time
  iiadm -g group -w|-a|-i|-L               wait / abort / status / list its sets
  iiadm -g -L   iiadm -G                   list groups
  iiadm -O ovr   -A ovr set   -D set   -L   -Q ovr   -Z ovr
                                           overflow: init, attach, detach, list, status, delete
  iiadm -E set   -J shadow bitmap          export, join (on the host that keeps the set)
  iiadm -I shadow bitmap   -d shadow      import an exported shadow, release it (other host)
  iiadm -v   iiadm -h                      version, this help
A set is named by its shadow volume (or its ptcopy name). See docs/iiadm.md.
"""


@dataclass
class Parsed:
    opts: dict[str, str] = field(default_factory=dict)   # letter -> argument ('' for flags)
    operands: list[str] = field(default_factory=list)


def _parse(argv: Sequence[str]) -> Parsed:
    """getopt-style: clustered flags (-np), arguments attached or separate, operands anywhere.
    -g takes no argument when the next word is an option (iiadm -g -L); after -g GROUP,
    -w, -a and -d take none either (iiadm -g GROUP -w)."""
    p = Parsed()
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            p.operands.extend(argv[i:])
            break
        if not word.startswith("-") or word == "-":
            p.operands.append(word)
            continue
        j = 1
        while j < len(word):
            letter = word[j]
            j += 1
            if letter in FLAGS or (letter in GROUP_FLAGS and "g" in p.opts):
                p.opts[letter] = ""
                continue
            if letter not in WITH_ARG:
                raise UsageProblem(f"unknown option -{letter}", "iiadm -h shows the usage")
            if j < len(word):
                arg, j = word[j:], len(word)
            elif letter == "g" and (i >= len(argv) or (argv[i].startswith("-") and argv[i])):
                arg = "\0"   # -g without a group: the groups themselves
            elif i < len(argv):
                arg = argv[i]
                i += 1
            else:
                raise UsageProblem(f"option -{letter} needs an argument",
                                   "iiadm -h shows the usage")
            p.opts[letter] = arg
    return p


def _direction(value: str) -> str:
    d = {"s": "shadow", "m": "master"}.get(value)
    if d is None:
        raise UsageProblem(f"direction {value!r} must be s (shadow) or m (master)")
    return d


def _one_set(sets: list[str], letter: str) -> list[str]:
    if len(sets) > 1:
        raise UsageProblem(
            f"-{letter} with several sets took them at one point in time in AVS; ptcopy does "
            "that for groups only",
            "put them in a group (iiadm -g NAME -m SET...) and use iiadm -g NAME -" + letter)
    if not sets:
        raise UsageProblem(f"-{letter} needs a set", "iiadm -h shows the usage")
    return sets


def translate(argv: Sequence[str]) -> list[str]:
    """The ptcopy command line (without global options) for one iiadm command line."""
    p = _parse(argv)
    o, ops = p.opts, p.operands
    yes = ["--yes"] if "n" in o else []
    actions = [k for k in o if k not in "npg"]
    if "g" in o and not actions:
        raise UsageProblem("-g needs an action: -C, -N, -X, -m, -c, -u, -w, -a, -i or -L")
    if len(actions) != 1:
        if not actions:
            raise UsageProblem("no action given", "iiadm -h shows the usage")
        raise UsageProblem("give one action at a time: " +
                           " ".join(f"-{a}" for a in actions))
    act = actions[0]
    arg = o[act]

    if "g" in o:
        group = o["g"]
        if group == "\0":
            if act != "L":
                raise UsageProblem(f"-g without a group name goes with -L only, not -{act}")
            return ["group", "list"]
        if act in "mM":
            if not ops:
                raise UsageProblem(f"-{act} needs sets to move")
            return ["group", "remove", "", *ops] if group == "" else \
                ["group", "add", "--create", group, *ops]
        if act in "cu":
            return ["group", "copy" if act == "c" else "update", group, "--to",
                    _direction(arg), *yes]
        if act == "C":   # ptcopy groups take sets of either kind: the kind is only checked
            if ops not in ([], ["ind"], ["dep"], ["i"], ["d"]):
                raise UsageProblem("-C takes an optional kind: ind or dep")
            return ["group", "create", group]
        if act == "N":
            return ["group", "rename", group, arg]
        # -w, -a, -i, -L, -X with a group: the set operand slot holds nothing
        table = {"w": ["wait", group], "a": ["abort", group], "i": ["status", "--group", group],
                 "L": ["group", "list", group], "X": ["group", "delete", group]}
        if act in table:
            return table[act]
        if act == "d":
            raise UsageProblem(f"-g GROUP -d (disable every set of a group) is not "
                               f"translated: iiadm -g {group} -L lists them, iiadm -d SET... "
                               "disables them")
        raise UsageProblem(f"-{act} does not go with -g")

    if act == "e":
        kind = {"ind": "--independent", "dep": "--dependent"}.get(arg)
        if kind is None:
            raise UsageProblem(f"-e {arg}: the kind is ind or dep")
        if len(ops) not in (3, 4):
            raise UsageProblem("-e needs master, shadow and bitmap volumes (and may name the "
                               "set)")
        return ["enable", kind, *ops[:3], *(["--name", ops[3]] if len(ops) == 4 else [])]
    if act in "cu":
        sets = _one_set(ops, act)
        return ["copy" if act == "c" else "update", sets[0], "--to", _direction(arg), *yes]
    if act in "dwaRE":
        sets = [arg, *ops]
        if act in "RE":
            _one_set(sets, act)
        verb = {"d": "disable", "w": "wait", "a": "abort", "R": "reset", "E": "export"}[act]
        return [verb, *sets]
    if act in "sr":
        sets = [arg, *ops]
        verb = "suspend" if act == "s" else "resume"
        return [verb, "--all"] if sets == ["all"] else [verb, *sets]
    if act == "B":
        return ["group", "remove", "", arg, *ops]
    if act == "G":
        return ["group", "list"]
    if act == "i":
        sets = [s for s in ops if s != "all"]
        return ["status", *sets]
    if act == "l":
        return ["list"]
    if act == "v":
        return ["version"]
    if act == "P":
        if not ops:
            return ["param", arg]
        if len(ops) != 2:
            raise UsageProblem("-P takes delay, units and a set (or only a set to show them)")
        try:
            delay, units = int(arg), int(ops[0])
        except ValueError as e:
            raise UsageProblem("-P delay and units are whole numbers") from e
        return ["param", ops[1], "--delay", str(delay * TICK_MS), "--units", str(units)]
    if act == "O":
        return ["overflow", "init", arg]
    if act == "A":
        _one_set(ops, "A")
        return ["overflow", "attach", arg, ops[0]]
    if act == "D":
        return ["overflow", "detach", arg]
    if act == "L":
        return ["overflow", "list"]
    if act == "Q":
        return ["overflow", "status", arg]
    if act == "Z":
        return ["overflow", "delete", arg]
    if act == "J":
        if len(ops) != 1:
            raise UsageProblem("-J takes a shadow and the bitmap the other host kept")
        return ["join", arg, ops[0]]
    if act == "I":
        if len(ops) != 1:
            raise UsageProblem("-I takes the exported shadow and a bitmap volume for the "
                               "chunks written here")
        return ["import", arg, ops[0]]
    if act in "mMCNX":
        raise UsageProblem(f"-{act} goes with -g GROUP")
    raise UsageProblem(f"-{act} is not an action", "iiadm -h shows the usage")


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    front: list[str] = []   # ptcopy's own long options, which no AVS script uses
    explain = False
    args: list[str] = []
    while given:
        word = given.pop(0)
        if word == "--explain":
            explain = True
        elif word in ("--json", "--debug"):
            front.append(word)
        elif word == "--bus":
            if not given:
                print_error(UsageProblem("--bus needs an address"), PROG)
                return ExitCode.USAGE
            front += ["--bus", given.pop(0)]
        else:
            args.append(word)
    if not args or args in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return ExitCode.OK if args else ExitCode.USAGE
    try:
        command = translate(args)
    except UsageProblem as e:
        print_error(e, PROG)
        return e.exit_code
    if "p" in _parse(args).opts:
        sys.stderr.write("iiadm: warning: -p (lock the set to this process) is not supported: "
                         "a ptcopy lock lasts only as long as one D-Bus connection; going on "
                         "without it\n")
    if explain:
        sys.stdout.write(shlex.join(["ptcopy", *front, *command]) + "\n")
        return ExitCode.OK
    return ptcopy_main([*front, *command], prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
