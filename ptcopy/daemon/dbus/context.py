"""What an exported object may ask of the daemon besides its Service and its id: narrow
callables, so an object reaches nothing else (no daemon, no other objects' tables)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ptcopy.daemon.candidates import CandidateView
from ptcopy.daemon.dbus.auth import Authorizer

# (operation, object paths, set ids, uid of the caller) -> the path of the Job that follows
StartJob = Callable[[str, Sequence[str], Sequence[str], int], str]


@dataclass(frozen=True)
class Context:
    """For sets, groups and overflow volumes: who may call, jobs, and a member's status."""

    auth: Authorizer
    start_job: StartJob
    # a set's Status as its object shows it ('error' when it has none): a group's Status
    set_status: Callable[[str], str]
    # after a Lock: release the caller's locks if it left the bus during the call
    release_if_gone: Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class HostContext:
    """The Manager's extras: reconcile the host's volumes, and what Candidates picks from."""

    # take the udev events in flight, re-enumerate; how many Volume objects were wrong
    rediscover: Callable[[], Awaitable[int]]
    # export what the Service has, unexport what it no longer has
    sync_objects: Callable[[], None]
    # on the loop: the volumes' sizes and availability, for a worker thread
    candidate_views: Callable[[], list[CandidateView]]
