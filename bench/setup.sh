#!/usr/bin/env bash
# Install what bench/run_datapath.py drives besides ptcopy itself, as root, on Debian 12:
#
#   sudo bash bench/setup.sh
#
#   fio                 the load generator (libaio, O_DIRECT, JSON output)
#   qemu-system-common  qemu-storage-daemon, the FUSE export ptcopy is compared with
#   qemu-utils          qemu-img (handy to inspect images; qsd needs no image format here)
#
# Idempotent: installs only what is missing, and runs `apt-get update` only then. Quiet on
# success. ptcopy itself (and losetup, FUSE 3) come from scripts/setup.sh.
set -euo pipefail

PACKAGES=(fio qemu-system-common qemu-utils)

die() {
    echo "bench/setup.sh: ERROR: $*" >&2
    exit 1
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
((${#missing[@]})) || exit 0

[[ $(id -u) -eq 0 ]] || die "${missing[*]} missing; run me as root (sudo bash bench/setup.sh)"
command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
LOG=$(mktemp -t ptcopy-bench-setup.XXXXXX)
trap 'rm -f "$LOG"' EXIT
export DEBIAN_FRONTEND=noninteractive
echo "bench/setup.sh: installing ${missing[*]}" >&2
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "installing ${missing[*]} failed"
fi
for tool in fio qemu-storage-daemon qemu-img; do
    command -v "$tool" >/dev/null || die "$tool is still missing after installing ${missing[*]}"
done
