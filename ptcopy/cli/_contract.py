"""The D-Bus contract the CLI speaks, pinned: the bus name, object paths and interface names,
the signature of every call the CLI makes (``CALLS``), the properties it reads (``PROPS``) and
the options it sends (``OPTION_TYPES``). tests/integration/cli/test_contract.py checks them
against dbus/org.ptcopy.Imaging1.xml, so a change of the contract shows up as a failing test
instead of a confusing error at a user's terminal.
"""

from __future__ import annotations

BUS_NAME = "org.ptcopy.Imaging1"
ROOT = "/org/ptcopy/Imaging1"
IFACE = "org.ptcopy.Imaging1"
MANAGER = IFACE + ".Manager"
SET = IFACE + ".IISet"
GROUP = IFACE + ".IIGroup"
OVERFLOW = IFACE + ".IIOverflow"
VOLUME = IFACE + ".Volume"
JOB = IFACE + ".Job"
SCHEDULE = IFACE + ".Schedule"
HOST = IFACE + ".Host"
PROPERTIES = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
NO_OBJECT = "/"

# Every ptcopy method this CLI calls: (interface, member) -> (in signature, out signature).
CALLS: dict[tuple[str, str], tuple[str, str]] = {
    (MANAGER, "CreateSet"): ("sssssa{sv}", "oo"),
    (MANAGER, "CreateGroup"): ("saoa{sv}", "o"),
    (MANAGER, "CreateOverflow"): ("sa{sv}", "o"),
    (MANAGER, "LookUp"): ("s", "o"),
    (MANAGER, "Candidates"): ("ssa{sv}", "ao"),
    (MANAGER, "Refresh"): ("a{sv}", "u"),
    (SET, "Copy"): ("sa{sv}", "o"),
    (SET, "Update"): ("sa{sv}", "o"),
    (SET, "Abort"): ("a{sv}", ""),
    (SET, "Reset"): ("a{sv}", "o"),
    (SET, "Disable"): ("a{sv}", ""),
    (SET, "SetCopyParameters"): ("uua{sv}", ""),
    (SET, "AttachOverflow"): ("oa{sv}", ""),
    (SET, "DetachOverflow"): ("a{sv}", ""),
    (SET, "Export"): ("a{sv}", ""),
    (SET, "Join"): ("sa{sv}", "o"),
    (MANAGER, "ImportShadow"): ("ssa{sv}", "o"),
    (SET, "Rename"): ("sa{sv}", ""),
    (SET, "Suspend"): ("a{sv}", ""),
    (SET, "Resume"): ("a{sv}", "o"),
    (GROUP, "AddSet"): ("oa{sv}", ""),
    (GROUP, "RemoveSet"): ("oa{sv}", ""),
    (GROUP, "Copy"): ("sa{sv}", "o"),
    (GROUP, "Update"): ("sa{sv}", "o"),
    (GROUP, "Abort"): ("a{sv}", ""),
    (GROUP, "Rename"): ("sa{sv}", ""),
    (GROUP, "Delete"): ("a{sv}", ""),
    (GROUP, "Hold"): ("ssda{sv}", "s"),
    (GROUP, "Release"): ("sba{sv}", "ot"),
    (GROUP, "SetHosts"): ("asa{sv}", ""),
    (OVERFLOW, "Delete"): ("a{sv}", ""),
    (JOB, "Cancel"): ("a{sv}", ""),
    (JOB, "Wait"): ("d", "b"),
    (MANAGER, "CreateSchedule"): ("ssaoa{sv}", "o"),
    (SCHEDULE, "NextRuns"): ("u", "at"),
    (SCHEDULE, "Pause"): ("a{sv}", ""),
    (SCHEDULE, "Resume"): ("a{sv}", ""),
    (SCHEDULE, "RunNow"): ("a{sv}", "o"),
    (SCHEDULE, "Delete"): ("a{sv}", ""),
    (MANAGER, "AddHost"): ("ssa{sv}", "o"),
    (HOST, "Probe"): ("a{sv}", "b"),
    (HOST, "Remove"): ("a{sv}", ""),
}
# The properties the CLI reads, per interface (also checked against the contract).
PROPS: dict[str, tuple[str, ...]] = {
    MANAGER: ("Version", "DataPath"),
    SET: ("Name", "Kind", "Master", "Shadow", "Bitmap", "MasterDevice", "ShadowDevice",
          "Overflow", "Group", "Status", "Flags", "Job", "DifferencePercent", "CopyPercent",
          "Size", "ChunkSize", "ShadowChunksTotal", "ShadowChunksUsed", "CopyDelay",
          "CopyUnits", "LastModified", "LockedBy"),
    GROUP: ("Name", "Sets", "Status", "Job", "Hosts"),
    OVERFLOW: ("Path", "Sets", "ChunksTotal", "ChunksUsed", "CountersValid"),
    VOLUME: ("Path", "Size", "Type", "FsType", "Mounted", "Holders", "UsedBy", "Available",
             "Unsuitable"),
    JOB: ("Operation", "Objects", "Progress", "ProgressValid", "Bytes", "Rate", "StartTime",
          "ExpectedEndTime", "Cancelable", "StartedByUID", "Done", "Success", "Message"),
    SCHEDULE: ("Name", "Spec", "Targets", "Enabled", "NextRun", "LastRun", "LastJob",
               "LastResult"),
    HOST: ("Name", "Target", "Reachable", "LastSeen", "Version", "Sets", "LastError"),
}
KIND_OF_PREFIX = {f"{ROOT}/sets/": "set", f"{ROOT}/groups/": "group",
                  f"{ROOT}/overflow/": "overflow volume", f"{ROOT}/jobs/": "job",
                  f"{ROOT}/volumes/": "volume", f"{ROOT}/schedules/": "schedule",
                  f"{ROOT}/hosts/": "host"}


def kind_of(path: str) -> str:
    """What an object path names ("set", "group", ...; "object" when unknown)."""
    for prefix, kind in KIND_OF_PREFIX.items():
        if path.startswith(prefix):
            return kind
    return "object"


# The option keys the CLI sends, with their D-Bus types (see the methods' documentation).
# The option keys the CLI sends, with their D-Bus types (see the methods' documentation).
OPTION_TYPES = {"confirm": "b", "chunk_size": "u", "overflow": "o", "group": "o",
                "copy_delay": "u", "copy_units": "u", "bitmap_in_memory": "b", "loop": "b",
                "kind": "s", "name": "s"}
