//! Hostile local input (issue 9): a share with names holding every byte value but `/` and NUL, a path of
//! almost 4,000 bytes, symlink loops, symlinks that point out of the share (never followed), a FIFO and a
//! device; then a restore into a destination where an attacker planted symlinks. Sealed and plain shares,
//! folder target (a local `rsync --server`).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;

/// Builds the hostile share; returns the relative paths the backup must skip (FIFO, device).
fn hostile_share(share: &Path) -> Vec<Vec<u8>> {
    // One file per byte value (1..=255 without '/'), inside a name: "n<b>n".
    let bytes = share.join("bytes");
    fs::create_dir_all(&bytes).unwrap();
    for b in 1u8..=255 {
        if b == b'/' {
            continue;
        }
        let name = [b'n', b, b'n'];
        fs::write(bytes.join(OsStr::from_bytes(&name)), [b; 3]).unwrap();
    }
    // Names that are only dots, dashes or spaces, or look like options and patterns.
    for name in ["...", "-", "--delete", " ", "*", "[a-z]", "#x", "\\", "~"] {
        fs::write(bytes.join(format!("odd{name}")), name).unwrap();
        fs::write(bytes.join(name), name).unwrap();
    }
    // A deep path of almost 4,000 bytes (components of 200 bytes).
    let mut deep = share.join("deep");
    let mut rel_len = "deep".len();
    let mut i = 0u8;
    while rel_len + 202 < 3_990 {
        let c = format!("{}{}", (b'a' + i % 26) as char, "x".repeat(199));
        deep.push(&c);
        rel_len += 1 + c.len();
        i += 1;
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf.txt"), b"at the bottom").unwrap();
    // Symlinks: loops, out of the share, to a folder outside.
    let links = share.join("links");
    fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink("self", links.join("self")).unwrap();
    std::os::unix::fs::symlink("b", links.join("a")).unwrap();
    std::os::unix::fs::symlink("a", links.join("b")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", links.join("passwd")).unwrap();
    std::os::unix::fs::symlink("../../../../..", links.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc", links.join("etc-dir")).unwrap();
    // Special files: skipped and reported, the rest goes on.
    let mut skipped = Vec::new();
    let fifo = share.join("a-fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    skipped.push(b"a-fifo".to_vec());
    let dev = share.join("a-device");
    if std::process::Command::new("mknod")
        .arg(&dev)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success())
    {
        skipped.push(b"a-device".to_vec());
    }
    skipped
}

fn restore(s: &Setup, to: &Path, extra: &[&str]) -> std::process::Output {
    offsite()
        .args(["restore", "--config"])
        .arg(&s.config)
        .args(["--share", "docs", "--to"])
        .arg(to)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn hostile_names_links_and_special_files_round_trip() {
    for encrypt in [true, false] {
        let s = Setup::new();
        let skipped = hostile_share(&s.share);
        s.local_config(if encrypt { "" } else { "encrypt = false" });
        let (out, r) = s.backup(&[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "encrypt={encrypt}: {err}\n{r}");
        assert_eq!(r["shares"][0]["status"], "partial", "{r}");
        let mut reported: Vec<Vec<u8>> = r["shares"][0]["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["path"].as_str().unwrap().as_bytes().to_vec())
            .collect();
        reported.sort();
        let mut want = skipped.clone();
        want.sort();
        assert_eq!(reported, want, "encrypt={encrypt}: skipped: {r}");

        // Nothing from outside the share went to the target: no file holds /etc/passwd's content.
        let passwd = fs::read("/etc/passwd").unwrap();
        let restored_dir = s.dir.path().join("restored");
        let out = restore(&s, &restored_dir, &[]);
        assert!(
            out.status.success(),
            "encrypt={encrypt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let is_skipped = |rel: &[u8]| skipped.iter().any(|x| x == rel);
        let got = tree_map(&restored_dir, &|_| false);
        assert_eq!(
            got,
            tree_map(&s.share, &is_skipped),
            "encrypt={encrypt}: the restore differs from the share"
        );
        assert!(got.values().all(|v| *v != passwd));
        // The links came back as links, with their targets, not followed.
        let links = restored_dir.join("links");
        for (name, target) in [
            ("self", "self"),
            ("a", "b"),
            ("passwd", "/etc/passwd"),
            ("etc-dir", "/etc"),
        ] {
            assert_eq!(
                fs::read_link(links.join(name)).unwrap(),
                PathBuf::from(target)
            );
        }

        // A destination where an attacker planted symlinks: into a folder outside, and over a file.
        let planted = s.dir.path().join("planted");
        let outside = s.dir.path().join("outside");
        fs::create_dir_all(&planted).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, planted.join("bytes")).unwrap();
        std::os::unix::fs::symlink(outside.join("leaf"), planted.join("links")).unwrap();
        let out = restore(&s, &planted, &["--overwrite"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "encrypt={encrypt}: the restore wrote through a planted symlink: {err}"
        );
        assert!(!outside.join("leaf").exists());
        assert_eq!(
            out.status.code(),
            Some(4),
            "encrypt={encrypt}: files that could not be written are reported: {err}"
        );
        // What was not behind a planted link was restored.
        let deep = tree_map(&planted.join("deep"), &|_| false);
        assert_eq!(
            deep.into_values().collect::<Vec<_>>(),
            [b"at the bottom".to_vec()],
            "encrypt={encrypt}: the deep file"
        );
    }
}
