#!/usr/bin/env bash
# Make the clean Debian 12 root the package test boots (tests/vm/test_package.py), as root;
# scripts/setup.sh runs it:
#
#   bash scripts/package-root.sh
#
# Cache (${PTCOPY_VM_CACHE:-/var/cache/ptcopy-vm}/package-root/):
#   root.tar       a Debian 12 root made by mmdebstrap from Debian's archive: systemd as init,
#                  dbus, apt with its package lists, and in apt's cache (not installed) the .debs of
#                  everything debian/control says the ptcopy package depends on or recommends, so
#                  `apt-get install ./ptcopy_*.deb` resolves them from the archive with no network
#   modules.tar    usr/lib/modules/<kver> of the VM tier's kernel (tests/vm/prepare-kernel.sh), the
#                  directories a systemd guest loads from (fuse, loop, dm, virtio, ext4, ...)
#   .complete      what it was made from (kernel, dependency list, this script): made again when
#                  one of them changes, otherwise nothing is done
# Needs the VM tier's kernel cache first (setup.sh runs prepare-kernel.sh before this).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${PTCOPY_VM_CACHE:-/var/cache/ptcopy-vm}
OUT=$CACHE/package-root
MIRROR=${PTCOPY_DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() {
    echo "package-root.sh: ERROR: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run me as root"
kver=$(readlink "$CACHE/current") || die "no VM tier kernel in $CACHE: run tests/vm/prepare-kernel.sh"

# The binary package's Depends and Recommends without substitution variables and versions, plus
# python3 (${python3:Depends}) and what the test itself drives.
deps=$(sed -n '/^Package: ptcopy$/,/^$/p' "$REPO/debian/control" |
    sed -n '/^\(Depends\|Recommends\):/,/^[A-Z][a-z-]*:/p' |
    grep -v '^Description:' | sed 's/^[A-Za-z-]*://' | tr ',|' '\n\n' |
    sed 's/(.*)//; s/\[.*\]//; s/[[:space:]]//g' | grep -v '^\$' | grep -v '^$' | sort -u |
    tr '\n' ' ')
deps="python3 $deps"
# The guest: systemd as init and what the test uses (losetup/mkfs come with util-linux and
# e2fsprogs; runuser and setpriv with util-linux).
BASE=systemd-sysv,dbus,apt,e2fsprogs,kmod,procps,udev
STAMP="kernel $kver; base $BASE; deps $deps; script $(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

if [[ -f $OUT/.complete && $(<"$OUT/.complete") == "$STAMP" ]]; then
    echo "package-root.sh: Debian 12 root already in $OUT"
    exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap not found (Debian's mmdebstrap)"

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.package-root.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "package-root.sh: making a Debian 12 root with mmdebstrap (dependencies: $deps)"
# The customize hook fills apt's cache with the dependencies and what they recommend, as a plain
# `apt install` in the root takes them (mmdebstrap's own apt settings leave recommends out),
# downloaded but not installed; skipping the cleanup keeps them and the package lists.
# shellcheck disable=SC2016 # "$1" is mmdebstrap's, expanded by its hook shell
mmdebstrap --variant=minbase --include="$BASE" \
    --skip=cleanup/apt/lists --skip=cleanup/apt/cache \
    --customize-hook='chroot "$1" apt-get install -y -q --download-only -o APT::Install-Recommends=true '"$deps" \
    --customize-hook='echo ptcopy-test > "$1/etc/hostname"' \
    bookworm "$work/root.tar" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb ${PTCOPY_DEBIAN_SECURITY:-http://deb.debian.org/debian-security} bookworm-security main"

# Kernel modules of the VM tier's kernel, for the guest's systemd-udevd and modprobe.
echo "package-root.sh: kernel modules of linux-image-$kver"
(cd "$work" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$kver")
debs=("$work"/linux-image-"$kver"_*.deb)
[[ -f ${debs[0]} ]] || die "apt-get download left no linux-image-$kver package"
mkdir "$work/m"
k=./lib/modules/$kver
dpkg-deb --fsys-tarfile "${debs[0]}" |
    tar -x -C "$work/m" "$k/modules.order" "$k/modules.builtin" "$k/modules.builtin.modinfo" \
        "$k/kernel/fs" "$k/kernel/drivers/md" "$k/kernel/drivers/block" \
        "$k/kernel/drivers/virtio" "$k/kernel/drivers/char" "$k/kernel/lib" "$k/kernel/crypto" \
        "$k/kernel/net/9p" "$k/kernel/arch"
depmod -b "$work/m" "$kver"
# The root is merged-/usr (/lib -> usr/lib): the archive holds usr/lib/modules, never a ./lib
# directory that would replace that link when unpacked.
mkdir -p "$work/mu/usr/lib"
mv "$work/m/lib/modules" "$work/mu/usr/lib/"
tar -C "$work/mu" -cf "$work/modules.tar" usr

mkdir -p "$OUT"
mv "$work/root.tar" "$work/modules.tar" "$OUT/"
echo "$STAMP" >"$OUT/.complete"
echo "package-root.sh: Debian 12 root ready in $OUT"
