"""Run as a second uid (setpriv): make D-Bus calls with dbus-fast and report each reply.

stdin: {"address": ..., "calls": [{"dest", "path", "iface", "member", "sig", "body"}]}
(a body value {"$variant": [sig, value]} becomes a Variant). stdout: one JSON object per call:
{"uid", "ok", "error", "text", "body"}. Imports nothing from ptcopy: only dbus-fast.
The tests run it through as_nobody.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

NOBODY = 65534


def decode(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"$variant"}:
            sig, val = v["$variant"]
            return Variant(sig, decode(val))
        return {k: decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def encode(v: Any) -> Any:
    if isinstance(v, Variant):
        return encode(v.value)
    if isinstance(v, dict):
        return {str(k): encode(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [encode(x) for x in v]
    if isinstance(v, bytes):
        return list(v)
    return v


def as_nobody(address: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For the tests: make the calls from this script running as uid 65534 (nobody); the
    replies, one per call, each checked to come from nobody."""
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        sys.executable, __file__],
                       input=json.dumps({"address": address, "calls": calls}),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, f"unprivileged client failed: {r.stderr}"
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == len(calls) and all(x["uid"] == NOBODY for x in out), r.stderr
    return out


async def main() -> None:
    req = json.load(sys.stdin)
    bus = await MessageBus(bus_address=req["address"]).connect()
    for c in req["calls"]:
        msg = Message(destination=c.get("dest", "org.ptcopy.Imaging1"), path=c["path"],
                      interface=c["iface"], member=c["member"], signature=c.get("sig", ""),
                      body=decode(c.get("body", [])))
        reply = await asyncio.wait_for(bus.call(msg), 30)
        assert reply is not None
        err = reply.message_type is MessageType.ERROR
        out = {"uid": os.getuid(), "ok": not err, "error": reply.error_name if err else "",
               "text": str(reply.body[0]) if err and reply.body else "",
               "body": None if err else encode(reply.body)}
        print(json.dumps(out), flush=True)
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
