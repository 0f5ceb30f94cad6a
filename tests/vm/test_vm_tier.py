"""The VM test tier itself (vmkit.py): the guest boots with device-mapper, reports the command's
exit status and output, keeps what it wrote to its disks, can be killed mid-run, and runs pytest
with per-test results coming back."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.vm import vmkit

MIB = 1 << 20
SECTOR = 512


def test_guest_has_the_dm_targets(vm_kit: vmkit.Kit) -> None:
    r = vmkit.run_guest("test -c /dev/mapper/control && dmsetup targets", timeout=120)
    assert r.returncode == 0, r.describe()
    wanted = {"snapshot", "snapshot-origin", "snapshot-merge", "era", "linear"}
    assert wanted <= r.dm_targets, r.describe()
    # the command's own dmsetup, run in the host's root, lists the same targets
    listed = {line.split()[0] for line in r.output.splitlines() if line.strip()}
    assert listed == r.dm_targets, r.describe()


def test_exit_status_output_and_environment(vm_kit: vmkit.Kit) -> None:
    r = vmkit.run_guest('echo "$PTCOPY_IN_VM $DM_DISABLE_UDEV $HOME $PWD"; exit 3', timeout=120)
    assert r.returncode == 3, r.describe()
    assert r.output == f"1 1 /tmp {vmkit.REPO}\n", r.describe()
    assert not r.killed and not r.timed_out


def test_disks_keep_their_data_across_boots(
        vm_kit: vmkit.Kit, tmp_vol: Callable[..., Path]) -> None:
    a, b = tmp_vol(4 * MIB), tmp_vol(4 * MIB)
    token_a, token_b, token_host = (secrets.token_hex(16) for _ in range(3))
    write = (f"printf {token_a} | dd of=/dev/vda bs={SECTOR} seek=8 conv=notrunc 2>/dev/null && "
             f"printf {token_b} | dd of=/dev/vdb bs={SECTOR} seek=8 conv=notrunc 2>/dev/null && "
             "sync")
    r1 = vmkit.run_guest(write, disks=[a, b], timeout=120)
    assert r1.returncode == 0, r1.describe()
    # /dev/vda is the first image, /dev/vdb the second
    assert a.read_bytes()[8 * SECTOR:8 * SECTOR + 32] == token_a.encode()
    assert b.read_bytes()[8 * SECTOR:8 * SECTOR + 32] == token_b.encode()

    with a.open("r+b") as f:  # and the guest sees what the host wrote between boots
        f.seek(100 * SECTOR)
        f.write(token_host.encode())
    read = " && ".join(f"dd if={dev} bs={SECTOR} skip={at} count=1 2>/dev/null | head -c 32 "
                       "&& echo" for dev, at in (("/dev/vda", 8), ("/dev/vdb", 8),
                                                 ("/dev/vda", 100)))
    r2 = vmkit.run_guest(read, disks=[a, b], timeout=120)
    assert r2.returncode == 0, r2.describe()
    assert r2.output.split() == [token_a, token_b, token_host], r2.describe()


def test_kill_on_a_console_line(vm_kit: vmkit.Kit) -> None:
    r = vmkit.run_guest("echo SPINNING-NOW; while :; do :; done", kill_on=r"^SPINNING-NOW$",
                        kill_delay=0.5, timeout=120)
    assert r.killed and not r.timed_out, r.describe()
    assert r.returncode is None
    assert "SPINNING-NOW" in r.output
    assert f"PTVM-EXIT {r.nonce}" not in r.console
    assert r.seconds < 60, r.describe()


def test_guest_pytest_sample_passes(vm_kit: vmkit.Kit) -> None:
    r = vmkit.run_guest_pytest(["tests/vm/guest/test_guest_sample.py"], timeout=300)
    assert r.ok, r.describe()
    assert sorted(r.tests) == [
        "tests.vm.guest.test_guest_sample::test_dmsetup_lists_era",
        "tests.vm.guest.test_guest_sample::test_mapper_control_exists",
    ], r.describe()


def test_junit_outcomes_are_read_back(tmp_path: Path) -> None:
    """parse_junit tells failures, errors and skips from passes (on the host: no VM needed)."""
    (tmp_path / "test_outcomes.py").write_text(
        "import pytest\n"
        "@pytest.fixture\n"
        "def broken():\n"
        "    raise RuntimeError('fixture broke')\n"
        "def test_pass(): pass\n"
        "def test_fail(): assert 1 == 2, 'one is not two'\n"
        "def test_skip(): pytest.skip('not here')\n"
        "def test_error(broken): pass\n"
    )
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={junit}", "--rootdir", str(tmp_path), str(tmp_path)],
                   cwd=tmp_path, capture_output=True, check=False)
    tests = vmkit.parse_junit(junit)
    outcomes = {name.rsplit("::", 1)[1]: t.outcome for name, t in tests.items()}
    assert outcomes == {"test_pass": "passed", "test_fail": "failed", "test_skip": "skipped",
                        "test_error": "error"}
    messages = {name.rsplit("::", 1)[1]: t.message for name, t in tests.items()}
    assert "one is not two" in messages["test_fail"]
    assert "fixture broke" in messages["test_error"]
    assert "not here" in messages["test_skip"]
