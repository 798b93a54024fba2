//! The USB-key config import of `offsite serve`, with real mounts: a folder holding `offsite-bundle` is
//! bind-mounted read-only below a watched folder (as the image's udev rule mounts a key), the service
//! notices it from the kernel's mount events, stages it, and applies it only when an admin enters the
//! bundle's passphrase on the page. Also: the export of the box's own bundle from the page.
//!
//! Mounting needs CAP_SYS_ADMIN: CI runs as root; elsewhere the test fails and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::web::*;
use common::*;

const PASS: &str = "the bundle's own passphrase";

/// A mount made by the test, undone when dropped (also when an assertion fails).
struct Mounted(PathBuf);

impl Mounted {
    fn bind(from: &Path, to: &Path, read_only: bool) -> Mounted {
        std::fs::create_dir_all(to).unwrap();
        let mut c = Command::new("mount");
        c.arg("--bind");
        if read_only {
            c.args(["-o", "ro"]);
        }
        let ok = c.arg(from).arg(to).status().unwrap().success();
        assert!(
            ok,
            "mount --bind {} {} failed: this test needs root (CAP_SYS_ADMIN)",
            from.display(),
            to.display()
        );
        Mounted(to.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Polls `GET /api/bundle` until `done` holds for its answer (10 s at most).
fn wait_bundle(
    srv: &Serve,
    jar: &Path,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(srv, jar, "GET", "/api/bundle", &[], None);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited 10 s for the USB key: {v}\nserve log:\n{}",
            std::fs::read_to_string(&srv.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn post(srv: &Serve, jar: &Path, csrf: &str, path: &str, body: serde_json::Value) -> Reply {
    request(
        srv,
        jar,
        "POST",
        path,
        &[csrf.to_owned()],
        Some(&body.to_string()),
    )
}

#[test]
fn a_bundle_on_a_usb_key_is_staged_until_an_admin_applies_it() {
    let s = Setup::new();
    fill_share(&s.share);
    let dir = s.dir.path();
    let media = dir.join("media");
    let volumes = format!("data_volumes = [{:?}]", dir.to_str().unwrap());
    s.write_config(&format!("path = {:?}", s.target.to_str().unwrap()), "");
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!(
            "{text}\n[usb]\nwatch = [{:?}]\n",
            format!("{}/*", media.display())
        ),
    )
    .unwrap();

    // Another box's config, exported without keys: another target folder, one more share, 04:45.
    let music = dir.join("music");
    std::fs::create_dir_all(&music).unwrap();
    let target2 = dir.join("target2");
    std::fs::create_dir_all(&target2).unwrap();
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        format!(
            "state_dir = \"other-state\"\nkey_file = {:?}\n[target]\npath = {:?}\n[schedule]\nat = \"04:45\"\n\
             [web]\n{volumes}\n[[share]]\nname = \"docs\"\npath = {:?}\n[[share]]\nname = \"music\"\npath = {:?}\n",
            s.key.to_str().unwrap(),
            target2.to_str().unwrap(),
            s.share.to_str().unwrap(),
            music.to_str().unwrap()
        ),
    )
    .unwrap();
    let key_dir = dir.join("usb-key");
    std::fs::create_dir_all(&key_dir).unwrap();
    let pass_file = dir.join("pass");
    std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
    ok(&export_bundle(
        &other,
        &key_dir.join("offsite-bundle"),
        &pass_file,
        false,
    ));
    // A key with a file of that name that is not a bundle.
    let junk_dir = dir.join("junk-key");
    std::fs::create_dir_all(&junk_dir).unwrap();
    std::fs::write(junk_dir.join("offsite-bundle"), "#!/bin/sh\nrm -rf /\n").unwrap();

    let srv = start_serve(&s, &volumes);
    let serve_log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(
        serve_log.contains("watching for config bundles on USB keys"),
        "{serve_log}"
    );
    let jar = dir.join("jar");

    // Before a login: nothing but 401, and the first-run screen knows of no bundle yet.
    for (m, p) in [
        ("GET", "/api/bundle"),
        ("POST", "/api/bundle/import"),
        ("POST", "/api/bundle/dismiss"),
        ("POST", "/api/bundle/export"),
    ] {
        let r = request(&srv, &jar, m, p, &[], Some("{\"passphrase\":\"x\"}"));
        assert_eq!(r.status, 401, "{m} {p}: {}", r.text());
    }
    let r = request(&srv, &jar, "GET", "/api/session", &[], None);
    assert_eq!(r.json()["bundle_waiting"], false);

    // A key whose offsite-bundle is not a bundle: refused and logged, nothing staged, nothing run.
    let junk = Mounted::bind(&junk_dir, &media.join("usb0"), true);
    let import_log = dir.join("offsite-import.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&import_log)
        .unwrap_or_default()
        .contains("refused")
    {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {}",
            std::fs::read_to_string(&srv.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(junk);
    assert!(
        std::fs::read_to_string(&import_log)
            .unwrap()
            .contains("not an offsite config bundle")
    );

    // The real key, mounted read-only: staged within seconds, and the first-run screen says so.
    let key = Mounted::bind(&key_dir, &media.join("usb1"), true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(&srv, &jar, "GET", "/api/session", &[], None);
        if r.json()["bundle_waiting"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the bundle was not staged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let csrf = first_login(&srv, &jar);
    let v = wait_bundle(&srv, &jar, |v| !v["staged"].is_null());
    assert_eq!(
        v["staged"]["file"].as_str().unwrap(),
        media.join("usb1/offsite-bundle").to_str().unwrap()
    );
    assert_eq!(
        v["usb_keys"],
        serde_json::json!([]),
        "a read-only key is no place to export to"
    );
    let st = request(&srv, &jar, "GET", "/api/status", &[], None).json();
    assert!(
        st["bundle_staged"]
            .as_str()
            .unwrap()
            .ends_with("usb1/offsite-bundle")
    );

    // A wrong passphrase changes nothing, and the bundle stays staged.
    let before = std::fs::read(&s.config).unwrap();
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/import",
        serde_json::json!({ "passphrase": "not the passphrase" }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("wrong passphrase"), "{}", r.text());
    assert_eq!(std::fs::read(&s.config).unwrap(), before);
    // Without the CSRF token: 403 before anything is read.
    let r = request(
        &srv,
        &jar,
        "POST",
        "/api/bundle/import",
        &[],
        Some(&serde_json::json!({ "passphrase": PASS }).to_string()),
    );
    assert_eq!(r.status, 403);
    assert_eq!(std::fs::read(&s.config).unwrap(), before);

    // The right passphrase applies it: the config file and the service both have the new settings.
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/import",
        serde_json::json!({ "passphrase": PASS }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let changes = r.json()["changes"].to_string();
    assert!(changes.contains("share music"), "{changes}");
    assert!(changes.contains("(added)"), "{changes}");
    assert!(changes.contains(target2.to_str().unwrap()), "{changes}");
    let c = request(&srv, &jar, "GET", "/api/config", &[], None).json();
    assert_eq!(c["target"]["path"], target2.to_str().unwrap());
    assert_eq!(c["schedule"]["at"], "04:45");
    let names: Vec<&str> = c["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs", "music"]);
    let written = std::fs::read_to_string(&s.config).unwrap();
    assert!(written.contains("music"), "{written}");
    // The box kept its own state folder and key file (not the other box's `other-state`).
    assert!(!written.contains("other-state"), "{written}");
    assert!(dir.join("offsite.toml.bak").exists());
    let v = wait_bundle(&srv, &jar, |v| v["staged"].is_null());
    assert!(v["staged"].is_null());

    // Unplugged, and plugged in again a moment later: staged again; ignored this time.
    drop(key);
    std::thread::sleep(Duration::from_secs(1));
    let key = Mounted::bind(&key_dir, &media.join("usb1"), true);
    wait_bundle(&srv, &jar, |v| !v["staged"].is_null());
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/dismiss",
        serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_bundle(&srv, &jar, |v| v["staged"].is_null());
    drop(key);

    // Every attempt is in the import log, with who and what, and never the passphrase.
    let log = std::fs::read_to_string(&import_log).unwrap();
    for want in [
        "user=USB watcher",
        "staged",
        "user=admin from 127.0.0.1",
        "rejected",
        "imported",
        "share music",
        "dismissed",
    ] {
        assert!(log.contains(want), "{want:?} not in the import log:\n{log}");
    }
    assert!(!log.contains(PASS) && !log.contains("not the passphrase"));
    let page_log = request(&srv, &jar, "GET", "/api/log", &[], None).text();
    assert!(page_log.contains("imported"), "{page_log}");

    // Export from the page: the keys need the admin password; a short passphrase is refused.
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/export",
        serde_json::json!({ "passphrase": "short", "with_keys": false }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/export",
        serde_json::json!({ "passphrase": PASS, "with_keys": true, "password": "wrong" }),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/export",
        serde_json::json!({ "passphrase": PASS, "with_keys": true, "to": "/etc",
                            "password": "correct horse battery staple" }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/export",
        serde_json::json!({ "passphrase": PASS, "with_keys": true,
                            "password": "correct horse battery staple" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.head.to_ascii_lowercase().contains("attachment"),
        "{}",
        r.head
    );
    assert!(r.body.starts_with(b"OFFSITEB"));
    // It opens with the CLI on a new box, and carries the key.
    let download = dir.join("downloaded-bundle");
    std::fs::write(&download, &r.body).unwrap();
    let fresh = dir.join("new-box/offsite.toml");
    ok(&import_bundle(&fresh, &download, &pass_file));
    assert_eq!(
        std::fs::read(dir.join("new-box/master.key")).unwrap(),
        std::fs::read(&s.key).unwrap()
    );

    // A writable key is offered as a place to export to, and the bundle lands there.
    let rw_dir = dir.join("rw-key");
    std::fs::create_dir_all(&rw_dir).unwrap();
    let rw = Mounted::bind(&rw_dir, &media.join("usb2"), false);
    let v = wait_bundle(&srv, &jar, |v| v["usb_keys"].as_array().unwrap().len() == 1);
    let to = v["usb_keys"][0].as_str().unwrap().to_owned();
    assert_eq!(to, media.join("usb2").to_str().unwrap());
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/export",
        serde_json::json!({ "passphrase": PASS, "with_keys": false, "to": to }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let on_key = std::fs::read(rw_dir.join("offsite-bundle")).unwrap();
    assert!(on_key.starts_with(b"OFFSITEB"));
    // Never over an existing bundle.
    let r = post(
        &srv,
        &jar,
        &csrf,
        "/api/bundle/export",
        serde_json::json!({ "passphrase": PASS, "with_keys": false, "to": to }),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        std::fs::read(rw_dir.join("offsite-bundle")).unwrap(),
        on_key
    );
    drop(rw);
}
