# Stub for the cffi API-mode extension built from cffi_build/. Its objects are dynamic; the
# typed surface is ptcopy.engine, the only module that imports this one.
from typing import Any

ffi: Any
lib: Any
