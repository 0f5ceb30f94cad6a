/* ptcopy's Cockpit page, part 3: the cards of groups, overflow volumes, schedules and hosts,
 * with their actions and dialogs (new group, members, new overflow volume, new schedule). */
/* global model, objects, byPath, nameOf, call, act, render, confirmThen, statusLabel, ROOT,
   fmtSize, fmtPercent, fmtTime, h, button, modal, field, showInline, NO_OBJECT */
/* exported groupsCard, overflowCard, schedulesCard, hostsCard, openSetOverflow */
"use strict";

function listCard(id, title, cols, rows, emptyText, action) {
    return h("article", { class: "pf-c-card ptc-card", id },
             h("div", { class: "pf-c-card__header" },
               h("div", { class: "pf-c-card__title" }, h("h2", { class: "pf-c-title pf-m-lg" }, title)),
               action ? h("div", { class: "pf-c-card__actions" }, action) : null),
             h("div", { class: "pf-c-card__body" },
               rows.length
                   ? h("table", { class: "pf-c-table pf-m-compact pf-m-grid-md", role: "grid" },
                       h("thead", {}, h("tr", {}, cols.map(c => h("th", { scope: "col", class: "pf-m-nowrap" }, c)))),
                       h("tbody", {}, rows.map(r => h("tr", {}, r.map((c, i) => h("td", { "data-label": cols[i] }, c))))))
                   : h("p", { class: "ptc-muted" }, emptyText)));
}

function rowActions(...buttons) {
    return h("div", { class: "ptc-actions" }, buttons);
}

/** Checkboxes of the sets ``sets``, those in ``checked`` ticked. */
function setChecks(prefix, sets, checked) {
    return sets.map(s => h("input", { type: "checkbox", class: "pf-c-check__input", value: s.path,
                                      id: prefix + s.Name, "data-set": s.Name, checked: checked.includes(s.path) }));
}

function checkList(label, boxes, names, emptyText) {
    return h("div", { class: "pf-c-form__group" },
             h("div", { class: "pf-c-form__group-label" }, h("span", { class: "pf-c-form__label-text" }, label)),
             h("div", { class: "pf-c-form__group-control" },
               boxes.length
                   ? boxes.map((b, i) => h("div", { class: "pf-c-check" }, b,
                                           h("label", { class: "pf-c-check__label", for: b.id }, " " + names[i])))
                   : h("p", { class: "ptc-muted" }, emptyText)));
}

function freeSets() {
    return objects("IISet").filter(s => !s.Group || s.Group === NO_OBJECT)
            .sort((a, b) => a.Name.localeCompare(b.Name));
}

/* ---- groups ------------------------------------------------------------------------------ */

function groupsCard() {
    const groups = objects("IIGroup").sort((a, b) => a.Name.localeCompare(b.Name));
    return listCard("groups", "Groups", ["Group", "State", "Sets", "Copy", ""], groups.map(g => {
        const j = byPath("Job", g.Job);
        const job = j ? (j.Done ? j.Operation + ": " + (j.Message || (j.Success ? "done" : "failed"))
            : j.Operation + " " + fmtPercent((j.ProgressValid ? j.Progress : 0) * 100)) : "-";
        return [g.Name, statusLabel(g.Status), g.Sets.map(nameOf).join(", ") || "(none)", job, rowActions(
            button("Update group to shadow", () => act("Update group " + g.Name,
                                                      call(g.path, "IIGroup", "Update", ["shadow", {}], "sa{sv}")),
                   "secondary", { "data-group": g.Name }),
            button("Members…", () => openMembers(g), "secondary", { "data-group-members": g.Name }),
            button("Delete", () => confirmThen(
                "Delete group " + g.Name + "?",
                "The group goes; its sets stay, each without a group (as ptcopy group delete).",
                "Delete", true, () => act("Delete group " + g.Name, call(g.path, "IIGroup", "Delete", [{}], "a{sv}"))),
                   "danger", { "data-group-delete": g.Name }))];
    }), "No groups. A group takes one point in time of several sets at once: New group.",
    button("New group", openNewGroup, "secondary", { id: "new-group", disabled: !objects("IISet").length }));
}

/* New group: a name and the sets that are in no group yet. */
function openNewGroup() {
    const name = h("input", { class: "pf-c-form-control", type: "text", id: "group-name", required: true });
    const free = freeSets();
    const boxes = setChecks("group-set-", free, []);
    const err = h("div", {});
    modal("new-group-dialog", "New group",
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            field("Name", name),
            checkList("Sets", boxes, free.map(s => s.Name), "every set is in a group already"),
            h("p", { class: "ptc-muted" }, "The sets of a group copy and update at one point in time, all or nothing."),
            err),
          close => [
              button("Create", () => {
                  err.replaceChildren();
                  const sets = boxes.filter(b => b.checked).map(b => b.value);
                  call(ROOT, "Manager", "CreateGroup", [name.value, sets, {}], "saoa{sv}")
                          .then(() => { close(); render() }, e => showInline(err, e));
              }, "primary", { id: "group-create" }),
              button("Cancel", close, "link"),
          ]);
    name.focus();
}

/* A group's members: its sets (ticked) and the sets in no group; Apply adds and takes out
 * (IIGroup.AddSet, IIGroup.RemoveSet) one set at a time, stopping at the first refusal. */
function openMembers(g) {
    const sets = objects("IISet").filter(s => g.Sets.includes(s.path) || !s.Group || s.Group === NO_OBJECT)
            .sort((a, b) => a.Name.localeCompare(b.Name));
    const boxes = setChecks("member-", sets, g.Sets);
    const err = h("div", {});
    modal("members-dialog", "Sets of group " + g.Name,
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            checkList("Sets", boxes, sets.map(s => s.Name), "there are no sets"),
            h("p", { class: "ptc-muted" }, "A set is in one group at most; a set taken out stays, without a group."),
            err),
          close => [
              button("Apply", async () => {
                  err.replaceChildren();
                  try {
                      for (const b of boxes) {
                          const member = g.Sets.includes(b.value);
                          if (b.checked && !member)
                              await call(g.path, "IIGroup", "AddSet", [b.value, {}], "oa{sv}");
                          else if (!b.checked && member)
                              await call(g.path, "IIGroup", "RemoveSet", [b.value, {}], "oa{sv}");
                      }
                      close();
                      render();
                  } catch (e) {
                      showInline(err, e);
                  }
              }, "primary", { id: "members-apply" }),
              button("Cancel", close, "link"),
          ]);
}

/* ---- overflow volumes --------------------------------------------------------------------- */

function overflowCard() {
    const ovs = objects("IIOverflow").sort((a, b) => a.Path.localeCompare(b.Path));
    return listCard("overflows", "Overflow volumes", ["Volume", "Chunks used", "Free", "Total", "Sets", ""], ovs.map(o => [
        o.Path, String(o.ChunksUsed) + (o.CountersValid ? "" : " (counters not valid)"),
        String(Math.max(0, o.ChunksTotal - o.ChunksUsed)), String(o.ChunksTotal),
        o.Sets.map(nameOf).join(", ") || "-",
        button("Delete", () => confirmThen(
            "Delete overflow volume " + o.Path + "?",
            "ptcopyd stops using the volume (refused while a set spills into it); its data stays as it is.",
            "Delete", true, () => act("Delete overflow volume", call(o.path, "IIOverflow", "Delete", [{}], "a{sv}"))),
               "danger", { "data-overflow-delete": o.Path })]),
                    "No overflow volumes. Compact dependent sets (a shadow smaller than the master) spill into one when their shadow is full.",
                    button("New overflow volume", openNewOverflow, "secondary", { id: "new-overflow" }));
}

function openNewOverflow() {
    const path = h("input", { class: "pf-c-form-control", type: "text", id: "overflow-path", list: "overflow-path-list",
                              placeholder: "/dev/… or a file under ptcopyd's file-volume directory" });
    const vols = objects("Volume").filter(v => v.Available).sort((a, b) => a.Path.localeCompare(b.Path));
    const list = h("datalist", { id: "overflow-path-list" },
                   vols.map(v => h("option", { value: v.Path }, fmtSize(v.Size) + " " + v.Type)));
    const err = h("div", {});
    modal("new-overflow-dialog", "New overflow volume",
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            field("Volume", path), list,
            h("p", { class: "ptc-muted" }, "The volume is initialised as an overflow volume: its data is overwritten " +
              "(as ptcopy overflow init). Attach it to a compact dependent set with ptcopy overflow attach."),
            err),
          close => [
              button("Create", () => {
                  err.replaceChildren();
                  call(ROOT, "Manager", "CreateOverflow", [path.value, {}], "sa{sv}")
                          .then(() => { close(); render() }, e => showInline(err, e));
              }, "primary", { id: "overflow-create" }),
              button("Cancel", close, "link"),
          ]);
    path.focus();
}

/* A compact dependent set's overflow volume: attach one (IISet.AttachOverflow) or detach it
 * (IISet.DetachOverflow, refused while chunks of the set live there). */
function openSetOverflow(set) {
    const ovs = objects("IIOverflow").sort((a, b) => a.Path.localeCompare(b.Path));
    const current = set.Overflow && set.Overflow !== NO_OBJECT ? set.Overflow : "";
    const select = h("select", { class: "pf-c-form-control", id: "set-overflow" },
                     h("option", { value: "" }, "(none)"),
                     ovs.map(o => h("option", { value: o.path, selected: o.path === current },
                                    o.Path + " (" + Math.max(0, o.ChunksTotal - o.ChunksUsed) + " chunks free)")));
    const err = h("div", {});
    modal("set-overflow-dialog", "Overflow volume of " + set.Name,
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            field("Spills into", select),
            h("p", { class: "ptc-muted" }, "When its shadow is full, a compact dependent set keeps the old data of further " +
              "master writes on its overflow volume (as ptcopy overflow attach and detach)."),
            err),
          close => [
              button("Apply", () => {
                  err.replaceChildren();
                  if (select.value === current)
                      return close();
                  const done = select.value
                      ? (current ? call(set.path, "IISet", "DetachOverflow", [{}], "a{sv}") : Promise.resolve())
                              .then(() => call(set.path, "IISet", "AttachOverflow", [select.value, {}], "oa{sv}"))
                      : call(set.path, "IISet", "DetachOverflow", [{}], "a{sv}");
                  return done.then(() => { close(); render() }, e => showInline(err, e));
              }, "primary", { id: "set-overflow-apply" }),
              button("Cancel", close, "link"),
          ]);
}

/* ---- schedules --------------------------------------------------------------------------- */

const NEXT_SHOWN = 3;
/* Schedule.NextRuns, asked again only when the schedule changes (its NextRun, Enabled or
 * Spec: PropertiesChanged), never on a timer. */
const nextRuns = {};

function nextRunsOf(s) {
    const key = [s.NextRun, s.Enabled, s.Spec].join("|");
    const known = nextRuns[s.path];
    if (!known || known.key !== key) {
        nextRuns[s.path] = { key, runs: known ? known.runs : null };
        call(s.path, "Schedule", "NextRuns", [NEXT_SHOWN], "u").then(([runs]) => {
            if (nextRuns[s.path] && nextRuns[s.path].key === key) {
                nextRuns[s.path].runs = runs;
                render();
            }
        }, () => null);
    }
    const runs = nextRuns[s.path].runs;
    if (!s.Enabled)
        return "- (paused)";
    if (!runs)
        return fmtTime(s.NextRun);
    return h("ul", { class: "ptc-plain-list" }, runs.map(t => h("li", {}, fmtTime(t))));
}

function schedulesCard() {
    const sch = objects("Schedule").sort((a, b) => a.Name.localeCompare(b.Name));
    for (const p of Object.keys(nextRuns))
        if (!byPath("Schedule", p))
            delete nextRuns[p];
    return listCard("schedules", "Schedules", ["Schedule", "When", "Targets", "State", "Next runs", "Last run", "Last result", ""],
                    sch.map(s => [s.Name, s.Spec, s.Targets.map(nameOf).join(", "), s.Enabled ? "enabled" : "paused",
                        nextRunsOf(s), fmtTime(s.LastRun), s.LastResult || "-", rowActions(
                            s.Enabled
                                ? button("Pause", () => act("Pause " + s.Name, call(s.path, "Schedule", "Pause", [{}], "a{sv}")),
                                         "secondary", { "data-schedule-pause": s.Name })
                                : button("Resume", () => act("Resume " + s.Name, call(s.path, "Schedule", "Resume", [{}], "a{sv}")),
                                         "secondary", { "data-schedule-resume": s.Name }),
                            button("Run now", () => act("Run " + s.Name, call(s.path, "Schedule", "RunNow", [{}], "a{sv}")),
                                   "secondary", { "data-schedule-run": s.Name }),
                            button("Delete", () => confirmThen(
                                "Delete schedule " + s.Name + "?",
                                "It runs no more (a run in progress goes on); its sets and their points in time stay.",
                                "Delete", true, () => act("Delete schedule " + s.Name, call(s.path, "Schedule", "Delete", [{}], "a{sv}"))),
                                   "danger", { "data-schedule-delete": s.Name }))]),
                    "No schedules. A schedule takes a new point in time when a calendar time or an interval elapses.",
                    button("New schedule", openNewSchedule, "secondary", { id: "new-schedule", disabled: !objects("IISet").length }));
}

/* New schedule: a name, when (a systemd calendar expression or "every" and a time span) and
 * its targets: sets of one master (each run updates the one with the oldest point in time),
 * one set, or one group. */
function openNewSchedule() {
    const name = h("input", { class: "pf-c-form-control", type: "text", id: "schedule-name", required: true });
    const spec = h("input", { class: "pf-c-form-control", type: "text", id: "schedule-spec", value: "hourly" });
    const sets = objects("IISet").sort((a, b) => a.Name.localeCompare(b.Name));
    const groups = objects("IIGroup").filter(g => g.Sets.length).sort((a, b) => a.Name.localeCompare(b.Name));
    const setBoxes = setChecks("schedule-set-", sets, []);
    const group = h("select", { class: "pf-c-form-control", id: "schedule-group" },
                    h("option", { value: "" }, "(no group: the sets ticked above)"),
                    groups.map(g => h("option", { value: g.path }, g.Name)));
    const err = h("div", {});
    modal("new-schedule-dialog", "New schedule",
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            field("Name", name),
            field("When", spec, h("div", { class: "pf-c-form__helper-text" },
                                  "a systemd calendar expression (hourly, daily, Mon..Fri 02:00, *:0/15) or " +
                                  "every and a time span (every 15min, every 2h 30min)")),
            checkList("Sets", setBoxes, sets.map(s => s.Name), "there are no sets"),
            groups.length ? field("or a group", group) : null,
            h("p", { class: "ptc-muted" }, "Each run takes a new point in time: of sets of one master, onto the one " +
              "whose point in time is the oldest (keeping the last N over N shadows); of one set; or of a group."),
            err),
          close => [
              button("Create", () => {
                  err.replaceChildren();
                  const targets = group.value ? [group.value] : setBoxes.filter(b => b.checked).map(b => b.value);
                  call(ROOT, "Manager", "CreateSchedule", [name.value, spec.value, targets, {}], "ssaoa{sv}")
                          .then(() => { close(); render() }, e => showInline(err, e));
              }, "primary", { id: "schedule-create" }),
              button("Cancel", close, "link"),
          ]);
    name.focus();
}

/* ---- hosts: ptcopyd's registry of other hosts (ptcopy hosts) ------------------------------ */

function hostsCard() {
    const hosts = objects("Host").sort((a, b) => a.Name.localeCompare(b.Name));
    return listCard("hosts", "Hosts", ["Host", "Target", "Reachable", "Sets", "Version", "Last seen", ""],
                    hosts.map(x => [x.Name, x.Target, x.Reachable ? "yes" : "no" + (x.LastError ? ": " + x.LastError : ""),
                        String(x.Sets), x.Version || "-", fmtTime(x.LastSeen), rowActions(
                            button("Probe", () => act("Probe " + x.Name, call(x.path, "Host", "Probe", [{}], "a{sv}")),
                                   "secondary", { "data-host-probe": x.Name }),
                            button("Remove", () => confirmThen(
                                "Remove host " + x.Name + "?",
                                "ptcopyd forgets the host (as ptcopy hosts remove); nothing changes on the host itself.",
                                "Remove", true, () => act("Remove host " + x.Name, call(x.path, "Host", "Remove", [{}], "a{sv}"))),
                                   "danger", { "data-host-remove": x.Name }))]),
                    "No remote hosts. ptcopyd reaches other hosts over SSH (ptcopy --host); registered ones are probed and listed here.",
                    button("Add host", openAddHost, "secondary", { id: "add-host" }));
}

function openAddHost() {
    const name = h("input", { class: "pf-c-form-control", type: "text", id: "host-name", required: true });
    const target = h("input", { class: "pf-c-form-control", type: "text", id: "host-target", placeholder: "[user@]host[:port]" });
    const err = h("div", {});
    modal("add-host-dialog", "Add host",
          h("form", { class: "pf-c-form pf-m-horizontal", onsubmit: ev => ev.preventDefault() },
            field("Name", name), field("SSH target", target),
            h("p", { class: "ptc-muted" }, "ptcopyd probes the host read-only over SSH (its version and sets), as ptcopy hosts add. " +
              "Its host key must be trusted first: ptcopy hosts trust NAME."),
            err),
          close => [
              button("Add", () => {
                  err.replaceChildren();
                  call(ROOT, "Manager", "AddHost", [name.value, target.value, {}], "ssa{sv}")
                          .then(() => { close(); render() }, e => showInline(err, e));
              }, "primary", { id: "host-add" }),
              button("Cancel", close, "link"),
          ]);
    name.focus();
}
