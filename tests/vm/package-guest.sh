#!/bin/bash
# The package test's guest side (tests/vm/test_package.py): runs as root in a clean Debian 12
# booted with systemd, from the oneshot unit pkgtest-guest.service, with no network. The host put
# ptcopy_*.deb in /root/pkgtest and checked beforehand, in a chroot, that apt installs it with its
# dependencies from the archive (then purged it again: those dependencies stay installed).
#
# Every check prints "PKGVM <nonce>: ok: WHAT" or "PKGVM <nonce>: FAIL: WHAT" and the end
# "PKGVM-EXIT <nonce>: STATUS"; then the guest powers off. (The unit is named without "ptcopy",
# so that the purge check, which looks for anything named ptcopy, does not find it.)
set -uo pipefail

T=/root/pkgtest
nonce=$(cat "$T/nonce")
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
# plain output on the serial console, which is a terminal
export NO_COLOR=1 TERM=dumb COLUMNS=100
step=""

say() { echo "PKGVM $nonce: $*"; }
finish() {
    echo "PKGVM-EXIT $nonce: $1"
    sync
    systemctl poweroff --no-block
    exit "$1"
}
fail() {
    say "FAIL: $step: $*"
    echo "--- ptcopyd's journal:"
    journalctl -b -u ptcopyd --no-pager -o cat | tail -n 40
    finish 1
}
ok() { say "ok: $step"; }
# run CMD...: CMD's output shown, its status returned
run() {
    echo "+ $*"
    "$@"
}

# Every file outside what logs, caches, package bookkeeping and the running system change.
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /var/tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/apt \
        -o -path /var/lib/dpkg -o -path /var/lib/systemd -o -path /var/lib/polkit-1 \
        -o -path "$T" -o -path /lost+found -o -path /etc/ld.so.cache \) -prune -o -print |
        sort
}

active() { [[ $(systemctl is-active ptcopyd.service) == active ]]; }

step="the package is not installed at boot (the host installed it in a chroot, then purged it)"
dpkg-query -W -f='${Status}' ptcopy 2>/dev/null | grep -q 'install ok installed' &&
    fail "ptcopy is installed"
ok
snapshot >"$T/before.txt"

step="apt-get install ./ptcopy_*.deb (offline: the dependencies are installed already)"
deb=$(ls "$T"/ptcopy_*.deb)
run apt-get install -y -q -o Acquire::http::Proxy=http://127.0.0.1:9 "$deb" ||
    fail "apt-get install"
ok

step="the installation did not start ptcopyd"
active && fail "ptcopyd.service is active before any call"
ok

step="ptcopy version: D-Bus activation starts ptcopyd"
run ptcopy version || fail "ptcopy version failed"
active || fail "ptcopyd.service is not active after the first call"
run ptcopy version --json | grep -q '"daemon"' || fail "ptcopy version --json names no daemon"
ok

step="a dependent set on file volumes: enable, update, status"
vols=/var/lib/ptcopy/volumes
[[ -d $vols ]] || fail "$vols does not exist (ptcopyd's default file-volume directory)"
# (on the kernel data path a full-size dependent shadow holds dm-snapshot's metadata too)
truncate -s 16M "$vols/m.img" && truncate -s 20M "$vols/s.img" && truncate -s 4M "$vols/b.img" ||
    fail "truncate"
run ptcopy enable --dependent "$vols/m.img" "$vols/s.img" "$vols/b.img" --name pkg ||
    fail "enable"
run ptcopy update pkg --to shadow --wait || fail "update"
run ptcopy status pkg || fail "status"
run ptcopy status pkg --json | grep -q '"pkg"' || fail "status --json does not name the set"
ok

step="user nobody reads (status) but may not change (update): bus policy and polkit action"
run runuser -u nobody -- ptcopy status pkg || fail "status as nobody failed"
out=$(runuser -u nobody -- ptcopy update pkg --to shadow --wait 2>&1)
rc=$?
echo "$out"
[[ $rc -ne 0 ]] || fail "update as nobody succeeded"
grep -qi "not authorized" <<<"$out" || fail "update as nobody failed, but not as not authorized"
if command -v pkaction >/dev/null; then
    run pkaction --action-id org.ptcopy.imaging.manage --verbose || fail "pkaction"
fi
ok

step="systemctl stop ptcopyd stops it cleanly; the next call activates it again"
run systemctl stop ptcopyd.service || fail "systemctl stop"
active && fail "still active after stop"
result=$(systemctl show -p Result --value ptcopyd.service)
[[ $result == success ]] || fail "the stop ended with Result=$result"
run ptcopy status pkg || fail "status after the stop"
active || fail "ptcopyd.service is not active after the call that followed the stop"
ok

step="the backup-disk rule: a partition named ptcopy-update-nightly appears, the group is updated"
run ptcopy group create nightly pkg || fail "group create"
# backup.img: a GPT disk image the host made, its one partition named ptcopy-update-nightly;
# attached now, after the package installed the rule, its partition is a new device to udev.
loop=$(losetup -P -f --show "$T/backup.img") || fail "losetup"
udevadm settle
unit=ptcopy-update@nightly.service
# The unit is unloaded once it has run (systemctl show then tells nothing), and the guest's
# systemd logs only warnings: the journal has ptcopy's own last line, and systemd's failure
# message if it failed.
journal() { journalctl -b -u "$unit" --no-pager -o cat; }
for _ in $(seq 90); do
    journal | grep -Eq 'to the shadow: done|Failed with result|ptcopy: error' && break
    sleep 2
done
run udevadm info -q property "${loop}p1" | grep -E 'ID_PART_ENTRY_NAME'
run journal
journal | grep -q 'update of group nightly to the shadow: done' ||
    fail "$unit did not run, or did not say the update was done"
journal | grep -Eq 'Failed with result|ptcopy: error' && fail "$unit failed"
run ptcopy group list || fail "group list"
losetup -d "$loop"
run ptcopy group delete nightly || fail "group delete"
ok

step="the units are valid (ptcopy-update@ as the instance the udev rule would start)"
mkdir -p /run/pkgtest
cp /lib/systemd/system/ptcopy-update@.service /run/pkgtest/ptcopy-update@nightly.service
# (--man=no: the man pages the units name are checked with man, which a minimal system lacks)
run systemd-analyze verify --man=no /lib/systemd/system/ptcopyd.service \
    /run/pkgtest/ptcopy-update@nightly.service || fail "systemd-analyze verify"
rm -rf /run/pkgtest
ok

step="apt-get purge ptcopy leaves nothing behind"
run ptcopy disable pkg || fail "disable"
rm -f "$vols"/*.img
run apt-get purge -y -q ptcopy || fail "apt-get purge"
active && fail "ptcopyd.service is still active after the purge"
snapshot >"$T/after.txt"
left=$(comm -13 "$T/before.txt" "$T/after.txt")
gone=$(comm -23 "$T/before.txt" "$T/after.txt")
[[ -z $left ]] || fail "files the purge left behind: $left"
[[ -z $gone ]] || fail "files that were there before the installation and are gone: $gone"
named=$(find / -xdev \( -path /proc -o -path /sys -o -path "$T" -o -path /var/cache/apt \
    -o -path /var/lib/dpkg -o -path /var/log \) -prune -o -iname '*ptcopy*' -print)
[[ -z $named ]] || fail "files named ptcopy after the purge: $named"
ok

finish 0
