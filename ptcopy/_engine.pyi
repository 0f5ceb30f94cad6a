# Stub for the cffi API-mode extension built from cffi_build/. Its objects are dynamic; the
# typed surface is the package ptcopy.engine, whose module _ffi is the only importer of this one.
from typing import Any

ffi: Any
lib: Any
