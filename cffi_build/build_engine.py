"""cffi builder (API mode) for ptcopy's C engine: the extension module ``ptcopy._engine``.

Inputs, all in this directory:
  ptcopy_engine.h   the engine's public headers: the core contract (sets, overflow volumes),
  ptcopy_fuse.h     the userspace path's FUSE server and the kernel path's device-mapper calls.
  ptcopy_dm.h       Each is included by the generated wrapper and, less comments and
                    preprocessor lines, its declarations are what cffi exposes to Python (in
                    this order: the other two build on the core's types)
  *.c, *.h          the engine's sources and private headers, compiled into the same extension

Used two ways:
  * by setuptools through ``setup(cffi_modules=["cffi_build/build_engine.py:ffibuilder"])``
    (``pip install -e .`` builds the module in place, next to ptcopy/);
  * directly, ``python cffi_build/build_engine.py --tmpdir DIR``, which builds
    DIR/ptcopy/_engine*.so (scripts/test.sh does this for the sanitizer build in build/asan/).

Extra compiler and linker flags come from the environment variables PTCOPY_CFLAGS and
PTCOPY_LDFLAGS (split like a shell would); they come after the defaults, so they win.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
from pathlib import Path

import cffi

# Under setuptools, cffi runs this file with a __file__ relative to the project root and the
# current directory there; ffibuilder.compile() changes directory into its tmpdir. Absolute
# paths keep both working whatever the current directory is.
HERE = Path(__file__).resolve().parent
REPO = HERE.parent

MODULE_NAME = "ptcopy._engine"
PUBLIC_HEADERS = ("ptcopy_engine.h", "ptcopy_fuse.h", "ptcopy_dm.h")

# The generated wrapper is compiled with the same flags as the engine's own sources; it compiles
# cleanly with -Wall -Wextra -Werror, so no -Wno-... is needed.
BASE_CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-pthread"]
BASE_LDFLAGS = ["-pthread"]


def _env_flags(name: str) -> list[str]:
    return shlex.split(os.environ.get(name, ""))


def _pkg_config(option: str, prefix: str) -> list[str]:
    """Flags for libfuse3 (the FUSE data path) from pkg-config, without their prefix."""
    try:
        out = subprocess.run(["pkg-config", option, "fuse3"], check=True, capture_output=True,
                             text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(
            "build_engine.py: libfuse3's development files are missing: install the Debian "
            "packages libfuse3-dev and pkg-config (scripts/setup.sh does)"
        ) from None
    return [f[len(prefix):] for f in shlex.split(out) if f.startswith(prefix)]


def _header_cdef(name: str) -> str:
    """One public header as cdef text: the header less what cffi's parser does not take:
    comments, include guards and includes; constants become ``...`` so the compiler supplies
    them."""
    path = HERE / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SystemExit(f"build_engine.py: {path} is missing") from None
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    for line in text.splitlines():
        if re.match(r"\s*#\s*(ifndef|endif|include|if|else)\b", line):
            continue
        m = re.match(r"\s*#\s*define\s+(\w+)\s+\S", line)
        if m:
            lines.append(f"#define {m.group(1)} ...")
        elif not re.match(r"\s*#\s*define\s+\w+\s*$", line):
            lines.append(line)
    return "\n".join(lines)


def _read_cdef() -> str:
    """The cdef: every public header's declarations, core first."""
    return "\n".join(_header_cdef(name) for name in PUBLIC_HEADERS)


def _sources() -> list[str]:
    sources = sorted(str(p) for p in HERE.glob("*.c"))
    if not sources:
        raise SystemExit(f"build_engine.py: no C sources (*.c) found in {HERE}")
    return sources


def make_builder() -> cffi.FFI:
    builder = cffi.FFI()
    builder.cdef(_read_cdef())
    builder.set_source(
        MODULE_NAME,
        "\n".join(f'#include "{name}"' for name in PUBLIC_HEADERS),
        sources=_sources(),
        include_dirs=[str(HERE), *_pkg_config("--cflags-only-I", "-I")],
        extra_compile_args=BASE_CFLAGS + _env_flags("PTCOPY_CFLAGS"),
        extra_link_args=BASE_LDFLAGS + _env_flags("PTCOPY_LDFLAGS"),
        libraries=_pkg_config("--libs-only-l", "-l"),
    )
    return builder


ffibuilder = make_builder()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=f"Build {MODULE_NAME} into DIR/ptcopy/ (for a separate, e.g. sanitized, build)."
    )
    parser.add_argument(
        "--tmpdir",
        metavar="DIR",
        default=str(REPO / "build" / "engine"),
        help="build directory; the module lands in DIR/ptcopy/ (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    tmpdir = Path(args.tmpdir).resolve()
    tmpdir.mkdir(parents=True, exist_ok=True)
    output = ffibuilder.compile(tmpdir=str(tmpdir), verbose=True)
    print(f"build_engine.py: built {output}")


if __name__ == "__main__":
    main()
