"""The kernel data path's guest tests (tests/vm/guest/test_kernel_*.py), run in one boot of the
VM; each guest test is reported here as a host test of the same name, so a failure names the
guest test and carries its message."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.vm import vmkit

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
    return vmkit.run_guest_pytest(paths, timeout=1800, mem_mib=1024)


def _cases(run: vmkit.GuestPytestResult, name: str) -> dict[str, vmkit.CaseOutcome]:
    """The guest's results for test function name: itself, or each of its parametrized cases
    ('name[id]')."""
    return {n: o for n, o in run.tests.items() if n == name or n.startswith(name + "[")}


def test_every_guest_test_ran(guest_run: vmkit.GuestPytestResult) -> None:
    names = _guest_tests()
    assert all(_cases(guest_run, n) for n in names), guest_run.describe()
    unknown = [n for n in guest_run.tests if not any(n in _cases(guest_run, m) for m in names)]
    assert not unknown, f"guest results for no known test: {unknown}\n{guest_run.describe()}"
    assert guest_run.guest.returncode is not None, guest_run.describe()


@pytest.mark.parametrize("name", _guest_tests(), ids=lambda n: n.split("::")[1])
def test_in_guest(guest_run: vmkit.GuestPytestResult, name: str) -> None:
    cases = _cases(guest_run, name)
    assert cases, f"{name} did not run in the guest\n{guest_run.describe()}"
    for case, outcome in sorted(cases.items()):
        assert outcome.outcome == "passed", f"{case} {outcome.outcome}:\n{outcome.message}"
