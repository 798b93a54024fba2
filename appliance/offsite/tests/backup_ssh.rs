//! `offsite backup` through a real OpenSSH server on 127.0.0.1 with the real rsync behind it: a full key,
//! a restricted `rrsync` key, and a target that fills up.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use testpeers::TestSshd;

#[path = "../../rsync-wire/tests/common/peerfs.rs"]
#[allow(dead_code)]
mod peerfs;

fn ssh_target(sshd: &TestSshd, key: &std::path::Path, path: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {}\nuser = {:?}\nidentity_file = {:?}\nknown_hosts = {:?}\npath = {path:?}\ntimeout_secs = 30",
        sshd.port,
        sshd.user,
        key.to_str().unwrap(),
        sshd.known_hosts.to_str().unwrap(),
    )
}

fn restores(s: &Setup, snapshot: &std::path::Path) {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy");
    plain_rsync_copy(snapshot, &copy);
    let restored = unseal_copy(&copy, &s.key, &work.path().join("restored"));
    assert_eq!(restored, expected(&s.share, &|_| false));
}

#[test]
fn backup_over_ssh_with_a_full_and_a_restricted_key() {
    let sshd = TestSshd::start();
    let s = Setup::new();
    fill_share(&s.share);
    s.write_config(
        &ssh_target(&sshd, &sshd.client_key, s.target.to_str().unwrap()),
        "",
    );
    s.backup_ok();
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.backup_ok();
    assert_eq!(counter(&r, "files_read"), 0, "{r}");
    let snaps = s.snapshots(&s.target);
    assert_eq!(snaps.len(), 2);
    restores(&s, &snaps[1]);

    // A key that may only run `rrsync` confined to one folder: the target path is that folder's root.
    let jail = s.dir.path().join("jail");
    fs::create_dir_all(&jail).unwrap();
    let key = sshd.path("rrsync_key");
    testpeers::keygen(&key, "ed25519", "");
    sshd.authorize(&format!(
        "command=\"/usr/bin/rrsync {}\",no-pty,no-agent-forwarding,no-port-forwarding {}",
        jail.display(),
        testpeers::read_pub(&key)
    ));
    s.write_config(&ssh_target(&sshd, &key, "/"), "");
    fs::remove_dir_all(s.dir.path().join("state")).unwrap();
    s.backup_ok();
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(s.share.join("added.txt"), b"added later").unwrap();
    let r = s.backup_ok();
    assert_eq!(
        counter(&r, "files_read"),
        1,
        "only the new file is read, once (small files are sealed while sizing): {r}"
    );
    let snaps = s.snapshots(&jail);
    assert_eq!(snaps.len(), 2, "snapshots land inside the jail");
    restores(&s, &snaps[1]);
    // Unchanged files are hard links across the two jailed snapshots.
    let linked = fs::read_dir(&snaps[0])
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_type().unwrap().is_file()
                && !e.file_name().to_string_lossy().starts_with(".offsite")
        })
        .filter(|e| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(snaps[1].join(e.file_name()))
                .is_ok_and(|m| m.ino() == e.metadata().unwrap().ino())
        })
        .count();
    assert!(linked >= 5, "{linked} hard links");

    // The same restricted key restores and verifies (rrsync allows `--server --sender` in its folder).
    let out = offsite()
        .args(["restore", "--share", "docs", "--to"])
        .arg(s.dir.path().join("restored"))
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree_map(&s.dir.path().join("restored"), &|_| false),
        expected(&s.share, &|_| false)
    );
    let out = offsite()
        .args(["verify", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_full_target_fails_the_run_and_keeps_the_previous_snapshot() {
    if !peerfs::is_root() {
        eprintln!("skipping: mounting a small tmpfs needs root");
        return;
    }
    let sshd = TestSshd::start();
    let s = Setup::new();
    let Some(_mount) = peerfs::Tmpfs::mount(&s.target, "2m") else {
        eprintln!("skipping: tmpfs mount not available");
        return;
    };
    fs::write(s.share.join("small.txt"), b"fits easily").unwrap();
    s.write_config(
        &ssh_target(&sshd, &sshd.client_key, s.target.to_str().unwrap()),
        "compress = false",
    );
    s.backup_ok();
    let first = s.snapshots(&s.target)[0].clone();
    fs::write(s.share.join("big.bin"), random(4 << 20, 9)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let (out, r) = s.backup(&[]);
    assert_eq!(out.status.code(), Some(1), "{r}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    // The earlier snapshot is whole and restorable; the failed one is not marked complete.
    assert!(first.join(".offsite-manifest").is_file());
    let snaps = s.snapshots(&s.target);
    assert!(!snaps.last().unwrap().join(".offsite-manifest").exists());
    fs::remove_file(s.share.join("big.bin")).unwrap();
    restores(&s, &first);
}
