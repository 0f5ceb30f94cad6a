#!/usr/bin/env bash
# Install everything and run ptcopy's main job: start ptcopyd and take a first point-in-time copy
# of a file system with the ptcopy command line.
#
#   sudo bash scripts/demo.sh [--dir DIR] [--setup]   start ptcopyd and walk through the demo
#   sudo bash scripts/demo.sh --stop [--dir DIR]      stop what the demo started and remove DIR
#
# DIR (default ./ptcopy-demo, relative to where you run this) holds everything the demo makes:
# ptcopyd's state, run directory and log, the volume files, mount points, and the private bus
# when there is one. ptcopyd runs on the system bus when one answers (the bus policy from dbus/
# is installed for it) and no other ptcopyd is there; otherwise on a private bus the demo starts.
# The daemon keeps running afterwards so you can go on with the CLI; the script prints how.
#
# Installing: scripts/setup.sh runs when the virtualenv, the CLI or the C engine is missing or
# older than the sources (--setup runs it anyway). Needs root: loop devices, FUSE, mounts.
# Exit status: 0 ok, 1 usage, 2 a step failed (the message and DIR/ptcopyd.log say why).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
PTCOPY="$VENV/bin/ptcopy"
MARK=.ptcopy-demo
SET=demo

DIR=./ptcopy-demo
ACTION=start
FORCE_SETUP=0
while (($#)); do
    case $1 in
        --dir) [[ $# -ge 2 ]] || { echo "demo.sh: --dir needs a directory" >&2; exit 1; }
               DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        --stop) ACTION=stop; shift ;;
        --setup) FORCE_SETUP=1; shift ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument $1 (try --help)" >&2; exit 1 ;;
    esac
done
DIR=$(realpath -m -- "$DIR")

if [[ -t 1 ]]; then BOLD=$'\033[1m' CYAN=$'\033[36m' PLAIN=$'\033[0m'; else BOLD='' CYAN='' PLAIN=''; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
die() { echo "demo.sh: ERROR: $*" >&2; exit 2; }
# show CMD...: print the command as a user would type it, then run it.
show() {
    local shown=("$@")
    [[ ${shown[0]} == "$PTCOPY" ]] && shown[0]=ptcopy
    printf '%s$ %s%s\n' "$CYAN" "${shown[*]}" "$PLAIN"
    "$@"
}

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run me as root (sudo bash scripts/demo.sh)" >&2; exit 1; }

# ---- stop -----------------------------------------------------------------------------------
stop_pid() {   # stop_pid FILE NAME: SIGTERM the process in FILE, SIGKILL after 20 s
    local file=$1 name=$2 pid
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo.sh: $name (pid $pid) did not stop in 20 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

if [[ $ACTION == stop ]]; then
    if [[ ! -f $DIR/$MARK ]]; then
        echo "demo.sh: no demo in $DIR (nothing to stop)"
        exit 0
    fi
    # The demo's own mounts first (deepest first), then the daemon, then the bus.
    grep -F " $DIR/mnt/" /proc/mounts | awk '{print $2}' | sort -r | while read -r mp; do
        umount "$mp" && echo "unmounted $mp"
    done || true
    # Disabling the set takes its devices down: on the kernel data path they would outlive
    # ptcopyd (the kernel keeps serving them), over files this removes.
    if [[ -f $DIR/ptcopy.env ]] && (
        # shellcheck disable=SC1091
        source "$DIR/ptcopy.env" && "$PTCOPY" --timeout 30 disable "$SET" >/dev/null 2>&1
    ); then
        echo "disabled set $SET"
    fi
    stop_pid "$DIR/ptcopyd.pid" ptcopyd
    stop_pid "$DIR/dbus.pid" "the demo's D-Bus daemon"
    if [[ -f $DIR/installed-policy ]]; then
        policy=$(<"$DIR/installed-policy")
        rm -f "$policy" && echo "removed $policy"
    fi
    if grep -qF " $DIR/" /proc/mounts; then
        die "something is still mounted under $DIR; not removing it"
    fi
    rm -rf -- "$DIR"
    echo "removed $DIR"
    exit 0
fi

# ---- start: install -------------------------------------------------------------------------
if [[ -e $DIR/$MARK ]]; then
    echo "demo.sh: a demo already lives in $DIR; stop it first: sudo bash scripts/demo.sh --stop${DIR:+ --dir $DIR}" >&2
    exit 1
fi
if [[ -e $DIR ]] && [[ -n $(ls -A "$DIR" 2>/dev/null) ]]; then
    echo "demo.sh: $DIR exists and is not empty; choose another with --dir DIR" >&2
    exit 1
fi

needs_setup() {
    ((FORCE_SETUP)) && return 0
    [[ -x $VENV/bin/python && -x $PTCOPY && -x $VENV/bin/ptcopyd ]] || return 0
    "$VENV/bin/python" -c 'import ptcopy._engine, ptcopy.cli.main, ptcopy.daemon.main' \
        2>/dev/null || return 0
    local so
    so=$(ls "$REPO"/ptcopy/_engine*.so 2>/dev/null | head -n1)
    [[ -n $so ]] || return 0
    # sources newer than the build: rebuild (setup.sh reinstalls and recompiles)
    [[ -z $(find "$REPO/cffi_build" "$REPO/setup.py" "$REPO/pyproject.toml" -newer "$so" \
            -print -quit) ]] || return 0
    for tool in mkfs.ext4 losetup mount fusermount3 dbus-daemon; do
        command -v "$tool" >/dev/null || return 0
    done
    return 1
}
if needs_setup; then
    say "Installing (scripts/setup.sh)"
    bash "$REPO/scripts/setup.sh"
else
    echo "demo.sh: ptcopy is installed and up to date in $VENV (--setup reinstalls)"
fi
if ! command -v dbus-daemon >/dev/null; then   # the bus daemon, for a private bus
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dbus \
        >/dev/null || die "could not install the dbus package"
fi

unset DBUS_SYSTEM_BUS_ADDRESS   # the system bus is /run/dbus/system_bus_socket or none
mkdir -p "$DIR"/{state,run,volumes,mnt/master,mnt/shadow}
touch "$DIR/$MARK"
LOG=$DIR/ptcopyd.log

# ---- start: the bus -------------------------------------------------------------------------
# probe_bus ADDRESS: 0 if a bus answers there and no ptcopyd owns its name, 3 if one does,
# 1 if no bus answers.
probe_bus() {
    "$VENV/bin/python" - "$1" <<'EOF'
import asyncio, sys
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

async def probe() -> int:
    bus = MessageBus(bus_address=sys.argv[1])
    await asyncio.wait_for(bus.connect(), 5)
    reply = await asyncio.wait_for(bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="NameHasOwner", signature="s",
        body=["org.ptcopy.Imaging1"])), 5)
    bus.disconnect()
    if reply.message_type is MessageType.ERROR:
        return 1
    return 3 if reply.body[0] else 0

try:
    sys.exit(asyncio.run(probe()))
except Exception:
    sys.exit(1)
EOF
}

BUS_ARGS=()        # for ptcopyd and ptcopy; empty on the system bus
ADDRESS=""
SYSTEM_SOCKET=/run/dbus/system_bus_socket
rc=1
if [[ -S $SYSTEM_SOCKET ]]; then
    probe_bus "unix:path=$SYSTEM_SOCKET" && rc=0 || rc=$?
fi
if ((rc == 0)); then
    say "Starting ptcopyd on the system bus"
    if [[ ! -f /usr/share/dbus-1/system.d/org.ptcopy.Imaging1.conf &&
          ! -f /etc/dbus-1/system.d/org.ptcopy.Imaging1.conf ]]; then
        install -m 0644 "$REPO/dbus/org.ptcopy.Imaging1.conf" /etc/dbus-1/system.d/
        echo /etc/dbus-1/system.d/org.ptcopy.Imaging1.conf >"$DIR/installed-policy"
        "$VENV/bin/python" - <<'EOF' || die "the system bus did not reload its policy"
import asyncio
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

async def reload() -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    reply = await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="ReloadConfig"))
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body

asyncio.run(reload())
EOF
        echo "installed ptcopy's bus policy in /etc/dbus-1/system.d/ (--stop removes it)"
    fi
    ADDRESS="unix:path=$SYSTEM_SOCKET"
else
    if ((rc == 3)); then
        say "A ptcopyd already runs on the system bus; the demo starts its own on a private bus"
    else
        say "No system bus answers: starting a private bus and ptcopyd on it"
    fi
    SOCKET=$DIR/bus.sock
    LISTEN="unix:path=$SOCKET"
    ((${#SOCKET} < 100)) || LISTEN="unix:tmpdir=/tmp"   # unix socket paths are short
    # Debian's system bus policy (deny by default) plus ptcopy's own policy file.
    sed -e "s|@LISTEN@|$LISTEN|" -e "s|@POLICY@|$REPO/dbus/org.ptcopy.Imaging1.conf|" \
        -e "s|@EXTRA@||" "$REPO/dbus/private-bus.conf.in" >"$DIR/bus.conf"
    setsid dbus-daemon --config-file="$DIR/bus.conf" --nofork --print-address=3 \
        3>"$DIR/bus.address" </dev/null >>"$DIR/dbus.log" 2>&1 &
    echo $! >"$DIR/dbus.pid"
    for _ in $(seq 100); do [[ -s $DIR/bus.address ]] && break; sleep 0.05; done
    [[ -s $DIR/bus.address ]] || die "the private bus did not start ($(tail -n 5 "$DIR/dbus.log"))"
    ADDRESS=$(head -n1 "$DIR/bus.address")
    ADDRESS=${ADDRESS%%,guid=*}
    BUS_ARGS=(--bus "$ADDRESS")
    # The CLI finds the private bus as a system bus does, through the variable users will set.
    export DBUS_SYSTEM_BUS_ADDRESS=$ADDRESS
fi

# ---- start: the daemon ----------------------------------------------------------------------
setsid "$VENV/bin/ptcopyd" "${BUS_ARGS[@]}" --state-dir "$DIR/state" --run-dir "$DIR/run" \
    --file-volumes "$DIR/volumes" </dev/null >>"$LOG" 2>&1 &
echo $! >"$DIR/ptcopyd.pid"
PID=$(<"$DIR/ptcopyd.pid")
printf 'export DBUS_SYSTEM_BUS_ADDRESS=%q\n' "$ADDRESS" >"$DIR/ptcopy.env"
for _ in $(seq 200); do
    "$PTCOPY" --timeout 2 list >/dev/null 2>&1 && break
    kill -0 "$PID" 2>/dev/null || die "ptcopyd stopped at once; $LOG says: $(tail -n 5 "$LOG")"
    sleep 0.1
done
"$PTCOPY" version || die "ptcopyd does not answer; see $LOG"

# ---- the walk-through -----------------------------------------------------------------------
P=("$PTCOPY")   # on the bus the environment names
V=$DIR/volumes
MNT_M=$DIR/mnt/master
MNT_S=$DIR/mnt/shadow

say "1. Three small volumes: a master with an ext4 file system, a shadow, a bitmap volume"
# The shadow is 1 MiB larger and the bitmap volume 4 MiB: on the kernel data path (device-mapper,
# where the kernel has it) dm-snapshot keeps its metadata in the shadow and the bitmap volume
# also holds a record of the set; the userspace path takes these sizes as well.
truncate -s 64M "$V/master.img"
truncate -s 65M "$V/shadow.img"
truncate -s 4M "$V/bitmap.img"
show mkfs.ext4 -q -L demo "$V/master.img"

say "2. Enable a dependent (copy-on-write) set: its point in time is now"
show "${P[@]}" enable --dependent "$V/master.img" "$V/shadow.img" "$V/bitmap.img" --name "$SET"
field() {   # field NAME: one field of the set's status
    "${P[@]}" status "$SET" --json | "$VENV/bin/python" -c \
        "import json, sys; print(json.load(sys.stdin)[0]['$1'] or '')"
}
MDEV=$(field master_device)
SDEV=$(field shadow_device)
[[ -b $MDEV && -b $SDEV ]] || die "the set's served devices are not block devices ($MDEV, $SDEV)"
echo "applications use $MDEV for the master and $SDEV for the shadow"

say "3. Use the master: mount its served device and write files"
show mount "$MDEV" "$MNT_M"
echo "written before the point in time" >"$MNT_M/hello.txt"
show cat "$MNT_M/hello.txt"

say "4. Take a new point in time: update the shadow (the mounted file system is frozen for it)"
show "${P[@]}" update "$SET" --to shadow --wait

say "5. Change the master afterwards"
echo "changed after the point in time" >"$MNT_M/hello.txt"
echo "a file made after the point in time" >"$MNT_M/after.txt"
sync
show cat "$MNT_M/hello.txt"

say "6. Mount the shadow read-only: it still holds the point in time"
show mount -o ro "$SDEV" "$MNT_S"
show ls "$MNT_M" "$MNT_S"
show cat "$MNT_S/hello.txt"
if [[ $(<"$MNT_S/hello.txt") == "written before the point in time" && ! -e $MNT_S/after.txt ]]
then
    echo "OK: the shadow has the file system as it was at the point in time"
else
    die "the shadow does not hold the point in time"
fi
show "${P[@]}" status "$SET"
show umount "$MNT_S"
show umount "$MNT_M"

# ---- how to go on ---------------------------------------------------------------------------
cat <<EOF

ptcopyd keeps running (pid $PID); its state, volumes and log ($LOG) are in $DIR.
Use the CLI:
EOF
if ((${#BUS_ARGS[@]})); then
    echo "    export DBUS_SYSTEM_BUS_ADDRESS=$ADDRESS   # or: ptcopy --bus $ADDRESS ..."
fi
cat <<EOF
    export PATH=$VENV/bin:\$PATH
    ptcopy status $SET
    mount $MDEV $MNT_M        # the master; write to it, then
    ptcopy update $SET --to shadow   # a new point in time (unmount the shadow first)
    ptcopy --help                    # and docs/user-guide.md
Stop it all (daemon, bus, mounts) and remove $DIR:
    sudo bash $REPO/scripts/demo.sh --stop --dir $DIR
EOF
