/* ptcopy's Cockpit page, part 4: the model, the sets and the page. Sets, groups, overflow volumes,
 * schedules and hosts of ptcopyd (org.ptcopy.Imaging1 on the system bus), live through the
 * ObjectManager's signals and PropertiesChanged; changes go through Cockpit's administrative
 * access (superuser "try"), and ptcopyd (polkit) decides as it does for the CLI. Plain
 * JavaScript, no build step: words.js, dialogs.js and lists.js are loaded before this file. */
/* global cockpit, BUS_NAME, ROOT, IFACE, NO_OBJECT, explain, NOT_RUNNING, fmtSize, fmtPercent,
   fmtTime, h, button, refreshDialogs, confirmDialog, openThrottle, openNewSet, groupsCard,
   overflowCard, schedulesCard, hostsCard, openSetOverflow */
"use strict";

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
    const client = cockpit.dbus(BUS_NAME, { bus: "system", superuser: "try" });
    model.client = client;
    model.proxies = {};
    client.addEventListener("close", (_ev, opts) => {
        if (client === model.client && opts && opts.problem) {
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
                 h("thead", {}, h("tr", {}, cols.map(c => h("th", { scope: "col", class: "pf-m-nowrap" }, c)))),
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
    const suspended = s.Flags.includes("suspended");
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
             button("Full copy to master", () => confirmThen(
                 "Copy the whole shadow of " + s.Name + " onto its master?",
                 "Every chunk of the master " + s.Master + " is overwritten with the shadow's. Whatever " +
                 "was written to the master since the point in time is lost.",
                 "Copy to master", true,
                 () => act("Full copy to master", call(p, "IISet", "Copy", ["master", options({ confirm: ["b", true] })], "sa{sv}"))),
                    "warning", { id: "act-copy-master" }),
             button("Suspend", () => act("Suspend", call(p, "IISet", "Suspend", [{}], "a{sv}")), "secondary",
                    { id: "act-suspend", disabled: !copying || suspended }),
             button("Resume", () => act("Resume", call(p, "IISet", "Resume", [{}], "a{sv}")), "secondary",
                    { id: "act-resume", disabled: !suspended }),
             button("Abort", () => act("Abort", call(p, "IISet", "Abort", [{}], "a{sv}")), "secondary",
                    { id: "act-abort", disabled: !copying }),
             button("Throttle…", () => openThrottle(s), "secondary", { id: "act-throttle" }),
             s.Flags.includes("compact")
                 ? button("Overflow volume…", () => openSetOverflow(s), "secondary", { id: "act-overflow" }) : null,
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
