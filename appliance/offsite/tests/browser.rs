//! The admin page in a real browser: headless Chromium (Debian's `/usr/bin/chromium`) driven by
//! `tests/browser/admin.mjs` (Node, `playwright-core` pinned in `tests/browser/package-lock.json`).
//!
//! This test sets up what the page works against — a private OpenSSH server with the real `rsync` behind
//! it as the target, two shares with files, a master key — starts `offsite serve` on a free loopback port,
//! reads the one-time setup code from its log, and runs `node tests/browser/admin.mjs` with the inputs in
//! environment variables (`OFFSITE_URL`, `OFFSITE_SETUP_CODE`, `OFFSITE_SHARES`, `OFFSITE_SSH_*`,
//! `OFFSITE_SCREENSHOTS`; the script's header lists them all and says how to add a step). The script
//! does the first-run setup, a wrong password, log out and in, "run now" with its live progress, the
//! history and a run's report, the Restore screen, the export of a config bundle and the staged import of
//! another box's bundle from a (bind-mounted, so: root needed) USB key, saving a desktop and a phone
//! screenshot per step. Afterwards this test
//! checks the screenshots (non-empty PNGs) and that the run really left a snapshot per share on the target.
//!
//! Screenshots go to `<cargo target dir>/browser-screenshots/` (printed in the test output; replaced by
//! each run).
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules` (`npm ci` in `tests/browser`;
//! `tests/run` installs all three). Without them the test is skipped with the reason printed, or fails
//! when `CI` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::web::*;
use common::*;
use testpeers::TestSshd;

const CHROMIUM: &str = "/usr/bin/chromium";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `<target dir>/browser-screenshots` (the integration-test temp dir is `<target dir>/tmp`).
fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("browser-screenshots")
}

/// What is missing to run the browser test, if anything.
fn missing_tools(browser_dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        missing.push("node (Debian package nodejs, with npm)".to_owned());
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (Debian package chromium)"));
    }
    if !browser_dir.join("node_modules/playwright-core").is_dir() {
        missing.push(format!(
            "{}/node_modules (run `npm ci` there)",
            browser_dir.display()
        ));
    }
    missing
}

#[test]
fn admin_page_in_headless_chromium() {
    let browser_dir = workspace().join("tests/browser");
    let missing = missing_tools(&browser_dir);
    if !missing.is_empty() {
        let what = missing.join(", ");
        if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
            panic!("the browser test needs {what}; `bash tests/run` installs them");
        }
        println!("browser test skipped: missing {what}; `bash tests/run` installs them");
        return;
    }

    // The target: a real sshd + rsync; the box: two shares, a key, the config.
    let sshd = TestSshd::start();
    let s = Setup::new();
    fill_share(&s.share);
    let photos = s.dir.path().join("photos");
    for i in 0..24u8 {
        let p = photos.join(format!("2025/{:02}/img-{i:04}.jpg", i % 12 + 1));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, random(1 << 20, i.wrapping_add(10))).unwrap();
    }
    // A new box: no key, a folder target and no share yet; the page's Settings steps set up the rest.
    std::fs::remove_file(&s.key).unwrap();
    std::fs::write(
        &s.config,
        format!(
            "state_dir = \"state\"\nkey_file = \"master.key\"\n\n[target]\npath = {:?}\n\n[usb]\n\
             watch = [{:?}]\n\n[web]\ndata_volumes = [{:?}]\n",
            s.dir.path().join("nowhere").to_str().unwrap(),
            format!("{}/*", s.dir.path().join("media").display()),
            s.dir.path().to_str().unwrap(),
        ),
    )
    .unwrap();
    // A USB key with another box's config bundle (no keys): a folder target, the docs share and "music".
    let usb = UsbBundle::make(&s);
    let srv = start_serve(&s, "");

    let restored = s.dir.path().join("restored");
    let shots = screenshot_dir();
    println!("browser test: screenshots go to {}", shots.display());
    let started = Instant::now();
    let out = Command::new("node")
        .arg(browser_dir.join("admin.mjs"))
        .current_dir(&browser_dir)
        .env("OFFSITE_URL", &srv.base)
        .env("OFFSITE_SETUP_CODE", &srv.setup_code)
        .env("OFFSITE_SHARES", "docs,photos")
        .env("OFFSITE_SCREENSHOTS", &shots)
        .env("OFFSITE_SSH_HOST", "127.0.0.1")
        .env("OFFSITE_SSH_PORT", sshd.port.to_string())
        .env("OFFSITE_SSH_USER", &sshd.user)
        .env("OFFSITE_SSH_PATH", &s.target)
        .env("OFFSITE_SSH_FINGERPRINT", sshd.host_fingerprint())
        .env("OFFSITE_AUTHORIZED_KEYS", &sshd.authorized_keys)
        .env("OFFSITE_RESTORE_FILE", "report.txt")
        .env("OFFSITE_RESTORE_DIR", "deep")
        .env("OFFSITE_RESTORE_TO", &restored)
        .env(
            "OFFSITE_SHARE_DIRS",
            format!(
                "docs={},photos={}",
                s.share.to_str().unwrap(),
                photos.to_str().unwrap()
            ),
        )
        .env("OFFSITE_USB_KEY", &usb.key_dir)
        .env("OFFSITE_USB_MOUNT", &usb.mount)
        .env("OFFSITE_BUNDLE_PASSPHRASE", BUNDLE_PASSPHRASE)
        .env("OFFSITE_EXPORT_TO", &usb.exported)
        .env("OFFSITE_CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    println!(
        "browser test: node took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nscreenshots in {}\nserve log:\n{}",
        out.status,
        shots.display(),
        std::fs::read_to_string(&srv.log).unwrap_or_default()
    );

    // A desktop and a phone screenshot per passed step, each a real PNG.
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(passed.len() >= 10, "too few steps passed: {stdout}");
    assert!(passed.iter().any(|p| p.ends_with("-run-finished-ok")));
    for name in &passed {
        for file in [format!("{name}.png"), format!("{name}-phone.png")] {
            let bytes = std::fs::read(shots.join(&file))
                .unwrap_or_else(|e| panic!("screenshot {file}: {e}"));
            assert!(
                bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{file} is not a PNG ({} bytes)",
                bytes.len()
            );
        }
    }

    // The run from the page went through sshd: a snapshot per share on the target.
    for share in ["docs", "photos"] {
        let complete = std::fs::read_dir(s.target.join(share))
            .unwrap_or_else(|e| panic!("no {share} folder on the target: {e}"))
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().join(".offsite-manifest").is_file())
            })
            .count();
        assert_eq!(complete, 1, "complete snapshots of {share} on the target");
    }
    // The folder restored from the page is the share's folder, byte for byte.
    assert!(passed.iter().any(|p| p.ends_with("-restore-folder-to-box")));
    assert_eq!(
        tree_map(&restored.join("deep"), &|_| false),
        expected(&s.share.join("deep"), &|_| false),
        "the folder restored from the page"
    );

    // The USB key's bundle, applied from the page: the config has its target and shares now.
    assert!(passed.iter().any(|p| p.ends_with("-usb-bundle-applied")));
    let config = std::fs::read_to_string(&s.config).unwrap();
    assert!(config.contains("name = \"music\""), "{config}");
    assert!(config.contains(usb.target.to_str().unwrap()), "{config}");
    // The bundle exported from the page (with the keys) sets a new box up with the same key.
    let fresh = s.dir.path().join("new-box/offsite.toml");
    ok(&import_bundle(&fresh, &usb.exported, &usb.pass_file));
    assert_eq!(
        std::fs::read(s.dir.path().join("new-box/master.key")).unwrap(),
        std::fs::read(s.dir.path().join("master.key")).unwrap()
    );
    println!("browser test: screenshots in {}", shots.display());
}

const BUNDLE_PASSPHRASE: &str = "usb key passphrase for the browser test";

/// A "USB key" folder with another box's bundle, the mount point the page's steps mount it on (below the
/// box's `[usb] watch`), and where the page's export goes. Unmounted when dropped.
struct UsbBundle {
    key_dir: PathBuf,
    mount: PathBuf,
    exported: PathBuf,
    pass_file: PathBuf,
    target: PathBuf,
}

impl UsbBundle {
    fn make(s: &Setup) -> UsbBundle {
        let dir = s.dir.path();
        let music = dir.join("music");
        let target = dir.join("target2");
        for d in [&music, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(music.join("song.txt"), "la la la\n").unwrap();
        let other = dir.join("other-box.toml");
        std::fs::write(
            &other,
            format!(
                "state_dir = \"other-state\"\nkey_file = \"other.key\"\n[target]\npath = {:?}\n[web]\n\
                 data_volumes = [{:?}]\n[[share]]\nname = \"docs\"\npath = {:?}\n[[share]]\nname = \"music\"\n\
                 path = {:?}\n",
                target.to_str().unwrap(),
                dir.to_str().unwrap(),
                s.share.to_str().unwrap(),
                music.to_str().unwrap()
            ),
        )
        .unwrap();
        let key_dir = dir.join("usb-key");
        std::fs::create_dir_all(&key_dir).unwrap();
        let pass_file = dir.join("bundle-pass");
        std::fs::write(&pass_file, format!("{BUNDLE_PASSPHRASE}\n")).unwrap();
        ok(&export_bundle(
            &other,
            &key_dir.join("offsite-bundle"),
            &pass_file,
            false,
        ));
        UsbBundle {
            key_dir,
            mount: dir.join("media/usb0"),
            exported: dir.join("exported-bundle"),
            pass_file,
            target,
        }
    }
}

impl Drop for UsbBundle {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}
