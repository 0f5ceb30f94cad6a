"""What the test tiers share, one module per job (imported as ``tests.helpers.<module>``):

names      the repository's files, the D-Bus contract's names, sizes
bus        a private dbus-daemon with the shipped policy
daemon     a ptcopyd process on that bus, checked when it stops
client     a dbus-fast client, the session's event loop, signal collectors
blockio    O_DIRECT reads and writes, digests and comparisons of devices
system     running tools, file systems, mount tables
fixtures   the pytest hooks and fixtures of the root tiers with a private bus
udev       loop devices made during a test, systemd-udevd when none runs
userspace  the userspace data-path tests' harness, trees of files
cli        the CLI tests' runner (in-process or a subprocess, a pseudo-terminal)
fakes      a fake D-Bus client for the CLI unit tests (no bus, no root)
"""
