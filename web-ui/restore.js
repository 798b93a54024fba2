// Restore screen: browse snapshots, download, restore to a folder on the box.
//
// Paths travel as the API's `enc` form (percent-encoded bytes, `/` kept), so names that are not UTF-8
// round-trip; `name` is only for display. Download is a plain link to /api/download (the cookie goes
// with it): one selected file downloads as itself, one selected folder (or, with nothing selected, the
// folder on screen) as a tar. "Restore" restores the selected entries (or the folder on screen) into a
// folder on the box and follows the job until its report.
"use strict";
(function () {
  const { api, say, human, when, el } = offsite;
  const $ = (id) => document.getElementById(id);

  // What is on screen.
  const st = {
    share: "",
    snapshot: "",
    dir: "", // enc of the folder shown ("" = the share's root)
    entries: [],
    selected: new Set(), // enc of checked entries
    job: null, // the restore job being followed
    polling: false,
  };

  const q = (s) => encodeURIComponent(s);

  function downloadTarget() {
    // One checked entry: that; none: the folder on screen; more: not possible in one download.
    if (st.selected.size > 1) return null;
    if (st.selected.size === 1) {
      const enc = [...st.selected][0];
      const e = st.entries.find((x) => x.enc === enc);
      if (!e || e.kind === "symlink") return null;
      return { enc, label: e.kind === "dir" ? "Download " + e.name + " (tar)" : "Download " + e.name };
    }
    const here = st.dir ? st.dir.split("/").pop() : st.share;
    return { enc: st.dir, label: "Download " + (st.dir ? decodeName(here) : "the whole share") + " (tar)" };
  }

  function decodeName(enc) {
    try { return decodeURIComponent(enc); } catch (_) { return enc; }
  }

  function updateActions() {
    const a = $("restore-download");
    const t = st.share && st.snapshot ? downloadTarget() : null;
    if (t) {
      a.href = "/api/download?share=" + q(st.share) + "&snapshot=" + q(st.snapshot) + "&path=" + t.enc;
      a.textContent = t.label;
      a.classList.remove("disabled");
      a.removeAttribute("aria-disabled");
    } else {
      a.removeAttribute("href");
      a.textContent = st.selected.size > 1 ? "Download (tick one entry, or none for this folder)" : "Download";
      a.classList.add("disabled");
      a.setAttribute("aria-disabled", "true");
    }
    const n = st.selected.size;
    $("restore-selected").textContent = n ? n + " selected" : "Nothing ticked: the actions take this whole folder.";
    $("restore-all").checked = n > 0 && n === st.entries.length;
    $("restore-start").disabled = !st.snapshot || !!(st.job && st.polling);
  }

  function renderCrumbs(listing) {
    const nav = $("restore-crumbs");
    nav.replaceChildren();
    const root = el("button", { type: "button", id: "restore-crumb-root", className: "restore-crumb" }, st.share || "share");
    root.addEventListener("click", () => browse("").catch(fail));
    nav.append(root);
    (listing.crumbs || []).forEach((c, i) => {
      nav.append(el("span", { className: "restore-sep" }, "/"));
      const b = el("button", { type: "button", id: "restore-crumb-" + i, className: "restore-crumb" }, c.name);
      b.addEventListener("click", () => browse(c.enc).catch(fail));
      nav.append(b);
    });
  }

  function renderList(listing) {
    const list = $("restore-list");
    list.replaceChildren();
    if (!st.entries.length) list.append(el("li", { className: "restore-empty" }, "This folder is empty."));
    st.entries.forEach((e, i) => {
      const box = el("input", { type: "checkbox", id: "restore-check-" + i, className: "restore-check" });
      box.checked = st.selected.has(e.enc);
      box.setAttribute("aria-label", "Select " + e.name);
      box.addEventListener("change", () => {
        if (box.checked) st.selected.add(e.enc); else st.selected.delete(e.enc);
        updateActions();
      });
      let name;
      if (e.kind === "dir") {
        name = el("button", { type: "button", id: "restore-open-" + i, className: "restore-name restore-dir" }, e.name + "/");
        name.addEventListener("click", () => browse(e.enc).catch(fail));
      } else {
        name = el("span", { className: "restore-name" }, e.kind === "symlink" ? e.name + " → " + (e.link || "") : e.name);
      }
      const meta = el("span", { className: "restore-meta" },
        (e.kind === "file" ? human(e.size) + " · " : "") + when(e.mtime * 1000));
      const li = el("li", { id: "restore-entry-" + i, className: "restore-entry restore-" + e.kind }, box, name, meta);
      li.dataset.name = e.name;
      li.dataset.kind = e.kind;
      list.append(li);
    });
    $("restore-more").textContent = listing.total > st.entries.length
      ? "Showing " + st.entries.length + " of " + listing.total + " entries; download or restore the folder to get all of them."
      : "";
  }

  // Shows one folder of the chosen snapshot.
  async function browse(dir) {
    if (!st.share || !st.snapshot) return;
    $("restore-list").setAttribute("aria-busy", "true");
    try {
      const listing = await api("GET", "/api/ls?share=" + q(st.share) + "&snapshot=" + q(st.snapshot) + "&path=" + dir);
      st.dir = listing.enc;
      st.entries = listing.entries || [];
      st.selected.clear();
      renderCrumbs(listing);
      renderList(listing);
      updateActions();
    } finally {
      $("restore-list").removeAttribute("aria-busy");
    }
  }

  async function loadSnapshots() {
    const sel = $("restore-snapshot");
    sel.replaceChildren(el("option", { value: "" }, "Loading…"));
    st.snapshot = "";
    st.entries = [];
    $("restore-list").replaceChildren();
    updateActions();
    if (!st.share) return;
    const r = await api("GET", "/api/snapshots?share=" + q(st.share));
    sel.replaceChildren();
    for (const s of r.snapshots || []) {
      const text = when(s.time) + (s.complete ? " — " + s.files + " files, " + human(s.bytes) : " — incomplete");
      const o = el("option", { value: s.id, disabled: !s.complete }, text);
      sel.append(o);
    }
    const first = (r.snapshots || []).find((s) => s.complete);
    if (!first) {
      sel.replaceChildren(el("option", { value: "" }, "No snapshot yet"));
      $("restore-list").replaceChildren(el("li", { className: "restore-empty" }, "This share has no complete backup on the target yet."));
      renderCrumbs({ crumbs: [] });
      return;
    }
    sel.value = first.id;
    st.snapshot = first.id;
    await browse("");
  }

  async function load() {
    const r = await api("GET", "/api/shares");
    const sel = $("restore-share");
    const before = st.share;
    sel.replaceChildren();
    for (const s of r.shares || []) sel.append(el("option", { value: s.name }, s.name));
    const names = (r.shares || []).map((s) => s.name);
    if (!names.length) {
      st.share = "";
      $("restore-list").replaceChildren(el("li", { className: "restore-empty" }, "No shares yet: add one under Settings."));
      updateActions();
      return;
    }
    st.share = names.includes(before) ? before : names[0];
    sel.value = st.share;
    const to = $("restore-to");
    const vols = r.data_volumes || [];
    to.placeholder = vols.length ? vols[0].replace(/\/$/, "") + "/restored" : "/srv/restored";
    $("restore-volumes").textContent = vols.length
      ? "Allowed below: " + vols.join(", ")
      : "No data volume is configured: restoring on the box is not possible, downloads are.";
    if (st.job && st.polling) return; // keep the screen of the restore being followed
    await loadSnapshots();
  }

  function fail(x) { say(x.message, true); }

  function showJob(j) {
    const running = j.state === "running";
    $("restore-progress").hidden = !running;
    let text;
    if (running) {
      text = "Restoring into " + j.to + ": " + j.files + " files (" + human(j.bytes) + ")";
      if (j.problem_count) text += ", " + j.problem_count + " problems so far";
    } else if (j.state === "failed") {
      text = "The restore failed: " + (j.error || "unknown error");
    } else {
      const r = j.report || {};
      text = "Restored " + j.files + " files (" + human(j.bytes) + ")" +
        (r.dirs !== undefined ? ", " + r.dirs + " folders" : "") + " into " + j.to + ". " +
        (j.problem_count ? j.problem_count + " problems: see below." : "Everything verified.");
    }
    const status = $("restore-status");
    status.textContent = text;
    status.className = j.state === "failed" || j.problem_count ? "failed" : "";
    const ul = $("restore-problems");
    ul.replaceChildren();
    (j.problems || []).forEach((p, i) => {
      ul.append(el("li", { id: "restore-problem-" + i, className: "restore-problem restore-" + p.kind },
        el("b", {}, p.path), ": " + p.kind.replace("_", " ") + (p.detail ? " — " + p.detail : "")));
    });
    if (j.problem_count > (j.problems || []).length) {
      ul.append(el("li", {}, "… and " + (j.problem_count - j.problems.length) + " more (see the service's log)."));
    }
  }

  async function follow(id) {
    st.job = id;
    st.polling = true;
    updateActions();
    try {
      for (;;) {
        const j = await api("GET", "/api/restore/" + q(id));
        showJob(j);
        if (j.state !== "running") break;
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      st.polling = false;
      updateActions();
      // The outcome is in the restore's own status line now.
      if ($("message").textContent === "Restore started.") say("");
    }
  }

  async function startRestore() {
    const to = $("restore-to").value.trim();
    if (!to) { say("Type the folder on the box to restore into.", true); $("restore-to").focus(); return; }
    const paths = st.selected.size ? [...st.selected] : (st.dir ? [st.dir] : []);
    const r = await api("POST", "/api/restore", {
      share: st.share,
      snapshot: st.snapshot,
      paths,
      to,
      overwrite: $("restore-overwrite").checked,
    });
    say("Restore started.");
    await follow(r.job);
  }

  $("restore-share").addEventListener("change", () => {
    st.share = $("restore-share").value;
    st.dir = "";
    loadSnapshots().catch(fail);
  });
  $("restore-snapshot").addEventListener("change", () => {
    st.snapshot = $("restore-snapshot").value;
    // The same folder in the other snapshot, or its root when it is not there.
    browse(st.dir).catch(() => browse("").catch(fail));
  });
  $("restore-all").addEventListener("change", () => {
    st.selected.clear();
    if ($("restore-all").checked) for (const e of st.entries) st.selected.add(e.enc);
    for (const b of document.querySelectorAll("#restore-list .restore-check")) b.checked = $("restore-all").checked;
    updateActions();
  });
  $("restore-download").addEventListener("click", (ev) => {
    if (!$("restore-download").getAttribute("href")) { ev.preventDefault(); return; }
    say("The download starts in a moment (a folder is verified file by file as it streams). " +
      "A download that fails midway means a file did not verify: restore it to the box to see the report.");
  });
  $("restore-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    startRestore().catch(fail);
  });

  offsite.screens.restore = { load };
})();
