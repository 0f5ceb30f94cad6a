"""Moved to ``ptcopy.datapath.blockdev``; this alias stays only for ``ptcopy/kernelpath.py``.

MERGE: delete this file once the kernel path (``ptcopy.datapath.kernel``) imports blockdev.
"""

from ptcopy.datapath.blockdev import LoopError as LoopError
from ptcopy.datapath.blockdev import attach as attach
from ptcopy.datapath.blockdev import attach_fd as attach_fd
from ptcopy.datapath.blockdev import detach as detach
from ptcopy.datapath.blockdev import flush_buffers as flush_buffers
from ptcopy.datapath.blockdev import list_loops as list_loops
from ptcopy.datapath.blockdev import loop_over as loop_over
from ptcopy.datapath.blockdev import users as users
