"""No import cycles inside ptcopy/: the module-level imports of every module (packages and
relative imports included) form a graph without a cycle.

Only what runs at import time counts: imports in functions (a deliberate lazy import) and under
``if TYPE_CHECKING:`` do not. Importing ``a.b.c`` is an edge to ``a.b.c`` only, not to the
packages ``a`` and ``a.b`` whose ``__init__`` Python runs first: ptcopy's package ``__init__``
files import nothing, so they cannot close a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.names import REPO


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``package`` under ``root``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    out: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        elif isinstance(node, ast.If):
            if not _type_checking(node.test):
                out += _module_level(node.body)
            out += _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _module_level(node.body)
            for h in node.handlers:
                out += _module_level(h.body)
            out += _module_level(node.orelse) + _module_level(node.finalbody)
        elif isinstance(node, ast.With):
            out += _module_level(node.body)
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports at module level."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]   # the package relative imports use
    found: set[str] = set()
    for node in _module_level(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        found |= {t for t in targets if t in modules and t != name}
    return found


def find_cycles(root: Path, package: str) -> list[list[str]]:
    """Every import cycle among the modules of ``package`` (each as a list of module names,
    first == last); empty when there is none."""
    modules = module_names(root, package)
    graph = {n: sorted(imports_of(n, p, modules)) for n, p in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}          # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in graph[n]:
            if state.get(m) == 1:
                cycles.append([*stack[stack.index(m):], m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return cycles


def test_ptcopy_has_no_import_cycle() -> None:
    modules = module_names(REPO, "ptcopy")
    assert len(modules) > 20 and "ptcopy.cli.main" in modules   # it looked at the real tree
    cycles = find_cycles(REPO, "ptcopy")
    assert not cycles, "import cycles in ptcopy/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_a_cycle_through_a_relative_import_in_a_subpackage_is_found(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/leaf.py": "import os\n",
        "pkg/sub/__init__.py": "from . import a\n",
        "pkg/sub/a.py": "from pkg.leaf import x\nfrom pkg.sub.b import thing\n",
        "pkg/sub/b.py": "from .. import leaf\nfrom . import c\n",
        "pkg/sub/c.py": "from .a import y\n",
    })
    cycles = find_cycles(tmp_path, "pkg")
    assert cycles == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.c", "pkg.sub.a"]]


def test_lazy_and_type_checking_imports_are_no_cycle(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
                     "def f():\n    from pkg import a\n"),
    })
    assert find_cycles(tmp_path, "pkg") == []
    _write(tmp_path, {"pkg/b.py": "try:\n    import pkg.a\nexcept ImportError:\n    pass\n"})
    assert find_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.b", "pkg.a"]]
