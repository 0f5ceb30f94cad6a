"""The one renderer: every command hands its result here once, as data for --json, as rich
renderables for people, and as bare identifiers for --quiet. Diagnostics go to stderr."""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.text import Text

from ptcopy.cli._errors import CliError

PIPE_WIDTH = 200   # columns for tables when stdout is not a terminal (and COLUMNS is unset)


class Mode(enum.Enum):
    HUMAN = "human"
    JSON = "json"
    QUIET = "quiet"


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width, soft_wrap=stderr)


class Output:
    """Where a command's result and messages go."""

    def __init__(self, mode: Mode = Mode.HUMAN) -> None:
        self.mode = mode
        self.out = _console(stderr=False)
        self.err = _console(stderr=True)

    @classmethod
    def choose(cls, json_: bool, quiet: bool) -> Output:
        return cls(Mode.JSON if json_ else Mode.QUIET if quiet else Mode.HUMAN)

    @property
    def human(self) -> bool:
        return self.mode is Mode.HUMAN

    def say(self, text: str | Text) -> None:
        """A line for people (nothing in --json or --quiet mode)."""
        if self.human:
            self.out.print(text if isinstance(text, Text) else Text(text), soft_wrap=True)

    def note(self, text: str) -> None:
        """A side remark on stderr (people only)."""
        if self.human:
            self.err.print(Text(text, style="dim"))

    def warn(self, text: str) -> None:
        """A warning on stderr, in every mode."""
        self.err.print(Text(f"ptcopy: warning: {text}", style="yellow"))

    def result(self, data: Any, *, human: RenderableType | Sequence[RenderableType]
               | Callable[[], None] | None = None, quiet: Iterable[str] = ()) -> None:
        """The command's result: ``data`` as JSON, ``human`` for people, ``quiet`` lines."""
        if self.mode is Mode.JSON:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            sys.stdout.flush()
        elif self.mode is Mode.QUIET:
            for line in quiet:
                sys.stdout.write(f"{line}\n")
            sys.stdout.flush()
        elif callable(human):
            human()
        elif isinstance(human, list | tuple):
            for item in human:
                self.out.print(item)
        elif isinstance(human, str):
            self.out.print(Text(human), soft_wrap=True)
        elif human is not None:
            self.out.print(human)


def print_error(err: CliError, prog: str = "ptcopy") -> None:
    """An error on stderr: one sentence, then a hint when there is one."""
    console = _console(stderr=True)
    console.print(Text(f"{prog}: error: {err.message}", style="bold red"))
    if err.hint:
        console.print(Text(f"{' ' * len(prog)}  hint: {err.hint}"))


# ---- formatting helpers -------------------------------------------------------------------------

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: int) -> str:
    value = float(n)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def percent(x: float) -> str:
    return f"{x:.1f} %"


def rate(bytes_per_second: int) -> str:
    return f"{size(bytes_per_second)}/s" if bytes_per_second else "-"


def seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
