"""The CLI tests' runner: the real ``ptcopy`` and ``iiadm`` commands (in this process, in a
subprocess, or under a pseudo-terminal) against one ptcopyd, in one test's own volume directory."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import KIB, MIB

BIN = Path(sys.executable).parent
PTCOPY = BIN / "ptcopy"
IIADM = BIN / "iiadm"


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"$ {' '.join(self.argv)}\n-> exit {self.returncode}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


@dataclass
class Daemon:
    """The session's ptcopyd and the bus address the CLI is given."""

    address: str
    ptcopyd: Ptcopyd

    @property
    def volumes(self) -> Path:
        return self.ptcopyd.vol_dir

    @property
    def log(self) -> Path:
        return self.ptcopyd.log_path


@dataclass
class Cli:
    """Runs the CLI against the session's daemon, in one test's own volume directory."""

    daemon: Daemon
    prefix: str
    dir: Path
    made: list[str] = field(default_factory=list)
    _n: Iterator[int] = field(default_factory=count)

    # ---- running --------------------------------------------------------------------------

    def argv(self, args: Sequence[str], prog: Path, bus: bool) -> list[str]:
        return [str(prog), *(["--bus", self.daemon.address] if bus else []), *args]

    def run(self, *args: str, prog: Path = PTCOPY, user: int | None = None, bus: bool = True,
            input: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, traceback: bool = False, proc: bool = False,
            timeout: float = 60) -> Result:
        """Run ptcopy (or iiadm) with these arguments, without a terminal.

        By default the CLI's main() runs in this process (a fresh command each time, talking
        to the daemon over the bus like the installed command): a new interpreter per command
        would cost a third of a second each. ``proc`` (implied by ``user`` and ``env``) runs the
        installed console script in a subprocess instead."""
        argv = self.argv(args, prog, bus)
        if proc or user is not None or env is not None:
            result = self._subprocess(argv, user, input, env, cwd, timeout)
        else:
            result = self._in_process(argv, input, cwd)
        if not traceback:
            assert "Traceback" not in result.stderr, str(result)
        return result

    def _subprocess(self, argv: list[str], user: int | None, input: str | None,
                    env: dict[str, str] | None, cwd: Path | None, timeout: float) -> Result:
        full = argv
        if user is not None:
            full = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        r = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           env={**os.environ, **(env or {})}, cwd=cwd, check=False)
        return Result(argv, r.returncode, r.stdout, r.stderr)

    @staticmethod
    def _in_process(argv: list[str], input: str | None, cwd: Path | None) -> Result:
        from ptcopy.cli import iiadm, main

        out, err = io.StringIO(), io.StringIO()
        stdin = sys.stdin
        sys.stdin = io.StringIO(input or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                    contextlib.chdir(cwd or os.getcwd()):
                if Path(argv[0]).name == "iiadm":
                    code = iiadm.main(argv[1:])
                else:
                    code = main.main(argv[1:])
        finally:
            sys.stdin = stdin
        return Result(argv, int(code), out.getvalue(), err.getvalue())

    def ok(self, *args: str, **kw: Any) -> Result:
        r = self.run(*args, **kw)
        assert r.returncode == 0, str(r)
        return r

    def json(self, *args: str, **kw: Any) -> Any:
        r = self.ok(*args, "--json", **kw)
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"not JSON: {e}\n{r}") from e

    def fails(self, code: int, *args: str, **kw: Any) -> Result:
        """The command must fail with this exit code and explain itself on stderr."""
        r = self.run(*args, **kw)
        assert r.returncode == code, str(r)
        assert "error:" in r.stderr or "Error" in r.stderr, str(r)
        return r

    def tty(self, *args: str, answer: str = "", timeout: float = 60) -> tuple[int, str]:
        """Run under a pseudo-terminal (stdin, stdout and stderr); answer the first question
        (a line ending in ':' after '?') with ``answer``. Returns (exit code, all output)."""
        argv = self.argv(args, PTCOPY, True)
        pid, fd = pty.fork()
        if pid == 0:   # the child: exec at once
            os.environ["COLUMNS"] = "120"
            os.execv(argv[0], argv)
        out = b""
        answered = not answer
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.1)
                if ready:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:   # EIO: the child closed the terminal
                        break
                    if not chunk:
                        break
                    out += chunk
                if not answered and b"?" in out and out.rstrip().endswith(b":"):
                    os.write(fd, answer.encode() + b"\n")
                    answered = True
            else:
                os.kill(pid, signal.SIGKILL)
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")

    # ---- things to work on ----------------------------------------------------------------

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def vol(self, what: str, size: int) -> str:
        path = self.dir / f"{what}.img"
        with path.open("xb"):
            pass
        os.truncate(path, size)
        return str(path)

    def enable(self, what: str, kind: str = "dependent", size: int = 4 * MIB,
               shadow_size: int | None = None, extra: Sequence[str] = (),
               loop: bool = False) -> str:
        """A set named PREFIX-WHAT on fresh volumes; returns its name."""
        name = self.name(what)
        m = self.vol(f"{what}-m", size)
        s = self.vol(f"{what}-s", size if shadow_size is None else shadow_size)
        b = self.vol(f"{what}-b", 256 * KIB)
        args = ["enable", f"--{kind}", m, s, b, "--name", name, *extra]
        if not loop:
            args.append("--no-loop")
        self.ok(*args, "--no-wait" if kind == "independent" else "--quiet")
        return name

    def status(self, name: str) -> dict[str, Any]:
        (st,) = self.json("status", name)
        assert isinstance(st, dict)
        return st

    @staticmethod
    def until(check: Callable[[], bool], timeout: float = 10) -> None:
        """Poll: ptcopyd's properties follow I/O through served devices within its 2 s sweep
        (see /tmp/ptcopy-bugs/cli.md), so a few checks wait for it."""
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.3)

    def cleanup(self) -> None:
        """Disable this test's sets, delete its groups and overflow volumes (straight over
        D-Bus: this is housekeeping, not a test of the CLI)."""
        asyncio.run(_cleanup(self.daemon.address, str(self.dir), self.prefix + "-"))


async def _cleanup(address: str, volumes: str, prefix: str) -> None:
    from ptcopy.cli._client import Client
    from ptcopy.cli._contract import GROUP, OVERFLOW, SET

    async with Client(address, 30) as c:
        inv = await c.inventory()
        for path, s in inv.sets.items():
            if not s.master.startswith(volumes):
                continue
            if s.copying:
                with contextlib.suppress(Exception):
                    await c.simple(path, SET, "Abort")
                for _ in range(100):
                    if not (await c.set_info(path)).copying:
                        break
                    await asyncio.sleep(0.1)
            if s.overflow != "/":
                with contextlib.suppress(Exception):
                    await c.simple(path, SET, "DetachOverflow")
            await c.simple(path, SET, "Disable")
        for path, g in inv.groups.items():
            if g.name.startswith(prefix):
                await c.simple(path, GROUP, "Delete")
        for path, o in inv.overflows.items():
            if o.volume.startswith(volumes):
                await c.simple(path, OVERFLOW, "Delete")
