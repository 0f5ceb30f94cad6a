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

# Options taking an argument, and options that are plain flags.
WITH_ARG = set("ecudwagPOADQREIJ")
FLAGS = set("npilvhmL")
GROUP_FLAGS = set("wad")   # after -g GROUP these act on the group and take no set

USAGE = """\
usage: iiadm [--bus ADDRESS] [--explain] OPTIONS
  iiadm -e ind|dep master shadow bitmap    enable a set (named after its shadow)
  iiadm -d set                             disable
  iiadm [-n] -c s|m set                    full copy to shadow or master (-n: do not ask)
  iiadm [-n] -u s|m set                    update to shadow or master
  iiadm -w set        iiadm -a set         wait for / abort a copy
  iiadm -i [set|all]  iiadm -l             status / list
  iiadm -R set                             reset (bring offline volumes back)
  iiadm -P delay units set   iiadm -P set  copy throttle (delay in ticks of 10 ms) / show it
  iiadm -g group -m set...                 move sets into a group (-g "" takes them out)
  iiadm -g group -c|-u s|m                 copy / update a group at one point in time
  iiadm -g group -w|-a|-i|-d|-L            wait / abort / status / disable / list its sets
  iiadm -g -L                              list groups
  iiadm -O ovr   -A ovr set   -D set   -L   -Q ovr    overflow: init, attach, detach, list, status
  iiadm -E set   -I shadow bitmap   -J shadow bitmap  export, import, join
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
        raise UsageProblem("-g needs an action: -m, -c, -u, -w, -a, -i, -d or -L")
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
        if act == "m":
            if not ops:
                raise UsageProblem("-m needs sets to move")
            return ["group", "remove", "", *ops] if group == "" else \
                ["group", "add", "--create", group, *ops]
        if act in "cu":
            return ["group", "copy" if act == "c" else "update", group, "--to",
                    _direction(arg), *yes]
        # -w, -a, -i, -d, -L with a group: the set operand slot holds nothing
        table = {"w": ["wait", group], "a": ["abort", group], "L": ["group", "list", group]}
        if act in table:
            return table[act]
        if act in "id":
            raise UsageProblem(f"-g GROUP -{act} is not translated: use ptcopy group list "
                               f"{group} and ptcopy {'status' if act == 'i' else 'disable'} "
                               "on its sets")
        raise UsageProblem(f"-{act} does not go with -g")

    if act == "e":
        kind = {"ind": "--independent", "dep": "--dependent"}.get(arg)
        if kind is None:
            raise UsageProblem(f"-e {arg}: the kind is ind or dep")
        if len(ops) != 3:
            raise UsageProblem("-e needs master, shadow and bitmap volumes")
        return ["enable", kind, *ops]
    if act in "cu":
        sets = _one_set(ops, act)
        return ["copy" if act == "c" else "update", sets[0], "--to", _direction(arg), *yes]
    if act in "dwaRE":
        sets = [arg, *ops]
        if act in "RE":
            _one_set(sets, act)
        verb = {"d": "disable", "w": "wait", "a": "abort", "R": "reset", "E": "export"}[act]
        return [verb, *sets]
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
    if act in "IJ":
        if len(ops) != 1:
            raise UsageProblem(f"-{act} takes a shadow and a bitmap volume")
        return ["import" if act == "I" else "join", arg, ops[0]]
    if act == "m":
        raise UsageProblem("-m goes with -g GROUP")
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
