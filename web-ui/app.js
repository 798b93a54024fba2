// The admin page: plain JavaScript, no build step. Talks to /api/* with the session cookie and sends the
// CSRF token on every change.
"use strict";
let csrf = null;
let events = null;
const $ = (id) => document.getElementById(id);

function show(id) {
  for (const s of ["setup", "login", "dashboard"]) $(s).hidden = s !== id;
  $("logout").hidden = id !== "dashboard";
}

function say(text) { $("message").textContent = text || ""; }

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined, credentials: "same-origin" });
  let data = null;
  try { data = await r.json(); } catch (_) { /* no body */ }
  if (!r.ok) throw new Error((data && data.error) || r.statusText);
  return data;
}

function human(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function when(ts) { return new Date(ts).toLocaleString(); }

function renderStatus(s) {
  const next = Object.values(s.next || {});
  $("next").textContent = next.length
    ? "Next run: " + next.map((n) => (n.slot === "*" ? "" : n.slot + " ") + when(n.at)).join(", ")
    : "No scheduled run.";
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
    $("bar").removeAttribute("value");
  } else {
    $("run-text").textContent = "";
  }
  if (s.last) {
    $("last").textContent = "Last run: " + s.last.status + (s.last.error ? " — " + s.last.error : "");
    $("last").className = s.last.status;
  }
}

async function refresh() {
  renderStatus(await api("GET", "/api/status"));
  const reports = await api("GET", "/api/history");
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  for (const r of reports) {
    for (const sh of r.shares || []) {
      const tr = document.createElement("tr");
      const cells = [when(r.started), sh.share, sh.status, String(sh.counters.files), String((sh.skipped || []).length)];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      tr.children[2].className = sh.status;
      body.append(tr);
    }
  }
}

function listen() {
  if (events) events.close();
  events = new EventSource("/api/events");
  events.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.event === "run_finished") {
      $("bar").value = 1;
      $("bar").max = 1;
      refresh().catch((x) => say(x.message));
    } else {
      api("GET", "/api/status").then(renderStatus).catch(() => {});
    }
  };
}

async function enter(data) {
  csrf = data.csrf;
  show("dashboard");
  await refresh();
  listen();
}

async function start() {
  const s = await api("GET", "/api/session");
  if (s.setup_needed) return show("setup");
  if (!s.logged_in) return show("login");
  await enter(s);
}

$("setup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await enter(await api("POST", "/api/setup", { code: f.get("code"), password: f.get("password") }));
    say("Password set.");
  } catch (x) { say(x.message); }
});

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await enter(await api("POST", "/api/login", { password: f.get("password") }));
    say("");
  } catch (x) { say(x.message); }
});

$("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/logout"); } catch (_) { /* gone anyway */ }
  csrf = null;
  if (events) events.close();
  show("login");
});

$("run-now").addEventListener("click", async () => {
  try { await api("POST", "/api/run", { shares: [] }); say("Backup started."); } catch (x) { say(x.message); }
});

$("cancel").addEventListener("click", async () => {
  try { await api("POST", "/api/cancel"); say("Cancelling…"); } catch (x) { say(x.message); }
});

start().catch((x) => say(x.message));
