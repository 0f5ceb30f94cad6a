#!/usr/bin/env bash
# Install everything and run the whole test suite (what CI runs through .ci/run):
#
#   sudo bash scripts/test.sh
#
# Steps: setup.sh, then a quick tier without root first: tests/unit as the user nobody (seconds;
# no bus, no devices), ruff, mypy, then pytest on the root tiers (tests/engine,
# tests/integration/{daemon,cli,userspace,udev}, tests/remote (hosts in network namespaces reached
# over SSH), tests/cockpit (the Cockpit page in headless Chromium), tests/reliability and the VM
# tier in tests/vm:
# qemu boots of Debian's kernel for the device-mapper paths, and tests/vm/test_package.py: the
# Debian package built and checked by lintian, installed with apt on a clean Debian 12 booted with
# systemd), then a sanitizer pass: the C engine rebuilt with AddressSanitizer + UBSan into
# build/asan/ and the engine tests (not the slow ones) run against it, on the host and, for the
# kernel data path, in the VM. Stops at the first failing step with a non-zero exit status.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
VENV="$REPO/.venv"
ASAN_DIR="$REPO/build/asan"

step_no=0
step() {
    step_no=$((step_no + 1))
    printf '\n======== [%d/8] %s ========\n' "$step_no" "$*"
}
fail() {
    echo "test.sh: FAILED in step [$step_no/8]: $*" >&2
    exit 1
}

step "setup: Debian packages, virtualenv, editable install + C engine build"
bash "$REPO/scripts/setup.sh" || fail "scripts/setup.sh"

step "pytest: the unit tier without root (tests/unit, as nobody)"
# Feedback in seconds before the root tiers. As nobody when run as root and nobody can read the
# tree (chmod -R a+rX) and run the virtualenv's Python (made from a python3 nobody can reach);
# otherwise as the user running this script, with a note.
unit=("$VENV/bin/pytest" -q -p no:cacheprovider tests/unit)
if [[ $(id -u) -ne 0 ]]; then
    "${unit[@]}" || fail "pytest tests/unit"
elif runuser -u nobody -- "$VENV/bin/python" -c "open('$REPO/pyproject.toml').close()" \
    2>/dev/null; then
    runuser -u nobody -- "${unit[@]}" || fail "pytest tests/unit (as nobody)"
else
    echo "test.sh: nobody cannot read $REPO or run $VENV/bin/python: the unit tier runs as root" >&2
    "${unit[@]}" || fail "pytest tests/unit"
fi

step "ruff check"
"$VENV/bin/ruff" check "$REPO" || fail "ruff found problems"

step "mypy (strict, package ptcopy)"
"$VENV/bin/mypy" || fail "mypy found problems"

step "pytest: the root tiers (engine, integration, remote, cockpit, reliability, vm)"
# Their uid-65534 tests run the checkout's client as nobody: say so now rather than fail them one
# by one when a parent directory is closed to others (mktemp -d makes 0700 directories).
if [[ $(id -u) -eq 0 ]] && ! setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$VENV/bin/python" -c "open('$REPO/pyproject.toml').close()" 2>/dev/null; then
    fail "nobody (uid 65534) cannot read $REPO or run $VENV/bin/python, and the root tiers' \
unprivileged tests need it: make $REPO and each directory above it searchable by others (o+x)"
fi
# The console script, not `python -m pytest`: that would put the current directory on sys.path.
"$VENV/bin/pytest" -q --ignore=tests/unit tests || fail "pytest"

step "sanitizer build: C engine with ASan + UBSan into build/asan/"
# A copy of the package (without the normal build's extension) with the sanitized extension built
# inside it; PYTHONPATH=build/asan then makes `import ptcopy` pick this copy.
rm -rf "$ASAN_DIR"
mkdir -p "$ASAN_DIR"
rsync -a --exclude '*.so' --exclude '__pycache__' "$REPO/ptcopy" "$ASAN_DIR/" ||
    fail "copying ptcopy/ into $ASAN_DIR"
# Python's own CFLAGS, which every extension inherits, carry -DNDEBUG and -fwrapv: -UNDEBUG keeps
# the engine's assert()s, and -fno-wrapv makes signed overflow undefined again so UBSan reports it.
if ! PTCOPY_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -UNDEBUG -fno-wrapv" \
    PTCOPY_LDFLAGS="-fsanitize=address,undefined" \
    "$VENV/bin/python" "$REPO/cffi_build/build_engine.py" --tmpdir "$ASAN_DIR" \
    >"$ASAN_DIR/build.log" 2>&1; then
    tail -n 60 "$ASAN_DIR/build.log" >&2
    fail "sanitizer build (full log: $ASAN_DIR/build.log)"
fi
ls "$ASAN_DIR"/ptcopy/_engine*.so

step "pytest under ASan + UBSan: tests/engine, not slow"
LIBASAN=$(gcc -print-file-name=libasan.so)
[[ -e "$LIBASAN" ]] || fail "libasan.so not found (gcc -print-file-name=libasan.so gave '$LIBASAN')"
# Python is not built with ASan, so the runtime is preloaded; Python's own allocations are never
# freed at exit by design, hence no leak detection. tests/conftest.py checks, with
# PTCOPY_EXPECT_ASAN=1, that the sanitized extension is really the one imported.
# --capture=sys: with pytest's default fd-level capture, a sanitizer report (written to fd 2 just
# before the process exits) would be swallowed and the step would fail without saying why.
PYTHONPATH="$ASAN_DIR" \
    LD_PRELOAD="$LIBASAN" \
    ASAN_OPTIONS="detect_leaks=0" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    PTCOPY_EXPECT_ASAN=1 \
    "$VENV/bin/pytest" -q --capture=sys -m "not slow" tests/engine || fail "pytest under ASan + UBSan"

step "kernel data path under ASan + UBSan: the guest tests in the VM tier"
# Only a real kernel's device-mapper replies exercise the engine's ioctl parsing.
"$VENV/bin/python" -m tests.vm.asan_guest || fail "guest tests under ASan + UBSan"
