// Settings screen: the encryption key (first run), target, the box's SSH key, host key trust, shares with a
// folder picker, schedule and notifications. Every save goes to /api/* and comes back as the saved config.
"use strict";
(function () {
  const { api, say, el } = offsite;
  const $ = (id) => document.getElementById(id);
  let config = null;
  let shares = [];
  // The share row whose path the picker fills.
  let pickerFor = null;

  function fillForm(form, values) {
    for (const [k, v] of Object.entries(values)) {
      const input = form.elements[k];
      if (!input) continue;
      if (input.type === "checkbox") input.checked = !!v;
      else input.value = v === null || v === undefined ? "" : v;
    }
  }

  function render() {
    const k = config.key;
    $("key-missing").hidden = k.exists;
    $("key-info").textContent = k.exists
      ? (k.error ? "The key file cannot be read: " + k.error : "Key " + k.key_id + " (" + k.suite + ").")
      : "";
    const t = config.target;
    fillForm($("target-form"), {
      host: t.host, port: t.port, user: t.user, path: t.path, rsync_path: t.rsync_path, bwlimit_kbps: t.bwlimit_kbps,
    });
    $("hostkey-section").hidden = !t.host;
    $("sshkey-section").hidden = !t.host;
    const s = config.schedule;
    fillForm($("schedule-form"), s);
    const n = config.notify;
    const m = n.smtp || {};
    fillForm($("notify-form"), {
      on_success: n.on_success, webhook: n.webhook, smtp_host: m.host, smtp_port: m.port, smtp_starttls: m.starttls,
      smtp_user: m.user, smtp_from: m.from, smtp_to: (m.to || []).join(", "), smtp_password: "",
    });
    $("notify-form").elements.smtp_password.placeholder = m.has_password ? "unchanged" : "";
    shares = config.shares.map((x) => ({ ...x }));
    renderShares();
  }

  function renderShares() {
    const list = $("shares-list");
    list.replaceChildren();
    shares.forEach((s, i) => {
      const row = el("fieldset", { className: "share-row" });
      row.dataset.index = i;
      const input = (label, key, props) => {
        const inp = el("input", Object.assign({ value: s[key] === undefined || s[key] === null ? "" : s[key] }, props || {}));
        inp.name = key;
        inp.addEventListener("input", () => { s[key] = inp.value; });
        return el("label", {}, label, inp);
      };
      const check = (label, key) => {
        const inp = el("input", { type: "checkbox", checked: !!s[key] });
        inp.name = key;
        inp.addEventListener("change", () => { s[key] = inp.checked; renderShares(); });
        return el("label", { className: "check" }, inp, " " + label);
      };
      const choose = el("button", { type: "button", className: "secondary share-choose" }, "Choose…");
      choose.addEventListener("click", () => openPicker(i));
      const remove = el("button", { type: "button", className: "danger share-remove" }, "Remove");
      remove.addEventListener("click", () => { shares.splice(i, 1); renderShares(); });
      const excl = el("textarea", { rows: 3, value: (s.exclude || []).join("\n") });
      excl.name = "exclude";
      excl.addEventListener("input", () => { s.exclude = excl.value.split("\n"); });
      const r = s.retention || { last: 1, daily: 7, weekly: 4, monthly: 12, yearly: 0 };
      s.retention = r;
      const keep = (label, key) => {
        const inp = el("input", { type: "number", min: 0, value: r[key] });
        inp.name = "keep_" + key;
        inp.addEventListener("input", () => { r[key] = Number(inp.value) || 0; });
        return el("label", { className: "keep" }, label, inp);
      };
      const names = check("Encrypt names", "encrypt_names");
      names.querySelector("input").disabled = !s.encrypt;
      row.append(
        el("legend", {}, s.name || "New share"),
        input("Name", "name", { required: true, autocomplete: "off" }),
        input("Folder", "path", { required: true }),
        choose,
        check("Encrypt", "encrypt"),
        names,
        el("label", {}, "Leave out (one pattern a line, rsync style)", excl),
        el("div", { className: "keeps" }, keep("Days", "daily"), keep("Weeks", "weekly"), keep("Months", "monthly"), keep("Years", "yearly")),
        input("Own nightly time (empty: the common one)", "schedule", { type: "time" }),
        remove,
      );
      list.append(row);
    });
  }

  async function openPicker(i) {
    pickerFor = i;
    $("picker").hidden = false;
    await browse(shares[i].path || "");
  }

  async function browse(path) {
    const r = await api("GET", "/api/browse?path=" + encodeURIComponent(path));
    $("picker-path").textContent = r.path || "Data volumes";
    $("picker-use").disabled = !r.path;
    $("picker").dataset.path = r.path || "";
    const ul = $("picker-dirs");
    ul.replaceChildren();
    const atVolume = !r.path || r.volumes.includes(r.path);
    if (r.path) {
      const up = r.path.replace(/\/[^/]*$/, "") || "/";
      const li = el("li", {}, el("button", { type: "button", className: "link" }, "↑ " + (atVolume ? "Data volumes" : up)));
      li.firstChild.addEventListener("click", () => browse(atVolume ? "" : up).catch((x) => say(x.message, true)));
      ul.append(li);
    }
    for (const d of r.dirs) {
      const b = el("button", { type: "button", className: "link" }, d.split("/").pop() || d);
      b.title = d;
      b.addEventListener("click", () => browse(d).catch((x) => say(x.message, true)));
      ul.append(el("li", {}, b));
    }
  }

  $("picker-use").addEventListener("click", () => {
    const path = $("picker").dataset.path;
    if (pickerFor !== null && path) {
      shares[pickerFor].path = path;
      if (!shares[pickerFor].name) {
        shares[pickerFor].name = path.split("/").pop().replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "");
      }
    }
    $("picker").hidden = true;
    renderShares();
  });
  $("picker-close").addEventListener("click", () => { $("picker").hidden = true; });

  $("share-add").addEventListener("click", () => {
    shares.push({ name: "", path: "", encrypt: true, encrypt_names: true, exclude: [], schedule: "" });
    renderShares();
  });

  $("shares-save").addEventListener("click", async () => {
    try {
      const body = shares.map((s) => ({
        name: s.name, path: s.path, encrypt: !!s.encrypt, encrypt_names: !!s.encrypt && !!s.encrypt_names,
        exclude: (s.exclude || []).filter((x) => x.trim() !== ""), retention: s.retention, schedule: s.schedule || null,
      }));
      config = await api("PUT", "/api/shares", { shares: body });
      render();
      say("Shares saved.");
    } catch (x) { say(x.message, true); }
  });

  async function load() {
    config = await api("GET", "/api/config");
    render();
    await loadSshKey();
    await offsite.loadBundle();
  }
  offsite.screens.settings = { load };

  // ---- key --------------------------------------------------------------------------------------
  function keyCreated(r) {
    $("key-missing").hidden = true;
    $("key-new").hidden = false;
    $("key-recovery").textContent = r.recovery_text;
    $("key-saved").checked = false;
  }

  $("key-create").addEventListener("click", async () => {
    try {
      keyCreated(await api("POST", "/api/key", { action: "create" }));
      say("Key created: save its recovery text now.");
    } catch (x) { say(x.message, true); }
  });

  $("key-import").addEventListener("click", async () => {
    try {
      const r = await api("POST", "/api/key", { action: "import", text: $("key-import-text").value });
      $("key-import-text").value = "";
      say("Key " + r.key_id + " imported.");
      await load();
    } catch (x) { say(x.message, true); }
  });

  $("key-print").addEventListener("click", () => window.print());

  $("key-saved").addEventListener("change", async () => {
    if (!$("key-saved").checked) return;
    // The text leaves the page once the owner says it is saved.
    $("key-recovery").textContent = "";
    $("key-new").hidden = true;
    await load().catch((x) => say(x.message, true));
  });

  // ---- target, SSH key, host key -------------------------------------------------------------------
  $("target-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const num = (v) => (v === "" || v === null ? null : Number(v));
    try {
      config = await api("PUT", "/api/target", {
        host: f.get("host") || null, port: num(f.get("port")), user: f.get("user") || null, path: f.get("path"),
        rsync_path: f.get("rsync_path") || null, bwlimit_kbps: num(f.get("bwlimit_kbps")),
      });
      render();
      await loadSshKey();
      $("hostkey-result").hidden = true;
      say("Target saved.");
    } catch (x) { say(x.message, true); }
  });

  function showSshKey(k) {
    $("sshkey-none").hidden = !!k.public_key;
    $("sshkey-show").hidden = !k.public_key;
    $("sshkey-generate").textContent = k.public_key ? "Make a new SSH key" : "Generate the SSH key";
    if (k.public_key) {
      $("sshkey-line").value = k.authorized_keys_line;
      $("sshkey-rrsync").value = k.rrsync_line;
    }
  }

  async function loadSshKey() {
    if (!config.target.host) return;
    showSshKey(await api("GET", "/api/ssh-key"));
  }

  $("sshkey-generate").addEventListener("click", async () => {
    const replace = !$("sshkey-show").hidden;
    if (replace && !window.confirm("Make a new key? The old one stops working on the target.")) return;
    try {
      showSshKey(await api("POST", "/api/ssh-key", { replace }));
      say("SSH key made: add its line on the target host, then test the connection.");
    } catch (x) { say(x.message, true); }
  });

  let shownFingerprint = null;

  async function testConnection() {
    $("hostkey-result").hidden = true;
    say("Connecting…");
    const r = await api("POST", "/api/host-key/test");
    shownFingerprint = r.fingerprint;
    $("hostkey-result").hidden = false;
    $("hostkey-type").textContent = r.key_type;
    $("hostkey-fingerprint").textContent = r.fingerprint;
    const st = $("hostkey-status");
    $("hostkey-trust").hidden = r.status !== "unknown";
    $("hostkey-replace").hidden = r.status !== "changed";
    const texts = {
      trusted: "Trusted.",
      unknown: "Not trusted yet: compare the fingerprint, then trust it.",
      changed: "THE HOST KEY CHANGED (it was " + r.expected_fingerprint + "). Backups are blocked until you check why: a new server, or someone in between.",
      revoked: "This key is revoked.",
    };
    st.textContent = texts[r.status] || r.status;
    st.className = r.status === "trusted" ? "ok" : "failed";
    const c = r.connection;
    $("hostkey-connection").textContent = !c ? "" : c.ok ? "Logged in, and the remote folder answers." : "Login or listing failed: " + c.error;
    $("hostkey-connection").className = !c ? "" : c.ok ? "ok" : "failed";
    say("");
  }

  $("hostkey-test").addEventListener("click", () => testConnection().catch((x) => say(x.message, true)));

  async function trust(replace) {
    await api("POST", "/api/host-key/trust", { fingerprint: shownFingerprint, replace });
    await testConnection();
  }
  $("hostkey-trust").addEventListener("click", () => trust(false).catch((x) => say(x.message, true)));
  $("hostkey-replace").addEventListener("click", () => {
    if (window.confirm("Replace the known host key? Only do this if you know why it changed.")) {
      trust(true).catch((x) => say(x.message, true));
    }
  });

  // ---- schedule, notifications ------------------------------------------------------------------
  $("schedule-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    try {
      config = await api("PUT", "/api/schedule", {
        enabled: f.enabled.checked, at: f.at.value, jitter_minutes: Number(f.jitter_minutes.value) || 0,
      });
      render();
      say("Schedule saved.");
    } catch (x) { say(x.message, true); }
  });

  $("notify-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const smtp = f.smtp_host.value.trim() === "" ? null : {
      host: f.smtp_host.value, port: f.smtp_port.value === "" ? null : Number(f.smtp_port.value),
      starttls: f.smtp_starttls.checked, user: f.smtp_user.value || null, from: f.smtp_from.value,
      to: f.smtp_to.value.split(",").map((x) => x.trim()).filter((x) => x),
    };
    try {
      config = await api("PUT", "/api/notify", {
        on_success: f.on_success.checked, webhook: f.webhook.value || null, smtp,
        smtp_password: f.smtp_password.value === "" ? null : f.smtp_password.value,
      });
      render();
      say("Notifications saved.");
    } catch (x) { say(x.message, true); }
  });

  $("notify-test").addEventListener("click", async () => {
    try { await api("POST", "/api/notify/test"); say("Test notification sent."); } catch (x) { say(x.message, true); }
  });
})();
