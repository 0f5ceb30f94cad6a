#!/usr/bin/env bash
# Put Debian's stock kernel, which has the device-mapper targets the test machines' own kernel lacks,
# into the cache the VM test tier boots (tests/vm/vmkit.py). As root; scripts/setup.sh runs it:
#
#   bash tests/vm/prepare-kernel.sh
#
# Cache (${PTCOPY_VM_CACHE:-/var/cache/ptcopy-vm}):
#   <kver>/boot/{vmlinuz,config,System.map}-<kver>   from the package linux-image-<kver>
#   <kver>/vmlinux                                   the uncompressed kernel (boots through PVH)
#   <kver>/lib/modules/<kver>/kernel/...             only the module directories the guest loads from
#   current -> <kver>                                the kernel vmkit boots
# <kver> is the kernel the metapackage linux-image-amd64 depends on (linux-image-6.1.0-NN-amd64).
# Idempotent: nothing is downloaded when `current` already is that kernel. Older kernels are removed.
set -euo pipefail

CACHE=${PTCOPY_VM_CACHE:-/var/cache/ptcopy-vm}
# Module directories vmkit's guest module list draws from (dm targets, loop/virtio_blk, virtio-pci,
# 9p with its netfs/fscache dependencies, libcrc32c and crc32c_generic, ext4 with jbd2 and
# mbcache for file systems on served devices).
MODULE_DIRS=(drivers/md drivers/block drivers/virtio fs/9p fs/fscache fs/netfs net/9p lib crypto
             fs/ext4 fs/jbd2 fs/mbcache.ko)
# A cache made from another list is made again (the stamp records the list).
STAMP="modules: ${MODULE_DIRS[*]}"

die() {
    echo "prepare-kernel.sh: ERROR: $*" >&2
    exit 1
}

kernel_version() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -n 1
}

kver=$(kernel_version)
if [[ -z $kver ]]; then
    apt-get update -qq # no package lists yet
    kver=$(kernel_version)
fi
[[ -n $kver ]] || die "cannot tell which kernel linux-image-amd64 depends on (apt-cache depends)"

if [[ -f $CACHE/$kver/.complete && $(<"$CACHE/$kver/.complete") == "$STAMP" &&
    $(readlink "$CACHE/current" 2>/dev/null) == "$kver" ]]; then
    echo "prepare-kernel.sh: kernel $kver already in $CACHE"
    exit 0
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.prepare.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The download runs as root in a directory _apt cannot write: say so rather than get a warning.
download() {
    echo "prepare-kernel.sh: downloading linux-image-$kver"
    (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "linux-image-$kver")
}
if ! download; then
    # Package lists older than the archive name a kernel it no longer has: refresh, ask again.
    apt-get update -qq
    kver=$(kernel_version)
    download
fi
debs=("$work"/linux-image-"$kver"_*.deb)
[[ -f ${debs[0]} ]] || die "apt-get download left no linux-image-$kver package"

root="$work/$kver"
mkdir "$root"
members=(./boot)
for d in "${MODULE_DIRS[@]}"; do
    members+=("./lib/modules/$kver/kernel/$d")
done
dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$root" "${members[@]}"

# The bzImage's payload is an xz stream: booting it decompresses the kernel inside the guest, which
# costs about 3.5 s under TCG. qemu boots the uncompressed ELF directly through its PVH entry point.
vmlinuz="$root/boot/vmlinuz-$kver"
while IFS=: read -r offset _; do
    # (xz stops at the end of its stream; tail then dies of SIGPIPE, so only xz's status counts)
    if xz -dc --single-stream <(tail -c +$((offset + 1)) "$vmlinuz") >"$root/vmlinux" 2>/dev/null &&
        [[ $(head -c 4 "$root/vmlinux") == $'\x7fELF' ]]; then
        break
    fi
    rm -f "$root/vmlinux"
done < <(LC_ALL=C grep -abo $'\xfd7zXZ' "$vmlinuz")
[[ -f $root/vmlinux ]] || die "no xz-compressed ELF kernel found in $vmlinuz"

echo "$STAMP" >"$root/.complete"
rm -rf "${CACHE:?}/$kver"
mv "$root" "$CACHE/$kver"
ln -sfn "$kver" "$CACHE/.current.new"
mv -T "$CACHE/.current.new" "$CACHE/current"

# Kernels an older linux-image-amd64 pointed at are no longer booted.
for old in "$CACHE"/*; do
    [[ -L $old || $(basename "$old") == "$kver" ]] || rm -rf "$old"
done
echo "prepare-kernel.sh: kernel $kver ready in $CACHE"
