"""org.ptcopy.Imaging1.IIOverflow: an overflow volume shared by compact dependent sets. The
object holds the Service and the overflow volume's id."""

from typing import Any

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import DBusBool, DBusStr, DBusUInt64, dbus_property, method
from ptcopy.daemon.dbus.args import Options, Paths, R
from ptcopy.daemon.dbus.bus import IFACE
from ptcopy.daemon.dbus.calls import authorized
from ptcopy.daemon.dbus.context import Context
from ptcopy.daemon.dbus.errors import translated
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.paths import set_path
from ptcopy.daemon.service import Service


class IIOverflow(Interface):
    """An overflow volume shared by compact dependent sets."""

    def __init__(self, service: Service, ov_id: str, ctx: Context) -> None:
        super().__init__(IFACE + ".IIOverflow")
        self.service = service
        self.id = ov_id
        self.ctx = ctx

    def _st(self) -> Any:
        mo = self.service.overflows[self.id]
        return mo.ov.status() if mo.ov is not None and not mo.ov.closed else None

    @dbus_property(access=R)
    def Path(self) -> DBusStr:
        """The volume."""
        return self.service.overflows[self.id].row.path

    @dbus_property(access=R)
    def Sets(self) -> Paths:
        """The sets attached to it."""
        return [set_path(s) for s in sorted(self.service.overflows[self.id].sets)]

    @dbus_property(access=R)
    def ChunksTotal(self) -> DBusUInt64:
        """Chunks it can hold."""
        st = self._st()
        return int(st.chunks_total) if st is not None else 0

    @dbus_property(access=R)
    def ChunksUsed(self) -> DBusUInt64:
        """Chunks in use."""
        st = self._st()
        return int(st.chunks_used) if st is not None else 0

    @dbus_property(access=R)
    def CountersValid(self) -> DBusBool:
        """False after an unclean stop until every attached set has been reopened."""
        st = self._st()
        return bool(st.counters_valid) if st is not None else False

    @method()
    @translated
    async def Delete(self, options: Options) -> None:
        """Wipe the overflow volume's header (refused while sets are attached)."""
        await authorized(self.ctx, options, "delete overflow volumes",
                         self.service.delete_overflow, self.id)
