"""What every command shares: the global settings, one connection per command run on one event
loop, the question before writing a master, and following a job to its end."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.prompt import Confirm

from ptcopy.cli import _output as fmt
from ptcopy.cli._client import Client
from ptcopy.cli._contract import HOST, ROOT
from ptcopy.cli._errors import (
    BUS_ERROR_PREFIX,
    BusUnreachable,
    CallTimedOut,
    CliError,
    HostFailed,
    Interrupted,
    JobFailed,
    NotConfirmed,
    RemoteError,
    UsageProblem,
)
from ptcopy.cli._output import Output
from ptcopy.cli._snapshots import JobInfo
from ptcopy.remote.ssh import SshOptions
from ptcopy.remote.targets import BadTarget, Target, check_host_name, host_object_id, parse_target
from ptcopy.remote.tunnel import Tunnel

DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0   # seconds for ssh to connect and log in to a remote host
REGISTRY_TIMEOUT = 3.0   # seconds to look a host name up in the local ptcopyd
NO_DAEMON = (BUS_ERROR_PREFIX + "ServiceUnknown", BUS_ERROR_PREFIX + "NameHasNoOwner")
POLL = 0.25        # seconds between progress updates on a terminal
QUIET_POLL = 10.0  # seconds per Wait call when nothing is shown


@dataclass
class Settings:
    """The global options, kept in the typer context object."""

    bus: str | None = None
    host: str | None = None   # --host: the command runs on that host's ptcopyd
    timeout: float = DEFAULT_TIMEOUT
    debug: bool = False
    json: bool = False
    quiet: bool = False
    following: str = ""    # what a wait follows, for the hint after Ctrl-C


def settings(ctx: typer.Context) -> Settings:
    found = ctx.find_object(Settings)
    return found if found is not None else Settings()


def output(ctx: typer.Context, json_: bool, quiet: bool) -> Output:
    """The renderer for this command (--json and --quiet may also come before the command)."""
    s = settings(ctx)
    return Output.choose(json_ or s.json, quiet or s.quiet)


def run(ctx: typer.Context, body: Callable[[Client], Awaitable[None]]) -> None:
    """Connect to ptcopyd and run one command's body on a fresh event loop."""
    s = settings(ctx)

    async def go() -> None:
        async with open_client(s, s.host) as client:
            await body(client)

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        hint = ""
        if s.following:
            hint = (f"the copy goes on in the background: ptcopy wait {s.following} follows it, "
                    f"ptcopy abort {s.following} stops it")
        raise Interrupted("interrupted", hint) from None


@contextlib.asynccontextmanager
async def open_client(s: Settings, host: str | None,
                      target: Target | None = None) -> AsyncIterator[Client]:
    """A connection to ptcopyd: the local one (``host`` None, or --bus), or the one on
    ``host`` over SSH (at ``target`` when the caller resolved it already). A failure of the
    SSH link, at the start or mid-command, leaves as a HostFailed that says why (ssh's reason)
    instead of a bare broken connection."""
    if host is None:
        async with Client(s.bus, s.timeout) as client:
            yield client
        return
    if target is None:
        target = await resolve_host(s, host)
    opts = SshOptions(connect_timeout=min(s.timeout, CONNECT_TIMEOUT))
    label = f"host {host}" if str(target) == host else f"host {host} ({target})"
    async with Tunnel(target, opts) as tunnel:
        try:
            async with Client(tunnel.address, s.timeout, label=label, host=host,
                              connect_timeout=opts.connect_timeout + 5) as client:
                yield client
        except (BusUnreachable, CallTimedOut) as e:
            failure = await tunnel.failure()
            if failure is None:
                raise _on_host(e, host) from None
            raise HostFailed(failure.message, failure.hint, failure.kind) from e
        except CliError as e:
            raise _on_host(e, host) from None


def _on_host(e: CliError, host: str) -> CliError:
    """The error, saying on which host it happened (its type kept for callers)."""
    if isinstance(e, RemoteError) and e.error_name in NO_DAEMON:
        e.message = f"host {host}: ptcopyd is not running there"
        e.hint = f"start it on {host} (systemctl start ptcopyd)"
    elif not e.message.startswith(f"host {host}"):
        e.message = f"host {host}: {e.message}"
    return e


async def resolve_host(s: Settings, host: str) -> Target:
    """A registered host name (a Host object of the local ptcopyd) to its SSH target; anything
    else is taken as an SSH destination ([USER@]HOST[:PORT], or an ssh_config alias)."""
    try:
        check_host_name(host)
    except BadTarget:
        pass
    else:
        path = f"{ROOT}/hosts/{host_object_id(host)}"
        with contextlib.suppress(CliError):
            async with Client(s.bus, min(s.timeout, REGISTRY_TIMEOUT)) as local:
                return parse_target(str((await local.props(path, HOST))["Target"]))
    try:
        return parse_target(host)
    except BadTarget as e:
        raise UsageProblem(f"--host {e}") from e


def is_terminal() -> bool:
    """Run by a person at a terminal (the default for --wait)?"""
    return sys.stdout.isatty()


def wants_wait(flag: bool | None) -> bool:
    return is_terminal() if flag is None else flag


def confirm_master_write(out: Output, what: str, yes: bool) -> None:
    """Writing a master replaces its data: --yes, or a yes typed at a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmed(f"{what} replaces the data on the master, and there is no terminal "
                           "to ask for confirmation on; nothing was done",
                           "add --yes to confirm")
    if not ask(out, f"{what} replaces the data on the master. Go ahead?"):
        raise NotConfirmed("not confirmed; nothing was done")


def ask(out: Output, question: str) -> bool:
    """A yes/no question at the terminal: no by default, and at the end of input."""
    try:
        return bool(Confirm.ask(question, console=out.err, default=False))
    except EOFError:
        return False


async def follow(client: Client, out: Output, job: str, what: str, *, show: bool) -> JobInfo:
    """Wait for a job to end (with a progress bar when ``show``); its final state.
    Raises JobFailed when it did not end well."""
    try:
        if show:
            info = await _follow_with_bar(client, out, job, what)
        else:
            while not await client.job_wait(job, QUIET_POLL):
                pass
            info = await client.job_info(job)
    except RemoteError as e:
        if e.error_name == BUS_ERROR_PREFIX + "UnknownObject":
            raise CliError(f"{what}: the job {job} is no longer known to ptcopyd (finished jobs "
                           "are kept for a while only)",
                           "ptcopy status shows the sets' state") from e
        raise
    if not info.success:
        hint = "ptcopy status shows the set's state"
        if "cancel" in info.message or "stopped" in info.message:
            hint = "the target is incomplete: run the update again to finish it"
        raise JobFailed(what, info.message or "failed", hint)
    return info


async def _follow_with_bar(client: Client, out: Output, job: str, what: str) -> JobInfo:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"))
    with Progress(*columns, console=out.err, transient=False) as bar:
        task = bar.add_task(what, total=100.0, rate="-", eta="-:--")
        while True:
            ended = await client.job_wait(job, POLL)
            info = await client.job_info(job)
            eta = "-:--"
            if info.expected_end_time and not info.done:
                eta = fmt.seconds(max(0.0, info.expected_end_time / 1e6 - time.time()))
            elif info.done:
                eta = "0.0 s"
            bar.update(task, completed=100.0 * info.progress, rate=fmt.rate(info.rate), eta=eta)
            if ended or info.done:
                return info
