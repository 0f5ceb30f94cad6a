/* ptcopy's Cockpit page, part 1: ptcopyd's errors in the CLI's words, sizes and percentages as
 * the CLI writes them, the engine's bitmap size, and a tiny DOM builder. */
/* exported explain, NOT_RUNNING, fmtSize, fmtPercent, fmtTime, bitmapSize, h, button */
"use strict";

const BUS_NAME = "org.ptcopy.Imaging1";
const ROOT = "/org/ptcopy/Imaging1";
const IFACE = BUS_NAME + ".";
const NO_OBJECT = "/";
const ERROR_PREFIX = IFACE + "Error.";
const BUS_ERROR = "org.freedesktop.DBus.Error.";

/* ---- errors in plain words (ptcopy/cli/_errors.py: the same sentences and hints) ---------- */

const HINTS = {
    NotAuthorized: "log in with administrative access (the lock at the top of Cockpit), or get " +
        "the polkit action org.ptcopy.imaging.manage; looking needs no rights",
    NotFound: "the lists on this page show what there is",
    InUse: "unmount the volume or stop the program holding it, then try again",
    Busy: "wait for the copy to end or stop it (Abort)",
    Offline: "once the volume is back, Reset brings the set back",
    Exists: "choose another name",
    SameVolume: "master, shadow and bitmap must be three different volumes",
    TooSmall: "use a bigger volume; only a dependent shadow may be smaller than its master " +
        "(a compact shadow)",
    SizeMismatch: "an independent shadow must be as big as its master",
    WrongType: "check the set's kind in its details",
    Dependency: "detach or remove what depends on it first",
    Incomplete: "the last copy did not finish; run the update again to complete it",
    Exported: "the shadow is handed to another host; join it back first",
    NotConfirmed: "writing the master needs confirmation",
    OutOfSpace: "attach a bigger overflow volume (ptcopy overflow attach) and update",
    BadHeader: "this is not a ptcopy bitmap or overflow volume (or it is damaged)",
    DataPath: "the data path (FUSE, loop devices) failed; the daemon log says more",
    IOError: "a volume failed; check the device, then Reset",
    NoCopy: "no copy is running",
    InvalidArgument: "check the values given",
};

const NOT_RUNNING = {
    message: "ptcopyd is not running",
    hint: "start it: systemctl start ptcopyd",
};

/** A D-Bus failure as {message, hint}, worded as the CLI words it. */
function explain(err) {
    const name = (err && err.name) || "";
    const text = (err && err.message) || "";
    if (name.startsWith(ERROR_PREFIX)) {
        const short = name.slice(ERROR_PREFIX.length);
        if (short === "NotAuthorized")
            return { message: "not authorized: " + text, hint: HINTS.NotAuthorized };
        return { message: text || short, hint: HINTS[short] || "" };
    }
    if (name === BUS_ERROR + "ServiceUnknown" || name === BUS_ERROR + "NameHasNoOwner" ||
        name.startsWith(BUS_ERROR + "Spawn") || (err && err.problem === "not-found"))
        return NOT_RUNNING;
    if (name === BUS_ERROR + "AccessDenied")
        return {
            message: "the bus does not let you talk to ptcopyd: " + text,
            hint: "install ptcopy's bus policy (org.ptcopy.Imaging1.conf) in /usr/share/dbus-1/system.d/",
        };
    if (name === BUS_ERROR + "UnknownObject")
        return { message: "the object is gone (it was removed meanwhile)", hint: "" };
    if (name === BUS_ERROR + "UnknownMethod" || name === BUS_ERROR + "UnknownInterface")
        return { message: "this ptcopyd does not offer that call: " + text,
                 hint: "the daemon may be older than this page" };
    if (name === BUS_ERROR + "NoReply" || name === BUS_ERROR + "Timeout" ||
        name === BUS_ERROR + "TimedOut")
        return { message: "ptcopyd did not answer in time", hint: "the daemon log says more" };
    if (err && err.problem === "access-denied")
        return { message: "not authorized", hint: HINTS.NotAuthorized };
    return { message: (text || "the call failed") + " (" + (name || (err && err.problem) || "unnamed error") + ")",
             hint: "" };
}

/* ---- formatting (ptcopy/cli/_output.py) ---------------------------------------------------- */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function fmtSize(n) {
    let v = Number(n);
    for (let i = 0; i < UNITS.length; i++) {
        if (v < 1024 || i === UNITS.length - 1)
            return i === 0 ? Math.trunc(v) + " B" : v.toFixed(1) + " " + UNITS[i];
        v /= 1024;
    }
    return n + " B";
}

function fmtPercent(x) {
    return Number(x).toFixed(1) + " %";
}

function fmtTime(usec) {
    if (!usec)
        return "never";
    return new Date(Number(usec) / 1000).toLocaleString();
}

/* Bytes a bitmap volume needs (cffi_build/meta.c pt_meta_layout): a 4 KiB header, for a compact
 * dependent set (shadow smaller than the master) an index of 4 bytes a chunk, then two bitmaps
 * of one bit a chunk, each rounded up to whole 4 KiB pages. */
const CHUNK_DEFAULT = 32768;

function bitmapSize(masterSize, shadowSize, kind, chunk) {
    chunk = chunk || CHUNK_DEFAULT;
    const page = n => Math.ceil(n / 4096) * 4096;
    const nchunks = Math.ceil(masterSize / chunk);
    const compact = kind === "dependent" && shadowSize < masterSize;
    const bm = page(Math.ceil(nchunks / 8));
    return 4096 + (compact ? page(nchunks * 4) : 0) + 2 * bm;
}

/* ---- a tiny DOM builder ---------------------------------------------------------------------- */

function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === undefined || v === null || v === false)
            continue;
        if (k.startsWith("on"))
            el.addEventListener(k.slice(2), v);
        else if (k === "class")
            el.className = v;
        else if (k === "width")
            el.style.width = v; // through CSSOM: Cockpit's Content-Security-Policy drops style=""
        else
            el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
        if (c === null || c === undefined || c === false)
            continue;
        el.append(c instanceof Node ? c : String(c));
    }
    return el;
}

function button(label, onclick, variant, extra) {
    return h("button", Object.assign({ class: "pf-c-button pf-m-" + (variant || "secondary"), type: "button", onclick }, extra || {}), label);
}
