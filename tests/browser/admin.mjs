// Browser tests of offsite's admin page (web-ui/): headless Chromium from Debian (/usr/bin/chromium),
// driven by playwright-core from npm (pinned in package-lock.json; no downloaded browser builds).
//
// Run by appliance/offsite/tests/browser.rs, which starts a real sshd + rsync target and `offsite serve`,
// then calls `node tests/browser/admin.mjs` with these environment variables:
//
//   OFFSITE_URL          base URL of the page, e.g. https://127.0.0.1:40123 (self-signed certificate)  [required]
//   OFFSITE_SETUP_CODE   the one-time setup code `offsite serve` printed in its log                   [required]
//   OFFSITE_SCREENSHOTS  folder for the screenshots (created; default ./screenshots)
//   OFFSITE_PASSWORD     the admin password the test sets (default: a fixed test password)
//   OFFSITE_SHARES       comma-separated share names the history must show after a run (default: none checked)
//   OFFSITE_SSH_HOST, OFFSITE_SSH_PORT, OFFSITE_SSH_USER, OFFSITE_SSH_PATH, OFFSITE_SSH_FINGERPRINT
//                        the sshd target (for the Settings steps: target, SSH key, host key trust)
//   OFFSITE_AUTHORIZED_KEYS  the sshd's authorized_keys file: the Settings steps paste the box's new public
//                        key there, as the owner does on the server
//   OFFSITE_SHARE_DIRS   comma-separated NAME=PATH of the shares the Settings steps add (the first through
//                        the folder picker, the others typed)
//   OFFSITE_RESTORE_FILE a file of the first share (path relative to it, ASCII) the Restore steps download
//   OFFSITE_RESTORE_DIR  a top-level folder of the first share the Restore steps restore into OFFSITE_RESTORE_TO
//   OFFSITE_RESTORE_TO   a folder inside a data volume (need not exist)
//   OFFSITE_USB_KEY      a folder holding an `offsite-bundle` (the USB key's content) and
//   OFFSITE_USB_MOUNT    the folder below the box's `[usb] watch` to bind-mount it on, read-only (the USB steps
//                        run `mount`, so they need root); the bundle's config adds a share named "music"
//   OFFSITE_BUNDLE_PASSPHRASE  that bundle's passphrase
//   OFFSITE_EXPORT_TO    where the bundle exported from the page (with the keys) is saved
//   OFFSITE_CHROMIUM     the browser (default /usr/bin/chromium)
//   OFFSITE_RUN_TIMEOUT_MS  how long a backup started from the page may take (default 120000)
//
// By hand (with `offsite serve` running and its setup code at hand):
//   cd tests/browser && npm ci && OFFSITE_URL=https://127.0.0.1:8443 OFFSITE_SETUP_CODE=… node admin.mjs
//
// The test is a list of named steps, run in order in one browser page (one session, as a user would).
// Each step does its actions and assertions; then the page is saved as a full-page screenshot
// `NN-name.png` at a desktop viewport (1280×800) and `NN-name-phone.png` at a phone viewport (390×844).
// One line per passed step is printed; the first failure saves `NN-name-FAILED.png`, prints what failed
// (with the page's message line and the browser's console) and exits with status 1.
//
// Adding a step: append `step("name", async (t) => { … })` to the section it belongs to below (first run,
// Settings, backup, Restore). `t.page` is the Playwright page, `t.env` the inputs above, `t.state` an
// object shared between steps, and `t.check(cond, text)` / `t.visible(sel)` / `t.hidden(sel)` /
// `t.text(sel, re)` assert. A step ends with the page in the state its screenshot should show; it fails if
// the page's message line then shows an error, unless it is declared with `{ error: true }`.

import { chromium } from "playwright-core";
import { appendFileSync, copyFileSync, mkdtempSync, mkdirSync, readFileSync, rmSync, readdirSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const env = {
  url: (process.env.OFFSITE_URL || "").replace(/\/+$/, ""),
  setupCode: process.env.OFFSITE_SETUP_CODE || "",
  password: process.env.OFFSITE_PASSWORD || "browser test password 1",
  shares: (process.env.OFFSITE_SHARES || "").split(",").map((s) => s.trim()).filter(Boolean),
  screenshots: resolve(process.env.OFFSITE_SCREENSHOTS || "screenshots"),
  chromium: process.env.OFFSITE_CHROMIUM || "/usr/bin/chromium",
  runTimeout: Number(process.env.OFFSITE_RUN_TIMEOUT_MS || 120000),
  ssh: {
    host: process.env.OFFSITE_SSH_HOST || "",
    port: process.env.OFFSITE_SSH_PORT || "",
    user: process.env.OFFSITE_SSH_USER || "",
    path: process.env.OFFSITE_SSH_PATH || "",
    fingerprint: process.env.OFFSITE_SSH_FINGERPRINT || "",
    authorizedKeys: process.env.OFFSITE_AUTHORIZED_KEYS || "",
  },
  restoreFile: process.env.OFFSITE_RESTORE_FILE || "",
  restoreDir: process.env.OFFSITE_RESTORE_DIR || "",
  restoreTo: process.env.OFFSITE_RESTORE_TO || "",
  usbKey: process.env.OFFSITE_USB_KEY || "",
  usbMount: process.env.OFFSITE_USB_MOUNT || "",
  bundlePassphrase: process.env.OFFSITE_BUNDLE_PASSPHRASE || "",
  exportTo: process.env.OFFSITE_EXPORT_TO || "",
  shareDirs: (process.env.OFFSITE_SHARE_DIRS || "").split(",").filter(Boolean).map((x) => {
    const i = x.indexOf("=");
    return { name: x.slice(0, i), path: x.slice(i + 1) };
  }),
};

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
// Waits for one UI change (not for a backup: that is env.runTimeout).
const UI_TIMEOUT = 15000;

// --- assertions ------------------------------------------------------------------------------------------
class StepFailure extends Error {}

function makeChecks(page) {
  const check = (cond, text) => {
    if (!cond) throw new StepFailure(text);
  };
  return {
    check,
    // Waits until the element is visible (so also: exists).
    visible: async (sel, timeout = UI_TIMEOUT) => {
      try {
        await page.locator(sel).first().waitFor({ state: "visible", timeout });
      } catch {
        throw new StepFailure(`${sel} is not visible`);
      }
    },
    // Waits until the element is hidden or gone.
    hidden: async (sel, timeout = UI_TIMEOUT) => {
      try {
        await page.locator(sel).first().waitFor({ state: "hidden", timeout });
      } catch {
        throw new StepFailure(`${sel} is still visible`);
      }
    },
    // Waits until the element's text matches `re`; returns the text.
    text: async (sel, re, timeout = UI_TIMEOUT) => {
      const deadline = Date.now() + timeout;
      let last = null;
      for (;;) {
        last = await page.locator(sel).first().textContent({ timeout: 1000 }).catch(() => null);
        if (last !== null && re.test(last)) return last;
        if (Date.now() > deadline) throw new StepFailure(`${sel} says ${JSON.stringify(last)}, expected ${re}`);
        await page.waitForTimeout(100);
      }
    },
  };
}

// --- the steps -------------------------------------------------------------------------------------------
const steps = [];
// `opts.error: true`: the step ends with an error on the page's message line (otherwise that fails it).
const step = (name, run, opts = {}) => steps.push({ name, run, ...opts });

// The screens a logged-in user can see: exactly one is visible.
async function onlyScreen(t, id) {
  await t.visible(`#${id}`);
  for (const other of ["setup", "login", "dashboard", "settings", "restore"]) {
    if (other !== id) await t.hidden(`#${other}`);
  }
}

// First run: setup code and password, a wrong password, log out and in.
step("setup-screen", async (t) => {
  await t.page.goto(t.env.url + "/");
  await onlyScreen(t, "setup");
  await t.hidden("#tabs");
  t.check(await t.page.title() === "offsite", `the title is ${JSON.stringify(await t.page.title())}`);
});

step("setup-wrong-code", async (t) => {
  await t.page.fill("#setup-form [name=code]", "not-the-code");
  await t.page.fill("#setup-form [name=password]", t.env.password);
  await t.page.click("#setup-form button");
  await t.visible("#message.error");
  await t.text("#message.error", /\S/);
  await onlyScreen(t, "setup");
}, { error: true });

step("setup-done-key-needed", async (t) => {
  await t.page.fill("#setup-form [name=code]", t.env.setupCode);
  await t.page.fill("#setup-form [name=password]", t.env.password);
  await t.page.click("#setup-form button");
  // A box without an encryption key opens on the key, not on the dashboard.
  await onlyScreen(t, "settings");
  await t.visible("#tabs");
  await t.text("#message", /Password set/);
  await t.visible("#key-missing");
  await t.visible("#key-create");
});

step("key-created-recovery-text", async (t) => {
  await t.page.click("#key-create");
  await t.visible("#key-new");
  await t.hidden("#key-missing");
  const text = await t.text("#key-recovery", /^offsite-key 1\nsuite \S+\nkey-id [0-9a-f]{16}\nmaster [0-9a-f]{64}\n$/);
  t.state.keyId = text.match(/key-id (\S+)/)[1];
  await t.text("#message", /save its recovery text/);
});

step("key-saved", async (t) => {
  await t.page.check("#key-saved");
  await t.hidden("#key-new");
  // The recovery text is gone from the page once the owner says it is saved.
  const left = await t.page.locator("#key-recovery").textContent();
  t.check(left === "", "the recovery text is still in the page");
  await t.text("#key-info", new RegExp("^Key " + t.state.keyId));
  const again = await t.page.evaluate(() => fetch("/api/config").then((r) => r.text()));
  t.check(!/master [0-9a-f]{64}/.test(again), "the config API returns the key");
  await t.page.click("#tabs [data-screen=dashboard]");
  await onlyScreen(t, "dashboard");
  await t.text("#next", /\S/);
});

step("logout", async (t) => {
  await t.page.click("#logout");
  await onlyScreen(t, "login");
  await t.hidden("#tabs");
  // The session is gone on the server too, not only hidden.
  const status = await t.page.evaluate(() => fetch("/api/status").then((r) => r.status));
  t.check(status === 401, `/api/status after logout answers ${status}, not 401`);
});

step("login-wrong-password", async (t) => {
  await t.page.fill("#login-form [name=password]", "wrong password!!");
  await t.page.click("#login-form button");
  await t.visible("#message.error");
  await t.text("#message.error", /\S/);
  await onlyScreen(t, "login");
}, { error: true });

step("login", async (t) => {
  await t.page.fill("#login-form [name=password]", t.env.password);
  await t.page.click("#login-form button");
  await onlyScreen(t, "dashboard");
  await t.visible("#tabs");
  await t.text("#message", /^$/);
  // A reload keeps the session.
  await t.page.reload();
  await onlyScreen(t, "dashboard");
});

// ---------------------------------------------------------------------------------------------------------
// Settings screen (web-ui/settings.js): target (t.env.ssh), the box's SSH key and its authorized_keys line,
// test connection and host key trust, shares through the folder picker, schedule. The key was created in
// the first-run steps above.
// ---------------------------------------------------------------------------------------------------------
step("settings-target", async (t) => {
  await t.page.click("#tabs [data-screen=settings]");
  await onlyScreen(t, "settings");
  await t.hidden("#sshkey-section");
  const f = "#target-form ";
  await t.page.fill(f + "[name=host]", t.env.ssh.host);
  await t.page.fill(f + "[name=port]", String(t.env.ssh.port));
  await t.page.fill(f + "[name=user]", t.env.ssh.user);
  await t.page.fill(f + "[name=path]", t.env.ssh.path);
  await t.page.click("#target-save");
  await t.text("#message", /Target saved/);
  await t.visible("#sshkey-section");
  await t.visible("#hostkey-section");
});

step("settings-ssh-key", async (t) => {
  await t.visible("#sshkey-none");
  await t.page.click("#sshkey-generate");
  await t.visible("#sshkey-show");
  const line = await t.page.inputValue("#sshkey-line");
  t.check(/^ssh-ed25519 \S+ offsite@/.test(line), `the authorized_keys line is ${JSON.stringify(line)}`);
  const restricted = await t.page.inputValue("#sshkey-rrsync");
  t.check(restricted.startsWith('command="rrsync ') && restricted.endsWith(line), `the rrsync line is ${JSON.stringify(restricted)}`);
  // The owner pastes the line on the server.
  t.check(t.env.ssh.authorizedKeys, "OFFSITE_AUTHORIZED_KEYS is not set");
  appendFileSync(t.env.ssh.authorizedKeys, line + "\n");
});

step("settings-host-key-trust", async (t) => {
  await t.page.click("#hostkey-test");
  await t.visible("#hostkey-result");
  const fp = await t.text("#hostkey-fingerprint", /^SHA256:/);
  t.check(fp === t.env.ssh.fingerprint, `the page shows ${fp}, the host's key is ${t.env.ssh.fingerprint}`);
  await t.text("#hostkey-status", /Not trusted yet/);
  await t.visible("#hostkey-trust");
  await t.page.click("#hostkey-trust");
  await t.text("#hostkey-status", /^Trusted\.$/);
  await t.hidden("#hostkey-trust");
  await t.text("#hostkey-connection", /Logged in, and the remote folder answers/);
});

step("settings-shares", async (t) => {
  const [first, ...rest] = t.env.shareDirs;
  t.check(first, "OFFSITE_SHARE_DIRS is not set");
  // The first share through the folder picker: from the data volumes down to its folder.
  await t.page.click("#share-add");
  await t.page.click("#shares-list fieldset:last-child .share-choose");
  await t.visible("#picker");
  await t.text("#picker-path", /Data volumes/);
  const parts = first.path.split("/").filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const dir = "/" + parts.slice(0, i).join("/");
    const button = t.page.locator(`#picker-dirs button[title="${dir}"]`);
    if (await button.count()) {
      await button.click();
      await t.text("#picker-path", new RegExp("^" + dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$"));
    }
  }
  await t.text("#picker-path", new RegExp(first.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$"));
  await t.page.click("#picker-use");
  await t.hidden("#picker");
  const row = "#shares-list fieldset:last-child ";
  t.check(await t.page.inputValue(row + "[name=path]") === first.path, "the picker did not fill the folder");
  await t.page.fill(row + "[name=name]", first.name);
  await t.page.fill(row + "[name=exclude]", "*.tmp");
  for (const sh of rest) {
    await t.page.click("#share-add");
    await t.page.fill(row + "[name=name]", sh.name);
    await t.page.fill(row + "[name=path]", sh.path);
  }
  await t.page.click("#shares-save");
  await t.text("#message", /Shares saved/);
  const names = await t.page.locator("#shares-list legend").allTextContents();
  t.check(JSON.stringify(names) === JSON.stringify(t.env.shareDirs.map((x) => x.name)), `the shares are ${JSON.stringify(names)}`);
});

step("settings-schedule", async (t) => {
  await t.page.fill("#schedule-form [name=at]", "03:40");
  await t.page.fill("#schedule-form [name=jitter_minutes]", "0");
  await t.page.check("#schedule-form [name=enabled]");
  await t.page.click("#schedule-save");
  await t.text("#message", /Schedule saved/);
  await t.page.click("#tabs [data-screen=dashboard]");
  await onlyScreen(t, "dashboard");
  // The next run follows the new window (in the browser's time zone, which is the box's here).
  await t.text("#next", /Next run: .*3:40/);
});

// Backup: run now, watch it, history, report.
step("run-now-progress", async (t) => {
  await t.page.click("#tabs [data-screen=dashboard]");
  await onlyScreen(t, "dashboard");
  // Record every state of the progress bar and the run text, however short-lived.
  await t.page.evaluate(() => {
    const seen = (window.__seen = { texts: [], bars: [], barShown: false });
    const bar = document.getElementById("bar");
    const text = document.getElementById("run-text");
    const note = () => {
      if (text.textContent && seen.texts[seen.texts.length - 1] !== text.textContent) seen.texts.push(text.textContent);
      if (!bar.hidden) seen.barShown = true;
      const b = `${bar.getAttribute("value")}/${bar.getAttribute("max")}`;
      if (seen.bars[seen.bars.length - 1] !== b) seen.bars.push(b);
    };
    new MutationObserver(note).observe(document.getElementById("run"), {
      subtree: true, childList: true, characterData: true, attributes: true,
    });
  });
  await t.page.click("#run-now");
  await t.text("#message", /Backup started/);
  // Running: the bar and the cancel button show, the run text counts up.
  await t.visible("#bar", t.env.runTimeout);
  await t.visible("#cancel");
  await t.hidden("#run-now");
  await t.text("#run-text", /^Backing up: \d+ files \(.+\), \d+ unchanged$/);
});

step("run-finished-ok", async (t) => {
  await t.text("#last", /^Last run: /, t.env.runTimeout);
  const last = await t.text("#last", /\S/);
  const cls = await t.page.getAttribute("#last", "class");
  t.check(cls === "ok" && last === "Last run: ok", `the run ended with ${JSON.stringify(last)} (class ${cls})`);
  await t.hidden("#bar");
  await t.hidden("#cancel");
  await t.visible("#run-now");
  const seen = await t.page.evaluate(() => window.__seen);
  t.check(seen.barShown, "the progress bar never showed during the run");
  t.check(seen.texts.some((s) => /^Backing up: [1-9]\d* files/.test(s)),
    `the run text never counted files: ${JSON.stringify(seen.texts)}`);
  // At the end the bar is full (value = max) before it hides.
  t.check(seen.bars.some((b) => { const [v, m] = b.split("/"); return v !== "null" && v === m; }),
    `the progress bar never reached its end: ${JSON.stringify(seen.bars)}`);
  t.state.runTexts = seen.texts;
});

step("history", async (t) => {
  const rows = t.page.locator("#history tbody tr");
  await t.visible("#history tbody tr");
  const cells = await rows.evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
  for (const share of t.env.shares) {
    const row = cells.find((c) => c[1] === share);
    t.check(row, `no history row for share ${share}: ${JSON.stringify(cells)}`);
    t.check(row[2] === "ok", `share ${share} has status ${row[2]} in the history`);
    t.check(Number(row[3]) > 0, `share ${share} shows ${row[3]} files in the history`);
  }
  t.check(cells.length >= Math.max(1, t.env.shares.length), `the history has ${cells.length} rows`);
  await t.text("#log", /\S/);
});

step("report", async (t) => {
  await t.page.click("#history tbody tr >> nth=0");
  await t.text("#report h3", /^Run of /);
  const lines = await t.page.locator("#report p").allTextContents();
  for (const share of t.env.shares) {
    t.check(lines.includes(`${share}: ok`), `the report has no line "${share}: ok": ${JSON.stringify(lines)}`);
  }
  await t.page.locator("#report").scrollIntoViewIfNeeded();
});

// ---------------------------------------------------------------------------------------------------------
// Restore screen (web-ui/restore.js): browse the snapshot the backup steps made, download a file (compared
// with the share's own), restore a folder to the box (compared by browser.rs afterwards, whole).
// ---------------------------------------------------------------------------------------------------------
const entry = (name) => `#restore-list li.restore-entry:has(.restore-name:text-is("${name}"))`;

step("restore-browse", async (t) => {
  const share = t.env.shareDirs[0];
  await t.page.click("#tabs [data-screen=restore]");
  await onlyScreen(t, "restore");
  await t.page.selectOption("#restore-share", share.name);
  await t.visible(entry(t.env.restoreDir + "/"));
  const snapshots = await t.page.locator("#restore-snapshot option").count();
  t.check(snapshots === 1, `the share has ${snapshots} snapshots in the list, not 1`);
  // Into a folder and back, by the breadcrumbs.
  await t.page.click(entry(t.env.restoreDir + "/") + " button.restore-dir");
  await t.text("#restore-crumbs", new RegExp(t.env.restoreDir));
  await t.visible("#restore-list li.restore-entry");
  await t.page.click("#restore-crumb-root");
  await t.visible(entry(t.env.restoreFile));
});

step("restore-download-file", async (t) => {
  const share = t.env.shareDirs[0];
  await t.page.check(entry(t.env.restoreFile) + " input.restore-check");
  await t.text("#restore-selected", /^1 selected$/);
  const [download] = await Promise.all([
    t.page.waitForEvent("download", { timeout: UI_TIMEOUT }),
    t.page.click("#restore-download"),
  ]);
  const failure = await download.failure();
  t.check(!failure, `the download failed: ${failure}`);
  t.check(download.suggestedFilename() === t.env.restoreFile.split("/").pop(),
    `the download is named ${download.suggestedFilename()}`);
  const got = readFileSync(await download.path());
  const want = readFileSync(share.path + "/" + t.env.restoreFile);
  t.check(Buffer.compare(got, want) === 0, `the downloaded file differs (${got.length} vs ${want.length} bytes)`);
  await t.page.uncheck(entry(t.env.restoreFile) + " input.restore-check");
});

step("restore-folder-to-box", async (t) => {
  await t.page.check(entry(t.env.restoreDir + "/") + " input.restore-check");
  await t.page.fill("#restore-to", t.env.restoreTo);
  await t.page.click("#restore-start");
  await t.text("#restore-status", /^Restored \d+ files .* Everything verified\.$/, t.env.runTimeout);
  const problems = await t.page.locator("#restore-problems li").count();
  t.check(problems === 0, `the restore reports ${problems} problems`);
});

// The config bundle: export from the page, then a USB key with another box's bundle, staged until the admin
// enters its passphrase.
step("bundle-export-download", async (t) => {
  await t.page.click("#tabs [data-screen=settings]");
  await onlyScreen(t, "settings");
  const f = "#bundle-export-form ";
  await t.page.fill(f + "[name=passphrase]", t.env.bundlePassphrase);
  await t.page.fill(f + "[name=passphrase2]", t.env.bundlePassphrase);
  await t.hidden("#bundle-password-label");
  await t.page.check(f + "[name=with_keys]");
  await t.visible("#bundle-password-label");
  await t.page.fill(f + "[name=password]", t.env.password);
  const [download] = await Promise.all([
    t.page.waitForEvent("download", { timeout: UI_TIMEOUT }),
    t.page.click("#bundle-export"),
  ]);
  const failure = await download.failure();
  t.check(!failure, `the download failed: ${failure}`);
  t.check(download.suggestedFilename() === "offsite-bundle", `the download is named ${download.suggestedFilename()}`);
  copyFileSync(await download.path(), t.env.exportTo);
  const head = readFileSync(t.env.exportTo).subarray(0, 8).toString("latin1");
  t.check(head === "OFFSITEB", `the download starts with ${JSON.stringify(head)}`);
  await t.text("#message", /Bundle downloaded/);
});

step("usb-key-staged", async (t) => {
  mkdirSync(t.env.usbMount, { recursive: true });
  execFileSync("mount", ["--bind", "-o", "ro", t.env.usbKey, t.env.usbMount]);
  // The status screen tells once the service has seen the key (it reacts to the mount, not by polling).
  const deadline = Date.now() + UI_TIMEOUT;
  for (;;) {
    await t.page.click("#tabs [data-screen=dashboard]");
    await onlyScreen(t, "dashboard");
    if (await t.page.locator("#bundle-waiting").isVisible()) break;
    t.check(Date.now() < deadline, "the status screen does not show the waiting bundle");
    await t.page.waitForTimeout(300);
  }
});

step("usb-bundle-shown-in-settings", async (t) => {
  await t.page.click("#tabs [data-screen=settings]");
  await t.visible("#bundle-staged-section");
  await t.text("#bundle-file", /offsite-bundle$/);
  await t.page.locator("#bundle-staged-section").scrollIntoViewIfNeeded();
});

step("usb-bundle-wrong-passphrase", async (t) => {
  await t.page.fill("#bundle-passphrase", "not the bundle's passphrase");
  await t.page.click("#bundle-apply");
  await t.text("#message.error", /wrong passphrase/);
  await t.visible("#bundle-staged-section");
}, { error: true });

step("usb-bundle-applied", async (t) => {
  await t.page.fill("#bundle-passphrase", t.env.bundlePassphrase);
  await t.page.click("#bundle-apply");
  await t.visible("#bundle-result-section");
  await t.text("#bundle-changes", /share music: .*\(added\)/);
  await t.hidden("#bundle-staged-section");
  await t.text("#message", /The bundle was applied/);
  // The settings shown are the bundle's now.
  const names = await t.page.locator("#shares-list legend").allTextContents();
  t.check(names.includes("music"), `the shares are ${JSON.stringify(names)}`);
});

// --- the runner ------------------------------------------------------------------------------------------
function fail(text) {
  console.error(`browser test: ${text}`);
  process.exit(1);
}

if (!env.url) fail("OFFSITE_URL is not set (the page's base URL, e.g. https://127.0.0.1:8443)");
if (!env.setupCode) fail("OFFSITE_SETUP_CODE is not set (the code `offsite serve` printed)");
mkdirSync(env.screenshots, { recursive: true });
for (const f of readdirSync(env.screenshots)) if (f.endsWith(".png")) rmSync(join(env.screenshots, f));

// A whole-run guard, so a hung browser cannot hang the test suite.
const guard = setTimeout(() => fail("timed out after 10 minutes"), 600000);

const profile = mkdtempSync(join(tmpdir(), "offsite-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: env.chromium,
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: DESKTOP,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
    ],
  });
} catch (e) {
  rmSync(profile, { recursive: true, force: true });
  fail(`could not start ${env.chromium}: ${e.message}`);
}

const page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(UI_TIMEOUT);
const consoleLines = [];
const pageErrors = [];
page.on("console", (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => pageErrors.push(String(e)));
page.on("response", (r) => { if (r.status() >= 400) consoleLines.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`); });
page.on("requestfailed", (r) => consoleLines.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));

const t = { page, env, state: {}, ...makeChecks(page) };
let status = 0;
const started = Date.now();
for (const [i, s] of steps.entries()) {
  const file = `${String(i + 1).padStart(2, "0")}-${s.name}`;
  const t0 = Date.now();
  try {
    const errorsBefore = pageErrors.length;
    await s.run(t);
    t.check(pageErrors.length === errorsBefore, `the page threw: ${pageErrors.slice(errorsBefore).join("; ")}`);
    if (!s.error) {
      // Errors of a screen's loading arrive late (its load() is not awaited): give them a moment.
      await page.waitForTimeout(300);
      const m = await page.locator("#message").evaluate((m) => (m.classList.contains("error") ? m.textContent : null));
      t.check(m === null, `the page shows an error: ${JSON.stringify(m)}`);
    }
    await page.screenshot({ path: join(env.screenshots, `${file}.png`), fullPage: true });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: join(env.screenshots, `${file}-phone.png`), fullPage: true });
    await page.setViewportSize(DESKTOP);
    console.log(`ok   ${file} (${Date.now() - t0} ms)`);
  } catch (e) {
    const why = e instanceof StepFailure ? e.message : (e && e.stack) || String(e);
    await page.screenshot({ path: join(env.screenshots, `${file}-FAILED.png`), fullPage: true }).catch(() => {});
    const message = await page.locator("#message").textContent({ timeout: 1000 }).catch(() => "?");
    console.error(`FAIL ${file}: ${why}`);
    console.error(`     the page's message line: ${JSON.stringify(message)}; page at ${page.url()}`);
    console.error(`     screenshot: ${join(env.screenshots, `${file}-FAILED.png`)}`);
    if (consoleLines.length) console.error("     browser console:\n       " + consoleLines.slice(-30).join("\n       "));
    status = 1;
    break;
  }
}
await context.close().catch(() => {});
rmSync(profile, { recursive: true, force: true });
clearTimeout(guard);
if (status === 0) {
  console.log(`all ${steps.length} steps passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${env.screenshots}`);
}
process.exit(status);
