// The config bundle on the Settings screen: a bundle found on a USB key waits here until an admin enters
// its passphrase (or ignores it), and the box's own config can be exported as a bundle.
"use strict";
(function () {
  const { api, say, el, when, human } = offsite;
  const $ = (id) => document.getElementById(id);

  // Called by settings.js each time the Settings screen loads.
  offsite.loadBundle = async function loadBundle() {
    const b = await api("GET", "/api/bundle");
    const s = b.staged;
    $("bundle-staged-section").hidden = !s;
    if (s) {
      $("bundle-file").textContent = s.file;
      $("bundle-found").textContent = "found " + when(s.found) + ", " + human(s.size);
    }
    const to = $("bundle-to");
    const chosen = to.value;
    while (to.options.length > 1) to.remove(1);
    for (const k of b.usb_keys) to.append(el("option", { value: k }, "USB key " + k));
    to.value = b.usb_keys.includes(chosen) ? chosen : "";
  };

  $("bundle-import-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    say("Opening the bundle…");
    try {
      const r = await api("POST", "/api/bundle/import", { passphrase: $("bundle-passphrase").value });
      $("bundle-passphrase").value = "";
      const ul = $("bundle-changes");
      ul.replaceChildren(...r.changes.map((c) => el("li", {}, c)));
      $("bundle-result-section").hidden = false;
      say("The bundle was applied.");
      await offsite.screens.settings.load();
    } catch (x) { say(x.message, true); }
  });

  $("bundle-dismiss").addEventListener("click", async () => {
    try {
      await api("POST", "/api/bundle/dismiss");
      say("The bundle was ignored; nothing changed.");
      await offsite.loadBundle();
    } catch (x) { say(x.message, true); }
  });

  const form = $("bundle-export-form");
  form.elements.with_keys.addEventListener("change", () => {
    $("bundle-password-label").hidden = !form.elements.with_keys.checked;
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    if (f.passphrase.value !== f.passphrase2.value) return say("The two passphrases differ.", true);
    const body = {
      passphrase: f.passphrase.value, with_keys: f.with_keys.checked, password: f.password.value,
      to: f.to.value || null,
    };
    say("Sealing the bundle…");
    try {
      if (body.to) {
        const r = await api("POST", "/api/bundle/export", body);
        say("Written to " + r.written + ".");
      } else {
        // A file answer: fetched with the CSRF header, then handed to the browser as a download.
        const r = await fetch("/api/bundle/export", {
          method: "POST", credentials: "same-origin", body: JSON.stringify(body),
          headers: { "Content-Type": "application/json", "X-CSRF-Token": offsite.csrf },
        });
        if (!r.ok) {
          let m = r.statusText;
          try { m = (await r.json()).error || m; } catch (_) { /* no body */ }
          throw new Error(m);
        }
        const url = URL.createObjectURL(await r.blob());
        const a = el("a", { href: url, download: "offsite-bundle" });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
        say("Bundle downloaded.");
      }
      for (const k of ["passphrase", "passphrase2", "password"]) f[k].value = "";
    } catch (x) { say(x.message, true); }
  });
})();
