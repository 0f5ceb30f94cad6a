#!/bin/busybox sh
# /init of the VM test tier's guest (tests/vm/vmkit.py builds the initramfs around it).
#
# Loads the kernel modules in /lib/modules/order, mounts the host's root read-only and the repository
# read-write over 9p, prints the device-mapper targets, runs /ptvm/command with /bin/sh -c in a
# chroot into the host's root (working directory: the repository), prints its exit status and powers
# off. Every marker carries this boot's nonce (/ptvm/nonce) so the command's output cannot fake one.
# Anything that goes wrong before the command runs is reported as PTVM-ERROR, with no exit status.

/bin/busybox --install -s /bin
export PATH=/bin
nonce=$(cat /ptvm/nonce)
repo=$(cat /ptvm/repo)

fail() {
    echo "PTVM-ERROR $nonce: $*"
    poweroff -f
}

# run_in_host CMD...: CMD in the host's root, with the environment documented in vmkit.py.
run_in_host() {
    chroot /host /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/tmp DM_DISABLE_UDEV=1 PTCOPY_IN_VM=1 "$@"
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# A module's signature check now and then fails under a busy emulated CPU ("Key was rejected by
# service", 2 boots in about 55 in the reliability runs); the same module loads on a second try.
while read -r ko; do
    tries=0
    until insmod "/lib/modules/$ko"; do
        tries=$((tries + 1))
        [ "$tries" -lt 3 ] || fail "insmod $ko failed"
        sleep 1
    done
done </lib/modules/order

# cache=loose: nothing changes the host's root while the guest runs, and it makes Python's many
# stat() and open() calls cheap. The repository is written on one side at a time (the host waits
# for the guest to power off), so it may be cached too; `sync` below writes it back.
p9=trans=virtio,version=9p2000.L,msize=512000,cache=loose
mount -t 9p -o "$p9,ro" hostroot /host || fail "cannot mount the host's root over 9p"
mount -t proc proc /host/proc &&
    mount -t sysfs sysfs /host/sys &&
    mount -t devtmpfs devtmpfs /host/dev &&
    mkdir -p /host/dev/shm &&
    mount -t tmpfs tmpfs /host/dev/shm &&
    mount -t tmpfs tmpfs /host/tmp &&
    mount -t tmpfs tmpfs /host/run || fail "cannot mount proc, sys, dev or tmpfs in the host's root"
# A checkout under /tmp or /run lies inside the tmpfs just mounted: make its mount point there.
mkdir -p "/host$repo" 2>/dev/null
mount -t 9p -o "$p9" repo "/host$repo" || fail "cannot mount the repository $repo over 9p"

echo "PTVM-TARGETS $nonce: $(run_in_host dmsetup targets | awk '{printf "%s ", $1}')"
echo "PTVM-BEGIN $nonce"
# shellcheck disable=SC2016 # $1 and $2 belong to the inner shell
run_in_host /bin/sh -c 'cd "$1" || exit 126; exec /bin/sh -c "$2"' ptvm "$repo" \
    "$(cat /ptvm/command)" </dev/null
echo "PTVM-EXIT $nonce: $?"

sync
umount "/host$repo"
poweroff -f
