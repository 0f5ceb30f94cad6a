/* ptcopy's Cockpit page, part 2: the dialogs (confirmation, throttle, New set with its volume
 * browser). */
/* global cockpit, model, objects, nameOf, call, options, render, explain, fmtSize, bitmapSize,
   h, button, ROOT */
/* exported refreshDialogs, confirmDialog, openThrottle, openNewSet, modal, field, showInline */
"use strict";

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
                      .then(close, e => showInline(err, e)), "primary", { id: "throttle-apply" }),
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
                h("thead", {}, h("tr", {}, ["Volume", "Type", "Size", "Use", "Can serve?"].map(c => h("th", { class: "pf-m-nowrap" }, c)))),
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
