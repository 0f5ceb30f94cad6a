"""The engine package's Python layer: error names and codes, the seam to the extension.

No root and no volumes: these check what ``ptcopy.engine`` promises its importers.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import ptcopy
from ptcopy import engine
from ptcopy.engine import errors
from ptcopy.engine._ffi import ffi, lib
from ptcopy.errnames import ErrorName

PACKAGE = pathlib.Path(ptcopy.__file__).parent
ENGINE_ERRORS = [c for c in vars(errors).values()
                 if isinstance(c, type) and issubclass(c, engine.PtcopyError)
                 and c is not engine.PtcopyError]


def test_every_error_is_named_by_an_error_name() -> None:
    assert {type(c.name) for c in ENGINE_ERRORS} == {ErrorName}
    assert engine.CopyInProgress.name == "Busy" and engine.WrongKind.name == "WrongType"
    assert engine.Closed.name == ErrorName.NOT_FOUND


@pytest.mark.parametrize("cls", ENGINE_ERRORS, ids=lambda c: c.__name__)
def test_a_message_alone_raises_the_code_the_engine_would(cls: type[engine.PtcopyError]) -> None:
    e = cls("what went wrong")
    assert e.message == str(e) == "what went wrong"
    assert e.code >= lib.PT_E_INVALID and errors.error_class(e.code) is cls


def test_the_two_argument_form_keeps_its_code() -> None:
    e = engine.InUse(lib.PT_E_IN_USE, "held")
    assert (e.code, e.message, e.name) == (lib.PT_E_IN_USE, "held", "InUse")
    e = engine.InvalidArgument(22, "bad")
    assert e.code == 22 and str(e) == "bad"


def test_an_error_without_a_message_is_refused() -> None:
    with pytest.raises(TypeError):
        engine.InUse(lib.PT_E_IN_USE)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        engine.InUse("a", "b")  # type: ignore[call-overload]


def test_a_failed_engine_call_raises_its_class() -> None:
    err = ffi.new("pt_error *")
    with pytest.raises(engine.NoCopy) as ei:
        errors.check(-lib.PT_E_NO_COPY, err)
    assert ei.value.code == lib.PT_E_NO_COPY
    with pytest.raises(engine.PtcopyError) as ej:
        errors.check(-lib.PT_E_ALREADY, err)
    assert type(ej.value) is engine.PtcopyError and ej.value.name == "Failed"


def test_every_public_name_resolves() -> None:
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name


def test_only_the_ffi_module_imports_the_extension() -> None:
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "ptcopy._engine" for n in names):
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert importers == ["engine/_ffi.py"]
