"""The kernel data path's guest tests against the ASan + UBSan build of the engine, in the VM.

scripts/test.sh runs this after it built build/asan/ (the device-mapper ioctls parse what the
kernel hands back, which only a real kernel exercises). Exit status 0 when every guest test
passed under the sanitizers; the report names the failures otherwise.

    .venv/bin/python -m tests.vm.asan_guest
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

from tests.vm import vmkit

TESTS = ["tests/vm/guest/test_kernel_dependent.py", "tests/vm/guest/test_kernel_independent.py"]


def main() -> int:
    asan = vmkit.REPO / "build" / "asan"
    if not list((asan / "ptcopy").glob("_engine*.so")):
        print(f"asan_guest.py: no sanitizer build in {asan} (scripts/test.sh makes it)",
              file=sys.stderr)
        return 2
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()
    vmkit.prepare()
    results = vmkit.RESULTS / f"asan-{time.strftime('%Y%m%d-%H%M%S')}"
    results.mkdir(parents=True, exist_ok=True)
    junit = results / "junit.xml"
    # the console script, not `python -m pytest`, which would put the repository (and its
    # normal build) ahead of build/asan on sys.path; tests/conftest.py checks which one loaded
    command = shlex.join([
        "env", f"PYTHONPATH={asan}", f"LD_PRELOAD={libasan}", "ASAN_OPTIONS=detect_leaks=0",
        "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1", "PTCOPY_EXPECT_ASAN=1",
        str(vmkit.REPO / ".venv" / "bin" / "pytest"), "-q", "--color=no", "-p",
        "no:cacheprovider", "--capture=sys", f"--junitxml={junit}", *TESTS])
    guest = vmkit.run_guest(command, timeout=900, mem_mib=1024)
    tests = vmkit.parse_junit(junit) if junit.exists() else {}
    result = vmkit.GuestPytestResult(guest, junit, tests)
    print(result.describe())
    return 0 if result.ok and len(tests) >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
