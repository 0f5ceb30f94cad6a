"""Reaching another host's ptcopyd: over SSH to that host's system bus, as ``busctl -H`` does.

``targets`` says where a host is (an SSH destination, or a name registered with ptcopyd);
``ssh`` builds the one ssh command line ptcopy ever runs and explains its failures;
``tunnel`` carries one D-Bus connection through it, so dbus-fast (which speaks only ``unix:``
and ``tcp:`` addresses) connects to a private local socket.

The remote side sees the SSH login, never this host's uid: a remote operation is authorized
there exactly as if the user had logged in and run it (docs/remote-hosts.md).
"""
