"""One D-Bus connection to a remote system bus, carried by ssh through a private local socket.

dbus-fast speaks only ``unix:`` and ``tcp:`` addresses, so a tunnel listens on a socket in a
fresh 0700 directory and, when the one connection arrives, starts ``ssh ... host
systemd-stdio-bridge`` with that connection as its stdin and stdout (inetd style): ssh moves the
bytes, no Python relays them. The listener and its directory go away as soon as the connection
is taken, so nobody else can use the tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from types import TracebackType

from ptcopy.remote.ssh import SshFailure, SshOptions, explain_failure, ssh_argv
from ptcopy.remote.targets import Target

_STDERR_KEEP = 8192   # the tail of ssh's stderr kept to explain a failure


class Tunnel:
    """Use as ``async with Tunnel(target) as t: MessageBus(bus_address=t.address)``."""

    def __init__(self, target: Target, opts: SshOptions | None = None) -> None:
        self.target = target
        self.opts = opts or SshOptions()
        self._dir = ""
        self._listener: socket.socket | None = None
        self._accept: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr = b""
        self._reader: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"unix:path={os.path.join(self._dir, 'bus')}"

    async def __aenter__(self) -> Tunnel:
        self._dir = tempfile.mkdtemp(prefix="ptcopy-ssh-")   # 0700: ours alone
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            ls.bind(os.path.join(self._dir, "bus"))
            ls.listen(1)
            ls.setblocking(False)
        except OSError:
            ls.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._listener = ls
        self._accept = asyncio.ensure_future(self._serve_one())
        return self

    async def _serve_one(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._listener)
        self._drop_listener()
        try:
            conn.setblocking(True)   # ssh gets it as its stdio
            self._proc = await asyncio.create_subprocess_exec(
                *ssh_argv(self.target, self.opts), stdin=conn.fileno(), stdout=conn.fileno(),
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        finally:
            conn.close()   # ssh holds it now; its exit closes the connection
        self._reader = asyncio.ensure_future(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(4096):
            self._stderr = (self._stderr + chunk)[-_STDERR_KEEP:]

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    async def failure(self, wait: float = 2.0) -> SshFailure | None:
        """Why the tunnel broke, once ssh has ended (waiting up to ``wait`` s for it to end
        and say why); None while ssh still runs or if it never started."""
        if self._proc is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._proc.wait(), wait)
        if self._proc.returncode is None:
            return None
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        return explain_failure(self.target, self._stderr.decode(errors="replace"),
                               self._proc.returncode)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """End ssh (closing the connection ends the bridge on the far side) and clean up."""
        if self._accept is not None and not self._accept.done():
            self._accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept
        self._drop_listener()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
