#!/usr/bin/env bash
# Install everything ptcopy needs on a Debian 12 machine, as root, and (re)build it in ./.venv.
#
#   sudo bash scripts/setup.sh
#
# Idempotent: Debian packages are installed only when one is missing (apt-get update only then),
# the VM test tier's kernel is downloaded only when its cache lacks the current one
# (tests/vm/prepare-kernel.sh), the virtualenv is reused while it works, and `pip install -e` runs
# every time so the C engine is rebuilt from the current sources. Quiet on success; on failure it
# names the step and shows the end of that step's output.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"

# Debian packages: compiler and Python headers for the cffi build (libasan/libubsan come with gcc),
# FUSE 3 for the userspace data path, and the tools the tests drive (losetup, mkfs, modprobe, rsync;
# udev and fdisk's sfdisk for volume discovery). The VM test tier (tests/vm) boots Debian's kernel
# under qemu with a busybox initramfs (xz unpacks the kernel) and drives device-mapper with dmsetup
# and thin-provisioning-tools' era_invalidate.
PACKAGES=(
    build-essential pkg-config libffi-dev
    python3 python3-dev python3-venv
    fuse3 libfuse3-dev
    util-linux mount e2fsprogs kmod rsync
    dbus dbus-daemon libglib2.0-bin systemd
    udev fdisk
    qemu-system-x86 busybox-static dmsetup thin-provisioning-tools xz-utils
    ca-certificates
    # remote hosts (ptcopy --host): the CLI runs ssh; the test hosts (tests/remote) each run
    # their own sshd in a network namespace (openssh-server, never started as a system service:
    # see "Debian packages" below)
    openssh-client openssh-server
    # the Debian package (scripts/build-package.sh): its build dependencies (debian/control),
    # lintian, and mmdebstrap for the clean Debian 12 root its VM test boots
    debhelper dh-python python3-all-dev python3-setuptools python3-cffi
    python3-dbus-fast python3-typer python3-rich python3-pyudev
    lintian mmdebstrap
    # the Cockpit page (cockpit/ptcopy, tests/cockpit): a cockpit-ws the tests start themselves
    # on a free port (never the system's cockpit.socket on 9090: see "Debian packages" below),
    # cockpit-system for the shell's PatternFly bundle, headless Chromium driven by Selenium
    cockpit-ws cockpit-bridge cockpit-system chromium chromium-driver
)

LOG=$(mktemp -t ptcopy-setup.XXXXXX)
trap 'rm -f "$LOG"' EXIT

die() {
    echo "setup.sh: ERROR: $*" >&2
    exit 1
}

# run DESCRIPTION CMD...: run CMD with its output kept in $LOG, shown only when it fails.
run() {
    local what=$1
    shift
    echo "setup.sh: $what"
    if ! "$@" >"$LOG" 2>&1; then
        echo "----- last lines of output ($*) -----" >&2
        tail -n 60 "$LOG" >&2
        echo "-----" >&2
        die "$what failed"
    fi
}

[[ $(id -u) -eq 0 ]] || die "run me as root (sudo bash scripts/setup.sh): I install Debian packages"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 (bookworm)"

# --- Debian packages -------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
# openssh-server is only there for the test hosts, which start their own sshd: installing it must
# not start (or enable for the next boot) a system sshd on port 22. A temporary policy-rc.d
# ("101: action forbidden", honoured by invoke-rc.d and deb-systemd-invoke) keeps its postinst
# from starting it (and should one start anyway, it is stopped), and /etc/ssh/sshd_not_to_be_run (a
# condition of Debian's ssh.service and /etc/init.d/ssh) keeps it from starting at boot; remove
# that file to run a system sshd.
# Both only when this script installs openssh-server: an sshd already installed is left alone.
POLICY_RC=/usr/sbin/policy-rc.d
own_policy_rc=0
drop_policy_rc() {
    if ((own_policy_rc)); then rm -f "$POLICY_RC"; fi
    rm -f "$LOG"
}
# The same for cockpit-ws, whose postinst enables and starts cockpit.socket (port 9090): the
# tests run their own cockpit-ws; the socket is disabled after installing it (systemctl enable
# --now cockpit.socket gives a system Cockpit).
new_sshd=0
new_cockpit=0
for pkg in "${missing[@]}"; do
    if [[ $pkg == openssh-server ]]; then new_sshd=1; fi
    if [[ $pkg == cockpit-ws ]]; then new_cockpit=1; fi
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    if ((new_sshd || new_cockpit)) && [[ ! -e $POLICY_RC ]]; then
        trap drop_policy_rc EXIT
        printf '#!/bin/sh\n# scripts/setup.sh: no service starts while it installs packages\nexit 101\n' \
            >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        own_policy_rc=1
    fi
    run "apt-get update" apt-get update -qq
    run "installing ${missing[*]}" \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if ((new_sshd)); then
        touch /etc/ssh/sshd_not_to_be_run
        # an existing policy-rc.d may have let it start: stop the service just installed
        if [[ -d /run/systemd/system ]]; then
            systemctl stop ssh.service ssh.socket >/dev/null 2>&1 || true
        elif [[ -s /run/sshd.pid ]]; then
            kill "$(cat /run/sshd.pid)" 2>/dev/null || true
        fi
    fi
    if ((new_cockpit)); then
        if [[ -d /run/systemd/system ]]; then
            systemctl stop cockpit.socket cockpit.service >/dev/null 2>&1 || true
        fi
        systemctl disable --quiet cockpit.socket >/dev/null 2>&1 ||
            rm -f /etc/systemd/system/sockets.target.wants/cockpit.socket
    fi
    drop_policy_rc
    own_policy_rc=0
else
    echo "setup.sh: Debian packages already installed"
fi

# --- kernel for the VM test tier ----------------------------------------------------------------
# Downloaded here so the tests never do; a no-op while the cache holds the current kernel.
run "VM test tier kernel in ${PTCOPY_VM_CACHE:-/var/cache/ptcopy-vm}" \
    bash "$REPO/tests/vm/prepare-kernel.sh"

# --- clean Debian 12 root for the package test ---------------------------------------------------
# mmdebstrap from Debian's archive, cached; a no-op while the cache matches (scripts/package-root.sh).
run "clean Debian 12 root for the package test in ${PTCOPY_VM_CACHE:-/var/cache/ptcopy-vm}" \
    bash "$REPO/scripts/package-root.sh"

# --- virtualenv ------------------------------------------------------------------------------
# Made with whichever python3 comes first on PATH (under sudo that is Debian's). An existing venv
# is kept as long as its interpreter still runs and is new enough.
# Debian's own python3 when it is new enough: every user can run it, so the unit tier runs as
# nobody (an interpreter under /root, such as pyenv's, is root's alone).
if /usr/bin/python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    PYTHON=/usr/bin/python3
else
    PYTHON=$(command -v python3) || die "python3 not found on PATH"
fi
venv_ok() {
    [[ -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null &&
        "$VENV/bin/python" -m pip --version >/dev/null 2>&1
}
if ! venv_ok; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null ||
        die "$PYTHON is $("$PYTHON" --version 2>&1); ptcopy needs Python >= 3.11"
    rm -rf "$VENV"
    run "creating virtualenv $VENV with $PYTHON ($("$PYTHON" --version 2>&1))" \
        "$PYTHON" -m venv "$VENV"
fi

run "upgrading pip" "$VENV/bin/python" -m pip install -q --upgrade pip

# --- ptcopy itself (builds the C engine) -------------------------------------------------------
[[ -f "$REPO/cffi_build/ptcopy_engine.h" ]] ||
    die "cffi_build/ptcopy_engine.h is missing: the C engine cannot be built without its header"
run "installing ptcopy (editable, with test tools) and building the C engine" \
    "$VENV/bin/python" -m pip install -q -e "${REPO}[test]"

echo "setup.sh: done; virtualenv in $VENV"
