"""The kernel data path's guest tests (tests/vm/guest/test_kernel_*.py), run in one boot of the
VM; each guest test is reported here as a host test of the same name, so a failure names the
guest test and carries its message."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import vmkit

GUEST = Path(__file__).parent / "guest"
FILES = sorted(GUEST.glob("test_kernel_*.py"))


def _guest_tests() -> list[str]:
    """'<module>::<test>' for every test function of the guest files, read without importing
    them (they need the guest's device-mapper)."""
    names = []
    for f in FILES:
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.append(f"tests.vm.guest.{f.stem}::{node.name}")
    return names


@pytest.fixture(scope="module")
def guest_run(vm_kit: vmkit.Kit) -> vmkit.GuestPytestResult:
    paths = [str(f.relative_to(vmkit.REPO)) for f in FILES]
    return vmkit.run_guest_pytest(paths, timeout=900, mem_mib=1024)


def test_every_guest_test_ran(guest_run: vmkit.GuestPytestResult) -> None:
    assert sorted(guest_run.tests) == sorted(_guest_tests()), guest_run.describe()
    assert guest_run.guest.returncode is not None, guest_run.describe()


@pytest.mark.parametrize("name", _guest_tests(), ids=lambda n: n.split("::")[1])
def test_in_guest(guest_run: vmkit.GuestPytestResult, name: str) -> None:
    outcome = guest_run.tests.get(name)
    assert outcome is not None, f"{name} did not run in the guest\n{guest_run.describe()}"
    assert outcome.outcome == "passed", f"{name} {outcome.outcome}:\n{outcome.message}"
