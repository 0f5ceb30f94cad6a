"""The kernel data path: sets served by device-mapper (the device diagram is in ``path.py``)."""

from ptcopy.datapath.kernel.blocks import opened_volume, opened_volumes
from ptcopy.datapath.kernel.copyjob import KernelCopy
from ptcopy.datapath.kernel.merge import MergeFailed
from ptcopy.datapath.kernel.path import CAPS, KernelPath
from ptcopy.datapath.kernel.state import KernelSet, State
from ptcopy.datapath.kernel.tables import KernelPathUnavailable, probe

__all__ = ["CAPS", "KernelCopy", "KernelPath", "KernelPathUnavailable", "KernelSet",
           "MergeFailed", "State", "opened_volume", "opened_volumes", "probe"]
