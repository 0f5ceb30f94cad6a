"""ptcopy hosts ...: the remote hosts ptcopyd knows by name (its Host objects), and explicit
trust of a host's SSH key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ptcopy.cli._client import Client
from ptcopy.cli._contract import HOST, MANAGER, ROOT
from ptcopy.cli._errors import BUS_ERROR_PREFIX, CliError, NotConfirmed, RemoteError, UsageProblem
from ptcopy.cli._output import Output
from ptcopy.cli._params import JsonOpt, QuietOpt
from ptcopy.cli._runner import CONNECT_TIMEOUT, ask, output, resolve_host, run, settings
from ptcopy.cli._snapshots import HostInfo, when
from ptcopy.remote.ssh import HostKey, SshOptions, effective, record_keys, scan_keys
from ptcopy.remote.targets import BadTarget, Target, check_host_name, host_object_id

app = typer.Typer(help="Remote hosts: register them by name (ptcopy --host NAME then reaches "
                       "them), see which are reachable, and trust their SSH host keys.",
                  no_args_is_help=True, rich_markup_mode="markdown")

NameArg = Annotated[str, typer.Argument(..., metavar="NAME", show_default=False,
                                        help="The host's name in the registry.")]
PROBE_TIMEOUT = 60.0   # seconds for ptcopyd's probes (each is bounded there, ~20 s at most)


def _local(usec: int) -> str:
    if not usec:
        return "never"
    return datetime.fromtimestamp(usec / 1e6).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def host_json(h: HostInfo) -> dict[str, Any]:
    """A host as plain JSON (times ISO 8601, UTC; None for never)."""
    return {"name": h.name, "object": h.path, "target": h.target, "reachable": h.reachable,
            "last_seen": when(h.last_seen), "version": h.version or None, "sets": h.sets,
            "last_error": h.last_error or None}


def hosts_table(items: list[HostInfo]) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("HOST", "TARGET", "REACHABLE", "LAST SEEN", "VERSION", "SETS"):
        t.add_column(col, overflow="fold")
    for h in items:
        if h.reachable:
            reach = Text("yes", style="green")
        elif h.last_error:
            reach = Text(f"no: {h.last_error}", style="red")
        else:
            reach = Text("not probed yet", style="yellow")
        t.add_row(h.name, h.target, reach, _local(h.last_seen), h.version or "-",
                  str(h.sets) if h.last_seen else "-")
    return t


def _path(name: str) -> str:
    try:
        check_host_name(name)
    except BadTarget as e:
        raise UsageProblem(str(e)) from e
    return f"{ROOT}/hosts/{host_object_id(name)}"


async def _host(c: Client, name: str) -> HostInfo:
    """A registered host by name; NotFound-like CliError when there is none."""
    path = _path(name)
    try:
        return HostInfo.from_props(path, await c.props(path, HOST))
    except RemoteError as e:
        if e.error_name.startswith(BUS_ERROR_PREFIX + "Unknown"):
            raise CliError(f"there is no host named {name!r} in the registry",
                           "ptcopy hosts list shows them; ptcopy hosts add registers one") \
                from e
        raise


@app.command()
def add(ctx: typer.Context, name: NameArg,
        target: Annotated[str, typer.Argument(..., metavar="TARGET", show_default=False,
            help="Where it is: an SSH destination [USER@]HOST[:PORT], or an alias of your "
                 "ssh configuration.")],
        *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Register a remote host under NAME (needs root or the polkit action). ptcopyd then
    probes it, read-only, as root over SSH: root must be able to log in there and know its
    host key (sudo ptcopy hosts trust NAME)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        (path,) = await c.call(ROOT, MANAGER, "AddHost", name, target, {})
        h = HostInfo.from_props(str(path), await c.props(str(path), HOST))
        out.result(host_json(h), human=f"host {h.name} is {h.target}", quiet=[h.name])

    run(ctx, body)


@app.command(name="list")
def list_(ctx: typer.Context, *,
          probe: Annotated[bool, typer.Option("--probe", help="Have ptcopyd probe every host "
                                              "first (in parallel) instead of showing what its "
                                              "last background probe found.")] = False,
          json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List the registered hosts: target, reachable, last seen, ptcopyd version, number of
    sets (as ptcopyd's last probe found them)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        inv = await c.inventory()
        if probe and inv.hosts:
            await asyncio.gather(*(c.call(p, HOST, "Probe", {}, timeout=PROBE_TIMEOUT)
                                   for p in inv.hosts))
            inv = await c.inventory()
        items = sorted(inv.hosts.values(), key=lambda h: h.name)
        human = hosts_table(items) if items else "no hosts (ptcopy hosts add registers one)"
        out.result([host_json(h) for h in items], human=human, quiet=[h.name for h in items])

    run(ctx, body)


@app.command()
def remove(ctx: typer.Context, names: Annotated[list[str], typer.Argument(...,
           metavar="NAME...", show_default=False, help="Registered hosts, by name.")],
           *, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Forget hosts (nothing changes on the hosts themselves)."""
    out = output(ctx, json_, quiet)

    async def body(c: Client) -> None:
        for n in names:
            h = await _host(c, n)
            await c.call(h.path, HOST, "Remove", {})
            out.say(f"removed host {n}")
        out.result({"removed": names}, quiet=names)

    run(ctx, body)


# ---- trust -----------------------------------------------------------------------------------

def _known(keys: list[HostKey], known_hosts: str) -> list[str]:
    """The key lines known_hosts already has for the name these keys go under."""
    name = keys[0].line.split()[0]
    r = subprocess.run(["ssh-keygen", "-F", name, "-f", known_hosts], capture_output=True,
                       text=True, timeout=10, check=False)
    return [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]


def _trust(out: Output, host: str, target: Target, yes: bool) -> dict[str, Any]:
    opts = SshOptions(connect_timeout=CONNECT_TIMEOUT)
    try:
        conf = effective(target, opts)
        keys, known_hosts = scan_keys(target, opts)
    except (OSError, subprocess.SubprocessError) as e:
        raise CliError(str(e), "check that the host is up and its sshd listens") from e
    if conf.get("stricthostkeychecking", [""])[0] == "false":
        out.warn("your ssh configuration does not check host keys for this host; ptcopy "
                 "checks them anyway")
    have = _known(keys, known_hosts)
    blobs = {tuple(k.line.split()[1:3]) for k in keys}
    known = {tuple(ln.split()[1:3]) for ln in have if len(ln.split()) >= 3}
    where = keys[0].line.split()[0]
    if known & blobs:
        out.say(f"{where}: its key is already trusted in {known_hosts}")
        return {"host": host, "target": str(target), "known_hosts": known_hosts,
                "recorded": [], "already": True}
    if known:
        raise CliError(f"host {host}: {known_hosts} already holds a DIFFERENT key for {where}; "
                       "it may be intercepted or reinstalled: nothing was recorded",
                       f"check the new key with the host's administrator; then remove the old "
                       f"one (ssh-keygen -R '{where}' -f {known_hosts}) and run this again")
    for k in keys:
        out.err.print(f"{where} {k.kind} {k.fingerprint}")
    if not yes:
        if not sys.stdin.isatty():
            raise NotConfirmed(f"host {host}: not trusted: there is no terminal to confirm "
                               "the fingerprints on", "compare them with the host's ("
                               "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub there), then "
                               "add --yes")
        if not ask(out, f"Trust these keys of {where} (compare them with the host's own)?"):
            raise NotConfirmed("not confirmed; nothing was recorded")
    record_keys(keys, known_hosts)
    out.say(f"trusted {where}: {len(keys)} key(s) recorded in {known_hosts}")
    return {"host": host, "target": str(target), "known_hosts": known_hosts,
            "recorded": [{"type": k.kind, "fingerprint": k.fingerprint} for k in keys],
            "already": False}


@app.command()
def trust(ctx: typer.Context,
          host: Annotated[str, typer.Argument(..., metavar="HOST", show_default=False,
              help="A registered name, or [USER@]HOST[:PORT].")],
          *, yes: Annotated[bool, typer.Option("--yes", "-y", help="Record the keys without "
                                               "asking (needed without a terminal).")] = False,
          json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Trust a host's SSH key explicitly: fetch it (without trusting it), show its
    fingerprints, and record it in your known_hosts once you confirm. Refused when your
    known_hosts holds a different key for that host. ptcopyd's probes use root's known_hosts:
    run it as root (sudo) for them."""
    out = output(ctx, json_, quiet)
    # a registered name is looked up in the local ptcopyd; anything else needs no daemon
    target = asyncio.run(resolve_host(settings(ctx), host))
    out.result(_trust(out, host, target, yes), quiet=[host])
