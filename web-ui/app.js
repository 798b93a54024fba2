// The admin page: plain JavaScript, no build step. Talks to /api/* with the session cookie and sends the
// CSRF token on every change. This file holds the session, the API helper, the tabs and the Status
// screen; settings.js and restore.js register their screens in `offsite.screens`.
"use strict";
const offsite = {
  csrf: null,
  events: null,
  // name → { load() }: called each time its tab is opened.
  screens: {},
  // Called with each event of the service (server-sent events).
  listeners: [],
};
window.offsite = offsite;
const $ = (id) => document.getElementById(id);

offsite.say = function say(text, isError) {
  const m = $("message");
  m.textContent = text || "";
  m.className = isError ? "error" : "";
};

offsite.api = async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (offsite.csrf) headers["X-CSRF-Token"] = offsite.csrf;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined, credentials: "same-origin" });
  let data = null;
  try { data = await r.json(); } catch (_) { /* no body */ }
  if (!r.ok) throw new Error((data && data.error) || r.statusText);
  return data;
};

offsite.human = function human(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
};

offsite.when = function when(ts) { return new Date(ts).toLocaleString(); };

// A new element: el("td", {className: "x"}, "text", child, …).
offsite.el = function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
};

const { api, say, human, when, el } = offsite;

// Shows one of the top-level views: setup, login, or a screen of the logged-in page.
offsite.show = function show(id) {
  for (const s of ["setup", "login"]) $(s).hidden = s !== id;
  const screens = document.querySelectorAll(".screen");
  for (const s of screens) s.hidden = s.id !== id;
  $("tabs").hidden = id === "setup" || id === "login";
  for (const b of document.querySelectorAll("#tabs [data-screen]")) {
    b.classList.toggle("current", b.dataset.screen === id);
  }
  const screen = offsite.screens[id];
  if (screen && screen.load) screen.load().catch((x) => say(x.message, true));
};

function renderStatus(s) {
  const next = Object.values(s.next || {});
  $("next").textContent = next.length
    ? "Next run: " + next.map((n) => (n.slot === "*" ? "" : n.slot + " ") + when(n.at)).join(", ")
    : "No scheduled run.";
  const glance = $("glance");
  glance.replaceChildren();
  for (const sh of s.shares || []) {
    const ok = sh.last_success ? "last success " + when(sh.last_success) : "no successful run yet";
    glance.append(el("p", { className: "share-glance" }, el("b", {}, sh.name), ": " + ok));
  }
  const space = s.remote_space || {};
  if (space.free_bytes !== null && space.free_bytes !== undefined) {
    glance.append(el("p", { id: "remote-space" }, "Target: " + human(space.free_bytes) + " free"));
  } else if (space.note) {
    glance.append(el("p", { id: "remote-space", className: "note" }, "Target space: " + space.note));
  }
  if (s.key_missing) glance.append(el("p", { className: "failed" }, "No encryption key yet: create or import it under Settings."));
  if (s.bundle_staged) glance.append(el("p", { className: "failed", id: "bundle-waiting" }, "A config bundle from a USB key is waiting under Settings."));
  const running = s.running;
  $("bar").hidden = !running;
  $("cancel").hidden = !running;
  $("run-now").hidden = !!running;
  if (running) {
    const c = Object.values(running.progress || {});
    const files = c.reduce((a, x) => a + x.files, 0);
    const bytes = c.reduce((a, x) => a + x.bytes, 0);
    const unchanged = c.reduce((a, x) => a + x.unchanged, 0);
    $("run-text").textContent = "Backing up: " + files + " files (" + human(bytes) + "), " + unchanged + " unchanged";
    // The walk streams: the total is known only from the previous run's size, when there is one.
    if (running.expected_files) {
      $("bar").max = running.expected_files;
      $("bar").value = Math.min(files, running.expected_files);
    } else {
      $("bar").removeAttribute("value");
    }
  } else {
    $("run-text").textContent = "";
  }
  if (s.last) {
    $("last").textContent = "Last run: " + s.last.status + (s.last.error ? " — " + s.last.error : "");
    $("last").className = s.last.status;
  }
}

function showReport(r) {
  const box = $("report");
  box.replaceChildren(el("h3", {}, "Run of " + when(r.started)));
  for (const sh of r.shares || []) {
    box.append(el("p", {}, el("b", {}, sh.share), ": " + sh.status + (sh.error ? " — " + sh.error : "")));
    const skipped = sh.skipped || [];
    if (skipped.length) {
      const ul = el("ul");
      for (const s of skipped.slice(0, 200)) ul.append(el("li", {}, s.path + ": " + s.reason));
      box.append(ul);
    }
  }
}

async function refreshDashboard() {
  renderStatus(await api("GET", "/api/status"));
  const reports = await api("GET", "/api/history");
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  for (const r of reports) {
    for (const sh of r.shares || []) {
      const tr = el("tr");
      const cells = [when(r.started), sh.share, sh.status, String(sh.counters.files), String((sh.skipped || []).length)];
      for (const c of cells) tr.append(el("td", {}, c));
      tr.children[2].className = sh.status;
      tr.addEventListener("click", () => showReport(r));
      body.append(tr);
    }
  }
  const log = await api("GET", "/api/log");
  $("log").textContent = (log.lines || []).join("\n");
}
offsite.screens.dashboard = { load: refreshDashboard };

function listen() {
  if (offsite.events) offsite.events.close();
  offsite.events = new EventSource("/api/events");
  offsite.events.onmessage = (m) => {
    const e = JSON.parse(m.data);
    for (const f of offsite.listeners) f(e);
    // "Backup started." is stale once the run ends.
    if (e.event === "run_finished" && $("message").textContent === "Backup started.") say("");
    if ($("dashboard").hidden) return;
    if (e.event === "run_finished") {
      $("bar").value = $("bar").max = 1;
      refreshDashboard().catch((x) => say(x.message, true));
    } else {
      api("GET", "/api/status").then(renderStatus).catch(() => {});
    }
  };
}

// Logged in: the key comes first, then the status.
offsite.enter = async function enter(data) {
  offsite.csrf = data.csrf;
  listen();
  const s = await api("GET", "/api/status");
  offsite.show(s.key_missing || s.bundle_staged ? "settings" : "dashboard");
};

async function start() {
  for (const b of document.querySelectorAll("#tabs [data-screen]")) {
    b.addEventListener("click", () => { say(""); offsite.show(b.dataset.screen); });
  }
  const s = await api("GET", "/api/session");
  $("setup-bundle").hidden = !s.bundle_waiting;
  if (s.setup_needed) return offsite.show("setup");
  if (!s.logged_in) return offsite.show("login");
  await offsite.enter(s);
}

$("setup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await offsite.enter(await api("POST", "/api/setup", { code: f.get("code"), password: f.get("password") }));
    say("Password set.");
  } catch (x) { say(x.message, true); }
});

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await offsite.enter(await api("POST", "/api/login", { password: f.get("password") }));
    say("");
  } catch (x) { say(x.message, true); }
});

$("logout").addEventListener("click", async () => {
  say("");
  try { await api("POST", "/api/logout"); } catch (_) { /* gone anyway */ }
  offsite.csrf = null;
  if (offsite.events) offsite.events.close();
  offsite.show("login");
});

$("run-now").addEventListener("click", async () => {
  try { await api("POST", "/api/run", { shares: [] }); say("Backup started."); } catch (x) { say(x.message, true); }
});

$("cancel").addEventListener("click", async () => {
  try { await api("POST", "/api/cancel"); say("Cancelling…"); } catch (x) { say(x.message, true); }
});

// Deferred scripts have all run before DOMContentLoaded: every screen is registered by then.
document.addEventListener("DOMContentLoaded", () => start().catch((x) => say(x.message, true)));
