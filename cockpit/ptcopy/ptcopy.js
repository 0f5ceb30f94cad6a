/* ptcopy's Cockpit page: sets, groups, overflow volumes, schedules and hosts of ptcopyd
 * (org.ptcopy.Imaging1 on the system bus), live through the ObjectManager's signals and
 * PropertiesChanged; changes go through Cockpit's administrative access (superuser "try"),
 * and ptcopyd (polkit) decides as it does for the CLI. Plain JavaScript, no build step. */
/* global cockpit */
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

/* ---- the bus ----------------------------------------------------------------------------- */

const KINDS = ["Manager", "IISet", "IIGroup", "IIOverflow", "Volume", "Job", "Schedule", "Host"];

const model = {
    client: null,
    running: null, // null: not known yet; false: ptcopyd has no owner on the bus
    proxies: {},
    version: "",
    dataPath: "",
    selected: null, // the path of the set whose details are shown
};

function objects(kind) {
    const p = model.proxies[kind];
    if (!p)
        return [];
    return Object.keys(p).map(k => p[k]).filter(x => x && x.valid);
}

function byPath(kind, path) {
    const p = model.proxies[kind];
    return p && path && path !== NO_OBJECT && p[path] && p[path].valid ? p[path] : null;
}

function nameOf(path) {
    if (!path || path === NO_OBJECT)
        return null;
    for (const kind of ["IISet", "IIGroup", "Schedule", "Host"]) {
        const o = byPath(kind, path);
        if (o)
            return o.Name;
    }
    const ov = byPath("IIOverflow", path);
    if (ov)
        return ov.Path;
    const v = byPath("Volume", path);
    return v ? v.Path : path;
}

/** Call a method of ptcopyd with administrative access when the session has it. */
function call(path, iface, method, args, signature) {
    return model.client.call(path, IFACE + iface, method, args, signature ? { type: signature } : {});
}

function options(obj) {
    const out = {};
    for (const [k, [t, v]] of Object.entries(obj || {}))
        out[k] = { t, v };
    return out;
}

let renderQueued = false;
function render() {
    if (renderQueued)
        return;
    renderQueued = true;
    window.requestAnimationFrame(() => {
        renderQueued = false;
        draw();
    });
}

function connect() {
    if (model.client)
        model.client.close();
    model.client = cockpit.dbus(BUS_NAME, { bus: "system", superuser: "try" });
    model.proxies = {};
    model.client.addEventListener("close", (_ev, opts) => {
        if (opts && opts.problem) {
            model.running = false;
            render();
        }
    });
    for (const kind of KINDS) {
        const proxies = model.client.proxies(IFACE + kind, ROOT);
        for (const ev of ["added", "changed", "removed"])
            proxies.addEventListener(ev, render);
        model.proxies[kind] = proxies;
    }
    model.client.call(ROOT, "org.freedesktop.DBus.Properties", "GetAll", [IFACE + "Manager"])
            .then(([props]) => {
                model.running = true;
                model.version = props.Version ? props.Version.v : "";
                model.dataPath = props.DataPath ? props.DataPath.v : "";
                render();
            }, err => {
                if (explain(err) === NOT_RUNNING)
                    model.running = false;
                else
                    showError(err);
                render();
            });
}

/* ---- alerts ---------------------------------------------------------------------------- */

function showError(err, what) {
    const e = explain(err);
    const alert = h("div", { class: "pf-c-alert pf-m-danger pf-m-inline ptc-alert", role: "alert" },
                    h("p", { class: "pf-c-alert__title" }, (what ? what + ": " : "") + e.message),
                    e.hint ? h("div", { class: "pf-c-alert__description" }, e.hint) : null,
                    h("div", { class: "pf-c-alert__action" },
                      button("Close", () => alert.remove(), "plain", { "aria-label": "Close" })));
    document.getElementById("alerts").append(alert);
}

function clearErrors() {
    document.getElementById("alerts").replaceChildren();
}

/** Run a call; its failure becomes an alert in plain words. */
function act(what, promise) {
    clearErrors();
    return promise.catch(err => {
        showError(err, what);
        return null;
    });
}

/* ---- sets --------------------------------------------------------------------------------- */

function direction(s) {
    return s.Flags.includes("to-master") ? "master" : "shadow";
}

function runningJob(s) {
    const j = byPath("Job", s.Job);
    return j && !j.Done ? j : null;
}

function copyFraction(s) {
    const j = runningJob(s);
    if (j && j.ProgressValid)
        return j.Progress;
    return s.CopyPercent / 100;
}

function copyText(s) {
    if (s.Flags.includes("suspended"))
        return "suspended while copying to the " + direction(s) + ", " + fmtPercent(s.CopyPercent) + " done";
    if (s.Flags.includes("copying")) {
        let t = "copying to the " + direction(s) + ", " + fmtPercent(copyFraction(s) * 100) + " done";
        if (s.Flags.includes("abort-requested"))
            t += ", abort requested";
        return t;
    }
    const j = byPath("Job", s.Job);
    if (j)
        return "idle (last: " + j.Operation + ", " + (j.Message || (j.Success ? "done" : "failed")) + ")";
    return "idle";
}

function stateText(s) {
    const problems = s.Flags.filter(f => f.endsWith("-offline")).map(f => f.replace("-offline", "") + " offline");
    for (const f of ["out-of-space", "spilled", "exported", "imported", "incomplete"])
        if (s.Flags.includes(f))
            problems.push(f.replace(/-/g, " "));
    return s.Status + (problems.length ? " (" + problems.join(", ") + ")" : "");
}

function progressBar(s) {
    if (!s.Flags.includes("copying"))
        return h("span", { class: "ptc-muted" }, "-");
    const pct = Math.max(0, Math.min(100, copyFraction(s) * 100));
    return h("div", { class: "ptc-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
                      "aria-valuenow": pct.toFixed(1), title: copyText(s) },
             h("div", { class: "ptc-progress__label" }, "to " + direction(s) + " " + fmtPercent(pct)),
             h("div", { class: "ptc-progress__track" },
               h("div", { class: "ptc-progress__bar", width: pct.toFixed(1) + "%" })));
}

function statusLabel(status, text) {
    const color = { normal: "green", degraded: "orange", error: "red" }[status] || "grey";
    return h("span", { class: "pf-c-label pf-m-" + color + " ptc-state" },
             h("span", { class: "pf-c-label__content" }, text || status));
}

function setsCard() {
    const sets = objects("IISet").sort((a, b) => a.Name.localeCompare(b.Name));
    const head = h("div", { class: "pf-c-card__header" },
                   h("div", { class: "pf-c-card__title" }, h("h2", { class: "pf-c-title pf-m-lg" }, "Sets")),
                   h("div", { class: "pf-c-card__actions" }, button("New set", openNewSet, "primary", { id: "new-set" })));
    let body;
    if (!sets.length) {
        body = h("div", { class: "pf-c-empty-state ptc-empty", id: "sets-empty" },
                 h("h3", { class: "pf-c-title pf-m-md" }, "No sets yet"),
                 h("div", { class: "pf-c-empty-state__body" },
                   "A set pairs a master volume with a shadow that holds its point-in-time copy. " +
                   "Create one with New set."),
                 button("New set", openNewSet, "primary"));
    } else {
        const cols = ["Name", "Kind", "State", "Copy", "Differs", "Group", "Devices"];
        body = h("table", { class: "pf-c-table pf-m-compact pf-m-grid-md", role: "grid", id: "sets" },
                 h("thead", {}, h("tr", {}, cols.map(c => h("th", { scope: "col" }, c)))),
                 h("tbody", {}, sets.map(s => {
                     const row = h("tr", { class: "ptc-row" + (model.selected === s.path ? " pf-m-selected" : ""),
                                           "data-set": s.Name, onclick: () => { model.selected = s.path; render() } },
                                   h("td", { "data-label": "Name" }, h("a", { href: "#", class: "ptc-link", onclick: ev => ev.preventDefault() }, s.Name)),
                                   h("td", { "data-label": "Kind" }, s.Kind + (s.Flags.includes("compact") ? "/compact" : "")),
                                   h("td", { "data-label": "State" }, statusLabel(s.Status, stateText(s))),
                                   h("td", { "data-label": "Copy", class: "ptc-copy" }, progressBar(s)),
                                   h("td", { "data-label": "Differs" }, fmtPercent(s.DifferencePercent)),
                                   h("td", { "data-label": "Group" }, nameOf(s.Group) || "-"),
                                   h("td", { "data-label": "Devices", class: "ptc-devices" },
                                     (s.MasterDevice || s.Master) + " → " + (s.ShadowDevice || s.Shadow)));
                     return row;
                 })));
    }
    return h("article", { class: "pf-c-card ptc-card" }, head, h("div", { class: "pf-c-card__body" }, body));
}

async function confirmThen(title, text, label, danger, action) {
    if (await confirmDialog(title, text, label, danger))
        return action();
    return null;
}

function setActions(s) {
    const p = s.path;
    const copying = s.Flags.includes("copying");
    return h("div", { class: "ptc-actions" },
             button("Update to shadow", () => act("Update to shadow",
                                                  call(p, "IISet", "Update", ["shadow", {}], "sa{sv}")), "primary", { id: "act-update" }),
             button("Full copy to shadow", () => act("Full copy to shadow",
                                                     call(p, "IISet", "Copy", ["shadow", {}], "sa{sv}")), "secondary", { id: "act-copy" }),
             button("Restore master", () => confirmThen(
                 "Restore the master of " + s.Name + "?",
                 "The master " + s.Master + " is overwritten with the shadow's point in time (only the " +
                 "chunks that differ). Whatever was written to the master since is lost; programs using " +
                 "the master see its data change under them.",
                 "Restore master", true,
                 () => act("Restore master", call(p, "IISet", "Update", ["master", options({ confirm: ["b", true] })], "sa{sv}"))),
                    "warning", { id: "act-restore" }),
             button("Abort", () => act("Abort", call(p, "IISet", "Abort", [{}], "a{sv}")), "secondary",
                    { id: "act-abort", disabled: !copying }),
             button("Throttle…", () => openThrottle(s), "secondary", { id: "act-throttle" }),
             button("Reset", () => act("Reset", call(p, "IISet", "Reset", [{}], "a{sv}")), "secondary", { id: "act-reset" }),
             button("Disable", () => confirmThen(
                 "Disable " + s.Name + "?",
                 "The set ends: its volumes keep their data, but the shadow is no longer kept as a point in " +
                 "time of the master and its devices go away.",
                 "Disable", true,
                 () => act("Disable", call(p, "IISet", "Disable", [{}], "a{sv}")).then(() => {
                     if (!byPath("IISet", p))
                         model.selected = null;
                 })), "danger", { id: "act-disable" }));
}

function detailCard() {
    const s = byPath("IISet", model.selected);
    if (!s)
        return null;
    const served = (vol, dev) => dev ? vol + "  (use " + dev + ")" : vol;
    const rows = [
        ["kind", s.Kind + (s.Flags.includes("compact") ? ", compact" : "")],
        ["state", stateText(s)],
        ["master", served(s.Master, s.MasterDevice)],
        ["shadow", served(s.Shadow, s.ShadowDevice)],
        ["bitmap", s.Bitmap || "(in memory)"],
        ["overflow", nameOf(s.Overflow) || "-"],
        ["group", nameOf(s.Group) || "-"],
        ["copy", copyText(s)],
        ["differs", fmtPercent(s.DifferencePercent) + " of the chunks"],
        ["size", fmtSize(s.Size) + " in chunks of " + fmtSize(s.ChunkSize)],
        ["shadow chunks", s.ShadowChunksUsed + " used of " + s.ShadowChunksTotal],
        ["throttle", s.CopyDelay ? "pause " + s.CopyDelay + " ms every " + s.CopyUnits + " chunks" : "none"],
        ["modified", fmtTime(s.LastModified)],
    ];
    if (s.LockedBy)
        rows.push(["locked by", s.LockedBy]);
    if (s.Job && s.Job !== NO_OBJECT)
        rows.push(["job", s.Job]);
    return h("article", { class: "pf-c-card ptc-card", id: "set-detail" },
             h("div", { class: "pf-c-card__header" },
               h("div", { class: "pf-c-card__title" }, h("h2", { class: "pf-c-title pf-m-lg" }, "Set " + s.Name)),
               h("div", { class: "pf-c-card__actions" }, button("Close", () => { model.selected = null; render() }, "plain"))),
             h("div", { class: "pf-c-card__body" },
               s.Flags.includes("copying") ? h("div", { class: "ptc-detail-progress" }, progressBar(s)) : null,
               h("dl", { class: "pf-c-description-list pf-m-horizontal pf-m-compact ptc-dl" },
                 rows.map(([k, v]) => h("div", { class: "pf-c-description-list__group" },
                                         h("dt", { class: "pf-c-description-list__term" }, k),
                                         h("dd", { class: "pf-c-description-list__description", "data-prop": k }, v)))),
               setActions(s)));
}

/* ---- groups, overflow volumes, schedules, hosts ------------------------------------------ */

function listCard(id, title, cols, rows, emptyText) {
    return h("article", { class: "pf-c-card ptc-card", id },
             h("div", { class: "pf-c-card__header" },
               h("div", { class: "pf-c-card__title" }, h("h2", { class: "pf-c-title pf-m-lg" }, title))),
             h("div", { class: "pf-c-card__body" },
               rows.length
                   ? h("table", { class: "pf-c-table pf-m-compact pf-m-grid-md", role: "grid" },
                       h("thead", {}, h("tr", {}, cols.map(c => h("th", { scope: "col" }, c)))),
                       h("tbody", {}, rows.map(r => h("tr", {}, r.map((c, i) => h("td", { "data-label": cols[i] }, c))))))
                   : h("p", { class: "ptc-muted" }, emptyText)));
}

function groupsCard() {
    const groups = objects("IIGroup").sort((a, b) => a.Name.localeCompare(b.Name));
    return listCard("groups", "Groups", ["Group", "State", "Sets", "Copy", ""], groups.map(g => {
        const j = byPath("Job", g.Job);
        const job = j ? (j.Done ? j.Operation + ": " + (j.Message || (j.Success ? "done" : "failed"))
            : j.Operation + " " + fmtPercent((j.ProgressValid ? j.Progress : 0) * 100)) : "-";
        return [g.Name, statusLabel(g.Status), g.Sets.map(nameOf).join(", ") || "(none)", job,
            button("Update group to shadow", () => act("Update group " + g.Name,
                                                      call(g.path, "IIGroup", "Update", ["shadow", {}], "sa{sv}")),
                   "secondary", { "data-group": g.Name })];
    }), "No groups. A group takes one point in time of several sets at once: ptcopy group create NAME SET...");
}

function overflowCard() {
    const ovs = objects("IIOverflow").sort((a, b) => a.Path.localeCompare(b.Path));
    return listCard("overflows", "Overflow volumes", ["Volume", "Chunks used", "Free", "Total", "Sets"], ovs.map(o => [
        o.Path, String(o.ChunksUsed) + (o.CountersValid ? "" : " (counters not valid)"),
        String(Math.max(0, o.ChunksTotal - o.ChunksUsed)), String(o.ChunksTotal),
        o.Sets.map(nameOf).join(", ") || "-"]), "No overflow volumes.");
}

function schedulesCard() {
    const sch = objects("Schedule").sort((a, b) => a.Name.localeCompare(b.Name));
    return listCard("schedules", "Schedules", ["Schedule", "When", "Targets", "Enabled", "Next run", "Last run", "Last result"],
                    sch.map(s => [s.Name, s.Spec, s.Targets.map(nameOf).join(", "), s.Enabled ? "yes" : "paused",
                        fmtTime(s.NextRun), fmtTime(s.LastRun), s.LastResult || "-"]),
                    "No schedules.");
}

function hostsCard() {
    const hosts = objects("Host").sort((a, b) => a.Name.localeCompare(b.Name));
    return listCard("hosts", "Hosts", ["Host", "Target", "Reachable", "Sets", "Version", "Last seen"],
                    hosts.map(x => [x.Name, x.Target, x.Reachable ? "yes" : "no" + (x.LastError ? ": " + x.LastError : ""),
                        String(x.Sets), x.Version || "-", fmtTime(x.LastSeen)]),
                    "No remote hosts.");
}

/* ---- the page ----------------------------------------------------------------------------- */

function draw() {
    const content = document.getElementById("content");
    const line = document.getElementById("daemon-line");
    if (model.running === false) {
        line.textContent = "ptcopyd: not running";
        content.replaceChildren(h("div", { class: "pf-c-empty-state ptc-empty", id: "not-running" },
                                  h("h2", { class: "pf-c-title pf-m-lg" }, NOT_RUNNING.message),
                                  h("div", { class: "pf-c-empty-state__body" },
                                    "This page shows ptcopyd's sets. Start the daemon: ",
                                    h("code", {}, "systemctl start ptcopyd"),
                                    " (the first command of the CLI also starts it). The page follows as soon as it runs.")));
        return;
    }
    if (model.running === null) {
        content.replaceChildren(h("p", { class: "ptc-muted" }, "Loading…"));
        return;
    }
    line.textContent = "ptcopyd " + model.version + (model.dataPath ? ", data path " + model.dataPath : "");
    content.replaceChildren(setsCard(), detailCard() || "", groupsCard(), overflowCard(), schedulesCard(), hostsCard());
    refreshDialogs();
}

/* ---- dialogs ----------------------------------------------------------------------------- */

const dialogHooks = new Set();
function refreshDialogs() {
    for (const f of dialogHooks)
        f();
}

function modal(id, title, body, footer, onclose) {
    const root = document.getElementById("modal-root");
    const close = () => {
        backdrop.remove();
        if (onclose)
            onclose();
    };
    const backdrop = h("div", { class: "pf-c-backdrop" },
                       h("div", { class: "pf-l-bullseye" },
                         h("div", { class: "pf-c-modal-box pf-m-md ptc-modal", role: "dialog", "aria-modal": "true", id },
                           h("header", { class: "pf-c-modal-box__header" }, h("h1", { class: "pf-c-modal-box__title" }, title)),
                           h("div", { class: "pf-c-modal-box__body" }, body),
                           h("footer", { class: "pf-c-modal-box__footer" }, footer(close)))));
    root.append(backdrop);
    return close;
}

function confirmDialog(title, text, label, danger) {
    return new Promise(resolve => {
        let answered = false;
        modal("confirm-dialog", title, h("p", {}, text), close => [
            button(label, () => { answered = true; close(); resolve(true) }, danger ? "danger" : "primary", { id: "confirm-yes" }),
            button("Cancel", () => { close(); resolve(false) }, "link", { id: "confirm-no" }),
        ], () => { if (!answered) resolve(false) });
    });
}

function openThrottle(s) {
    const delay = h("input", { class: "pf-c-form-control", type: "number", min: "0", value: String(s.CopyDelay), id: "throttle-delay" });
    const units = h("input", { class: "pf-c-form-control", type: "number", min: "1", value: String(s.CopyUnits || 1), id: "throttle-units" });
    const err = h("div", {});
    modal("throttle-dialog", "Throttle copies of " + s.Name,
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            field("Pause (ms)", delay), field("every N chunks", units), err),
          close => [
              button("Apply", () => call(s.path, "IISet", "SetCopyParameters",
                                         [Number(delay.value), Number(units.value), {}], "uua{sv}")
                      .then(close, e => showInline(err, e)), "primary"),
              button("Cancel", close, "link"),
          ]);
}

function field(label, control, helper) {
    return h("div", { class: "pf-c-form__group" },
             h("div", { class: "pf-c-form__group-label" }, h("label", { class: "pf-c-form__label", for: control.id },
                                                             h("span", { class: "pf-c-form__label-text" }, label))),
             h("div", { class: "pf-c-form__group-control" }, control, helper || null));
}

function showInline(box, err) {
    const e = explain(err);
    box.replaceChildren(h("div", { class: "pf-c-alert pf-m-danger pf-m-inline ptc-alert", role: "alert", id: "dialog-error" },
                          h("p", { class: "pf-c-alert__title" }, e.message),
                          e.hint ? h("div", { class: "pf-c-alert__description" }, e.hint) : null));
}

/* The size of a volume: its Volume object's, or (a file under --file-volumes, which is no Volume
 * object until a set uses it) stat's. */
function volumeSize(path) {
    for (const v of objects("Volume"))
        if (v.Path === path)
            return Promise.resolve(Number(v.Size));
    return cockpit.spawn(["stat", "-L", "-c", "%s %F", path], { superuser: "try", err: "message" })
            .then(out => {
                const [size, ...type] = out.trim().split(" ");
                if (type.join(" ") === "block special file")
                    return cockpit.spawn(["blockdev", "--getsize64", path], { superuser: "try", err: "message" })
                            .then(o => Number(o.trim()));
                return Number(size);
            });
}

function volumeUse(v) {
    const used = nameOf(v.UsedBy);
    if (used)
        return "used by " + used;
    const parts = [];
    if (v.FsType)
        parts.push(v.FsType + (v.Mounted ? ", mounted" : ""));
    if (v.Holders.length)
        parts.push("held by " + v.Holders.join(", "));
    return parts.join("; ") || "-";
}

function openNewSet() {
    const name = h("input", { class: "pf-c-form-control", type: "text", id: "new-name", required: true });
    const kind = h("select", { class: "pf-c-form-control", id: "new-kind" },
                   h("option", { value: "independent" }, "independent (a full copy on a shadow as large as the master)"),
                   h("option", { value: "dependent" }, "dependent (the shadow holds what changed; may be smaller)"));
    const lists = {};
    const input = (id, role) => {
        lists[role] = h("datalist", { id: id + "-list" });
        return h("input", { class: "pf-c-form-control", type: "text", id, list: id + "-list", placeholder: "/dev/… or a file under ptcopyd's file-volume directory" });
    };
    const master = input("new-master", "master");
    const shadow = input("new-shadow", "shadow");
    const bitmap = input("new-bitmap", "bitmap");
    const need = h("div", { class: "pf-c-form__helper-text", id: "bitmap-need" }, "");
    const delay = h("input", { class: "pf-c-form-control ptc-num", type: "number", min: "0", value: "0", id: "new-delay" });
    const units = h("input", { class: "pf-c-form-control ptc-num", type: "number", min: "1", value: "1", id: "new-units" });
    const throttle = h("div", { class: "ptc-inline", id: "new-throttle" }, "pause ", delay, " ms every ", units,
                       " chunks (0: copy at full speed)");
    const err = h("div", {});
    const browser = h("div", { class: "ptc-browser", id: "volume-browser" });
    let focused = master;
    for (const el of [master, shadow, bitmap])
        el.addEventListener("focus", () => { focused = el });

    const drawBrowser = () => {
        const vols = objects("Volume").sort((a, b) => a.Path.localeCompare(b.Path));
        browser.replaceChildren(vols.length
            ? h("table", { class: "pf-c-table pf-m-compact", role: "grid" },
                h("thead", {}, h("tr", {}, ["Volume", "Type", "Size", "Use", "Can serve?"].map(c => h("th", {}, c)))),
                h("tbody", {}, vols.map(v => h("tr", { class: v.Available ? "ptc-row" : "ptc-row ptc-unavailable",
                                                       onclick: () => { if (v.Available) { focused.value = v.Path; update() } } },
                                               h("td", {}, v.Path), h("td", {}, v.Type), h("td", {}, fmtSize(v.Size)),
                                               h("td", {}, volumeUse(v)),
                                               h("td", {}, v.Available ? "yes" : (v.Unsuitable || "no"))))))
            : h("p", { class: "ptc-muted" }, "ptcopyd lists no volumes; type the paths."));
        lists.master.replaceChildren(...vols.filter(v => v.Available).map(v => h("option", { value: v.Path }, fmtSize(v.Size) + " " + v.Type)));
    };

    let seq = 0;
    const update = async () => {
        const mine = ++seq;
        need.textContent = "";
        if (!master.value)
            return;
        // the volumes ptcopyd offers for this master (smallest first)
        for (const role of ["shadow", "bitmap"]) {
            const opts = { kind: ["s", kind.value] };
            if (role === "bitmap" && shadow.value)
                opts.shadow = ["s", shadow.value];
            call(ROOT, "Manager", "Candidates", [master.value, role, options(opts)], "ssa{sv}")
                    .then(([paths]) => {
                        if (mine === seq)
                            lists[role].replaceChildren(...paths.map(p => h("option", { value: nameOf(p) })));
                    }, () => null);
        }
        try {
            const ms = await volumeSize(master.value);
            const ss = shadow.value ? await volumeSize(shadow.value) : ms;
            if (mine !== seq)
                return;
            let text = "The bitmap volume needs " + fmtSize(bitmapSize(ms, ss, kind.value)) +
                " (master " + fmtSize(ms) + (shadow.value ? ", shadow " + fmtSize(ss) : "") + ", chunks of 32.0 KiB)";
            if (bitmap.value) {
                const bs = await volumeSize(bitmap.value).catch(() => null);
                if (mine === seq && bs !== null)
                    text += bs >= bitmapSize(ms, ss, kind.value) ? "; " + bitmap.value + " is large enough."
                        : "; " + bitmap.value + " (" + fmtSize(bs) + ") is too small.";
            }
            if (mine === seq)
                need.textContent = text;
        } catch (e) {
            if (mine === seq)
                need.textContent = "Cannot read the size of the volume: " + (e.message || e);
        }
    };
    for (const el of [kind, master, shadow, bitmap])
        el.addEventListener("change", update);

    dialogHooks.add(drawBrowser);
    drawBrowser();
    modal("new-set-dialog", "New set",
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            field("Name", name), field("Kind", kind), field("Master", master), field("Shadow", shadow),
            field("Bitmap", bitmap, need), h("div", { class: "pf-c-form__group" },
                                             h("div", { class: "pf-c-form__group-label" }, h("span", { class: "pf-c-form__label-text" }, "Throttle")),
                                             h("div", { class: "pf-c-form__group-control" }, throttle)),
            lists.master, lists.shadow, lists.bitmap,
            h("h3", { class: "pf-c-title pf-m-md" }, "Volumes ptcopyd knows (click one to fill the selected field)"), browser, err),
          close => [
              button("Create", () => {
                  err.replaceChildren();
                  call(ROOT, "Manager", "CreateSet", [name.value, kind.value, master.value, shadow.value, bitmap.value,
                            options(Number(delay.value) > 0 ? { copy_delay: ["u", Number(delay.value)], copy_units: ["u", Number(units.value) || 1] } : {})], "sssssa{sv}")
                          .then(([setPath]) => {
                              model.selected = setPath;
                              close();
                              render();
                          }, e => showInline(err, e));
              }, "primary", { id: "new-create" }),
              button("Cancel", close, "link", { id: "new-cancel" }),
          ], () => dialogHooks.delete(drawBrowser));
    name.focus();
}

/* ptcopyd starting or stopping: NameOwnerChanged of its name, from the bus itself. A new owner
 * is a new ptcopyd, whose objects are read anew. */
function watchOwner() {
    const bus = cockpit.dbus("org.freedesktop.DBus", { bus: "system" });
    bus.subscribe({ interface: "org.freedesktop.DBus", member: "NameOwnerChanged", arg0: BUS_NAME },
                  (_path, _iface, _signal, args) => {
                      if (args[2]) {
                          connect();
                      } else {
                          model.running = false;
                          render();
                      }
                  });
}

watchOwner();
connect();
