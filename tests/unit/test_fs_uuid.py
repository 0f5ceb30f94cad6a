"""A file volume's identity names its file system by the UUID udev recorded for the device
holding it, read from udev's database entry (the ID_FS_UUID line), as pyudev would give it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ptcopy.daemon import identity

DEV = os.makedev(254, 3)


def test_the_uuid_comes_from_the_entry_of_the_device(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "UDEV_DB", str(tmp_path))
    (tmp_path / "b254:3").write_text("S:disk/by-uuid/x\nI:123\nE:ID_FS_TYPE=ext4\n"
                                     "E:ID_FS_UUID=0b1c-77\nE:ID_FS_UUID_ENC=0b1c-77\nG:systemd\n")
    (tmp_path / "b254:4").write_text("E:ID_FS_UUID=other\n")
    assert identity._fs_uuid(DEV) == "0b1c-77"
    st = os.stat_result((0o100600, 42, DEV, 1, 0, 0, 4096, 0, 0, 0))
    ident = identity.file_identity(st)
    assert ident.strong == {"inode": "42", "fs_uuid": "0b1c-77", "st_dev": f"{DEV:x}"}


def test_no_entry_no_uuid_line_or_no_device_give_none(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "UDEV_DB", str(tmp_path))
    assert identity._fs_uuid(DEV) == ""                      # udevd never saw it
    (tmp_path / "b254:3").write_text("E:ID_FS_TYPE=swap\nE:ID_FS_UUID_SUB=9\n")
    assert identity._fs_uuid(DEV) == ""                      # no file system UUID
    assert identity._fs_uuid(os.makedev(0, 51)) == ""        # tmpfs: no block device
    st = os.stat_result((0o100600, 42, DEV, 1, 0, 0, 4096, 0, 0, 0))
    assert "fs_uuid" not in identity.file_identity(st).strong
