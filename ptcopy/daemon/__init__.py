"""ptcopyd: the system daemon that owns sets, groups and overflow volumes and serves them on
D-Bus as ``org.ptcopy.Imaging1``."""
