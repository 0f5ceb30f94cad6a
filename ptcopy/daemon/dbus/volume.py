"""org.ptcopy.Imaging1.Volume: a volume of this host. The object holds only its view, which
the daemon replaces when discovery or the sets change it."""

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import DBusBool, DBusObjectPath, DBusStr, DBusUInt64, dbus_property
from ptcopy.daemon.dbus.args import R, Strings
from ptcopy.daemon.dbus.bus import IFACE
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.discovery import VolumeView


class Volume(Interface):
    """A volume of this host: a block device udev knows, or a file a set or overflow uses."""

    def __init__(self, view: VolumeView) -> None:
        super().__init__(IFACE + ".Volume")
        self.view = view

    def changed(self) -> bool:
        """Never by itself: the daemon pushes new views (udev events, set changes, mounts)."""
        return False

    def update(self, view: VolumeView) -> None:
        """Take the new view and emit what changed."""
        if view != self.view:
            self.view = view
            self.refresh()

    @dbus_property(access=R)
    def Path(self) -> DBusStr:
        """The device node (/dev/mapper/NAME for device-mapper devices) or the file."""
        return self.view.path

    @dbus_property(access=R)
    def Size(self) -> DBusUInt64:
        """Size in bytes (0 if it cannot be read)."""
        return self.view.size

    @dbus_property(access=R)
    def Type(self) -> DBusStr:
        """'disk', 'part', 'loop' (with a backing file), 'lvm', 'dm', 'md' or 'file'."""
        return self.view.type

    @dbus_property(access=R)
    def FsType(self) -> DBusStr:
        """File system or other signature found on it (ID_FS_TYPE or blkid; '' if none)."""
        return self.view.fstype

    @dbus_property(access=R)
    def Mounted(self) -> DBusBool:
        """Whether the volume itself is mounted."""
        return self.view.mounted

    @dbus_property(access=R)
    def Holders(self) -> Strings:
        """Devices stacked on it (device-mapper, md), as /dev/NAME."""
        return [f"/dev/{h}" for h in self.view.holders]

    @dbus_property(access=R)
    def UsedBy(self) -> DBusObjectPath:
        """The set or overflow volume using it, '/' if none."""
        return self.view.used_by

    @dbus_property(access=R)
    def Available(self) -> DBusBool:
        """Whether it could be a volume of a new set now."""
        return self.view.available

    @dbus_property(access=R)
    def Unsuitable(self) -> DBusStr:
        """Why it cannot be a volume of a new set ('' if it can): used by a set, mounted at
        a place, holds the root file system, has partitions, held by, read-only, served by
        ptcopy, removed."""
        return self.view.unsuitable
