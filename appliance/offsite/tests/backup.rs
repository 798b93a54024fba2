//! `offsite backup` end to end, into a folder target through a locally spawned real `rsync --server`:
//! first and unchanged runs, edits, restore from a plain copy, no plaintext on the target, hard links,
//! awkward excludes, kill -9 and rerun, dry run, config errors.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;

fn is_manifest_or_side(rel: &[u8]) -> bool {
    rel.rsplit(|&b| b == b'/')
        .next()
        .is_some_and(|n| n.starts_with(b".offsite"))
}

/// Restores `snapshot` from a plain rsync copy and compares it with the share.
fn assert_restores(s: &Setup, snapshot: &Path, excluded: &dyn Fn(&[u8]) -> bool) {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy");
    plain_rsync_copy(snapshot, &copy);
    let restored = unseal_copy(&copy, &s.key, &work.path().join("restored"));
    let want = expected(&s.share, excluded);
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "restored names differ"
    );
    for (k, v) in &want {
        assert!(
            restored[k] == *v,
            "content differs: {}",
            String::from_utf8_lossy(k)
        );
    }
}

#[test]
fn first_unchanged_and_edited_runs_restore_from_a_plain_copy() {
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    let r1 = s.backup_ok();
    let files = counter(&r1, "files");
    assert!(files >= 9, "{r1}");
    let snaps = s.snapshots(&s.target);
    assert_eq!(snaps.len(), 1);
    assert!(
        snaps[0].join(".offsite-manifest").is_file(),
        "complete snapshot"
    );
    assert_restores(&s, &snaps[0], &|_| false);

    // Nothing on the target is plaintext: no content marker, no plaintext name.
    let on_target = tree_map(&s.target, &|_| false);
    let plain_names: Vec<Vec<u8>> = tree_map(&s.share, &|_| false)
        .keys()
        .flat_map(|k| {
            k.split(|&b| b == b'/')
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    for (rel, data) in &on_target {
        assert!(
            !data.windows(16).any(|w| w == b"PLAINTEXT-MARKER"),
            "plaintext in {}",
            String::from_utf8_lossy(rel)
        );
        for comp in rel.split(|&b| b == b'/') {
            assert!(
                !plain_names.iter().any(|n| n == comp),
                "plaintext name on the target: {}",
                String::from_utf8_lossy(rel)
            );
        }
    }

    // Second run, nothing changed: nothing read, everything hard-linked to the first snapshot.
    std::thread::sleep(Duration::from_millis(1100));
    let r2 = s.backup_ok();
    assert_eq!(counter(&r2, "files_read"), 0, "{r2}");
    assert_eq!(counter(&r2, "bytes_read"), 0);
    assert_eq!(counter(&r2, "unchanged"), files);
    let snaps = s.snapshots(&s.target);
    assert_eq!(snaps.len(), 2);
    let (a, b) = (&snaps[0], &snaps[1]);
    let mut linked = 0;
    for rel in tree_map(a, &is_manifest_or_side).keys() {
        let p = Path::new(std::ffi::OsStr::from_bytes(rel));
        let (ma, mb) = (
            fs::symlink_metadata(a.join(p)).unwrap(),
            fs::symlink_metadata(b.join(p)).unwrap(),
        );
        assert_eq!(ma.ino(), mb.ino(), "not hard-linked: {}", p.display());
        linked += 1;
    }
    assert!(linked >= 9);

    // Edits: insertion in the middle of the big file, an append, a rename, a delete, a new file.
    let big = s.share.join("big.bin");
    let mut data = fs::read(&big).unwrap();
    data.splice(1_000_000..1_000_000, b"INSERTED".iter().copied());
    fs::write(&big, &data).unwrap();
    let mut report = fs::read(s.share.join("report.txt")).unwrap();
    report.extend_from_slice(b"appended line PLAINTEXT-MARKER\n");
    fs::write(s.share.join("report.txt"), report).unwrap();
    fs::rename(
        s.share.join("photos/2024/img-0001.jpg"),
        s.share.join("photos/2024/renamed.jpg"),
    )
    .unwrap();
    fs::remove_file(s.share.join("empty")).unwrap();
    fs::write(s.share.join("photos/new.txt"), b"new PLAINTEXT-MARKER").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let r3 = s.backup_ok();
    let literal = counter(&r3, "literal_bytes");
    assert!(
        literal < (data.len() as u64) / 8,
        "an insertion must not resend the big file: {literal} literal bytes"
    );
    let snaps = s.snapshots(&s.target);
    assert_eq!(snaps.len(), 3);
    assert_restores(&s, &snaps[2], &|_| false);
    // The older snapshots are untouched.
    assert!(snaps[0].join(".offsite-manifest").is_file());

    // The index the edited run wrote (records kept as they were before the first edit, written after
    // it) lets the next run read nothing.
    std::thread::sleep(Duration::from_millis(1100));
    let r4 = s.backup_ok();
    assert_eq!(counter(&r4, "files_read"), 0, "{r4}");
    assert_eq!(counter(&r4, "unchanged"), counter(&r4, "files"), "{r4}");
    assert_restores(&s, &s.snapshots(&s.target)[3], &|_| false);
}

#[test]
fn excludes_with_awkward_names_are_honoured() {
    let s = Setup::new();
    let names: &[&[u8]] = &[
        b"keep.txt",
        b"drop.tmp",
        b"sub/drop.tmp",
        b"cache/x",
        b"sub/cache/kept-not-anchored",
        b"--dash-file",
        b"sp ace #1.txt",
        b"[bracket]",
        b"q\"uote'd",
        b"star*name",
        b"bad-\xff-bytes.log",
        b"good-\xfe.txt",
    ];
    for n in names {
        let p = s.share.join(std::ffi::OsStr::from_bytes(n));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, n).unwrap();
    }
    s.local_config(
        r#"encrypt = false
exclude = ["*.tmp", "/cache/", "--dash*", "sp ace #1.txt", "[[]bracket]", "q\"uote'd", "star\\*name", "bad-*.log"]"#,
    );
    s.backup_ok();
    let snap = &s.snapshots(&s.target)[0];
    let got = tree_map(snap, &is_manifest_or_side);
    let got: Vec<&[u8]> = got.keys().map(Vec::as_slice).collect();
    assert_eq!(
        got,
        [
            &b"good-\xfe.txt"[..],
            b"keep.txt",
            b"sub/cache/kept-not-anchored"
        ],
        "plain share: names as they are, excluded ones absent"
    );
}

#[test]
fn kill_9_at_several_points_then_rerun() {
    let s = Setup::new();
    for i in 0..12u8 {
        let p = s.share.join(format!("dir{}/file{i}.bin", i % 3));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, random(3 << 20, i)).unwrap();
    }
    s.local_config("");
    for delay_ms in [30u64, 120, 300, 600, 900] {
        let mut child = offsite()
            .args(["backup", "--config"])
            .arg(&s.config)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever landed is whole: the receiving rsync removes its temporary file when the sender
        // disappears.
        s.wait_no_temp_files();
        std::thread::sleep(Duration::from_millis(1000));
    }
    let r = s.backup_ok();
    assert_eq!(r["shares"][0]["status"], "ok", "{r}");
    let snaps = s.snapshots(&s.target);
    let last = snaps.last().unwrap();
    assert!(last.join(".offsite-manifest").is_file());
    // Incomplete snapshots left by the kills were pruned once a complete one existed.
    for snap in &snaps {
        assert!(
            snap.join(".offsite-manifest").is_file(),
            "incomplete left: {}",
            snap.display()
        );
    }
    assert_restores(&s, last, &|_| false);
    // The index is intact: the next run reads nothing.
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.backup_ok();
    assert_eq!(counter(&r, "files_read"), 0, "{r}");
}

#[test]
fn dry_run_writes_nothing_and_bad_config_names_line_and_key() {
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    let (out, r) = s.backup(&["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["shares"][0]["status"], "dryrun");
    assert!(counter(&r, "files") >= 9);
    assert!(s.snapshots(&s.target).is_empty());
    assert!(!s.dir.path().join("state/index").exists());

    fs::write(
        &s.config,
        "state_dir = \"s\"\nkey_file = \"k\"\n[target]\npath = \"/t\"\n[[share]]\nname = \"x\"\npath = \"/x\"\nencrypt = false\nencrypt_names = true\n",
    )
    .unwrap();
    let (out, _) = s.backup(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("offsite.toml:9: share[0].encrypt_names"),
        "{err}"
    );
}

#[test]
fn unreadable_and_special_entries_make_a_partial_run() {
    let s = Setup::new();
    fill_share(&s.share);
    let fifo = s.share.join("a-fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    s.local_config("");
    let (out, r) = s.backup(&[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["shares"][0]["status"], "partial");
    assert_eq!(r["shares"][0]["skipped"][0]["path"], "a-fifo");
    // The snapshot is complete with everything else.
    let snap = &s.snapshots(&s.target)[0];
    assert!(snap.join(".offsite-manifest").is_file());
    assert_restores(&s, snap, &|rel| rel == b"a-fifo");
}

#[test]
fn many_small_batches_give_the_same_snapshot() {
    // Sessions of two entries: every batch must repeat the folders above its first entry, and long-name
    // side files must land beside their names.
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    let (out, r) = s.backup(&["--batch-entries", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(r["shares"][0]["sessions"].as_u64().unwrap() > 5, "{r}");
    let snap = s.snapshots(&s.target)[0].clone();
    assert_restores(&s, &snap, &|_| false);
    std::thread::sleep(Duration::from_millis(1100));
    let (out, r) = s.backup(&["--batch-entries", "3"]);
    assert!(out.status.success());
    assert_eq!(counter(&r, "files_read"), 0, "{r}");
    // The manifest is sent as a delta against the previous one.
    assert!(counter(&r, "literal_bytes") < 2000, "{r}");
    // Nothing to read: the batches went one session after the other into the same folder, and the
    // snapshot is the same, every file linked from the first.
    let snaps = s.snapshots(&s.target);
    assert_eq!(snaps.len(), 2);
    assert_restores(&s, &snaps[1], &|_| false);
    assert_eq!(inodes(&snaps[1]), inodes(&snaps[0]), "not linked");
}

/// The inode of every share file in a snapshot folder on the target, by its name there.
fn inodes(snapshot: &Path) -> std::collections::BTreeMap<Vec<u8>, u64> {
    tree_map(snapshot, &is_manifest_or_side)
        .keys()
        .map(|rel| {
            let p = snapshot.join(std::ffi::OsStr::from_bytes(rel));
            (rel.clone(), fs::symlink_metadata(p).unwrap().ino())
        })
        .collect()
}

#[test]
fn copies_the_index_does_not_know_are_linked_not_sent_again() {
    // A changed file normally announces an upper bound of its sealed size and is read once. Where the
    // target may hold the very version already (index lost; an interrupted run's snapshot), the run
    // learns exact sizes first, so the receiver's quick check links those copies.
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    s.backup_ok();
    let index = s.dir.path().join("state/index/docs.idx");
    assert!(index.is_file());

    // The index is lost (a new box with the old config and key).
    fs::remove_file(&index).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    s.backup_ok();
    let snaps = s.snapshots(&s.target);
    assert_eq!(snaps.len(), 2);
    assert_eq!(inodes(&snaps[1]), inodes(&snaps[0]), "not linked");

    // A run that pushed new versions and was stopped before its manifest: its folder is incomplete and
    // the index is the one from before it.
    let saved = fs::read(&index).unwrap();
    let big = s.share.join("big.bin");
    let mut data = fs::read(&big).unwrap();
    data[2_000_000] ^= 1;
    data.extend_from_slice(&random(70_000, 9));
    fs::write(&big, &data).unwrap();
    fs::write(s.share.join("photos/2024/img-0001.jpg"), random(90_000, 8)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    s.backup_ok();
    let stopped = s.snapshots(&s.target)[2].clone();
    fs::remove_file(stopped.join(".offsite-manifest")).unwrap();
    fs::write(&index, saved).unwrap();
    let before = inodes(&stopped);
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.backup_ok();
    let last = s.snapshots(&s.target).last().unwrap().clone();
    assert_ne!(last, stopped);
    assert_eq!(inodes(&last), before, "not linked: {r}");
    assert_restores(&s, &last, &|_| false);
}

#[test]
fn unchanged_files_missing_from_the_previous_snapshot_are_sent_again() {
    // An unchanged file is listed without being read: its copy in the previous snapshot is linked. When
    // that copy is gone (deleted on the target by hand), the receiver asks for the file, which is then
    // read and sealed as its index record says, byte for byte.
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    s.backup_ok();
    let first = s.snapshots(&s.target)[0].clone();
    // The largest file (streamed through a reading thread) and a small one (read in one go).
    let mut files: Vec<(u64, Vec<u8>)> = tree_map(&first, &is_manifest_or_side)
        .into_keys()
        .filter_map(|rel| {
            let m = fs::symlink_metadata(first.join(std::ffi::OsStr::from_bytes(&rel))).ok()?;
            m.is_file().then_some((m.len(), rel))
        })
        .collect();
    files.sort();
    let (big, small) = (files[files.len() - 1].clone(), files[0].clone());
    assert!(big.0 > 1_000_000, "{big:?}");
    for (_, rel) in [&big, &small] {
        fs::remove_file(first.join(std::ffi::OsStr::from_bytes(rel))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.backup_ok();
    assert_eq!(counter(&r, "files_read"), 2, "{r}");
    let second = s.snapshots(&s.target)[1].clone();
    assert_restores(&s, &second, &|_| false);
    let (before, after) = (inodes(&first), inodes(&second));
    for (rel, ino) in &after {
        if *rel == big.1 || *rel == small.1 {
            assert!(!before.contains_key(rel));
        } else {
            assert_eq!(
                before.get(rel),
                Some(ino),
                "not linked: {}",
                String::from_utf8_lossy(rel)
            );
        }
    }
    assert_eq!(after.len(), before.len() + 2);
}

#[test]
fn sealed_names_kept_in_the_index_are_checked_before_use() {
    // The index keeps each file's sealed name so that an unchanged night seals none; a damaged one is
    // sealed again, never used.
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    s.backup_ok();
    let index = s.dir.path().join("state/index/docs.idx");
    let first = s.snapshots(&s.target)[0].clone();
    let names: Vec<Vec<u8>> = tree_map(&first, &is_manifest_or_side)
        .into_iter()
        .filter(|(rel, _)| {
            fs::metadata(first.join(std::ffi::OsStr::from_bytes(rel))).is_ok_and(|m| m.is_file())
        })
        .filter_map(|(rel, _)| rel.rsplit(|&b| b == b'/').next().map(<[u8]>::to_vec))
        .filter(|n| !n.starts_with(b"_"))
        .collect();
    let count = names.len();
    assert!(count >= 5, "{names:?}");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut bytes = fs::read(&index).unwrap();
    // Every file's but the symlink's (sealed as a file on the target, it has no index record).
    let names: Vec<Vec<u8>> = names
        .into_iter()
        .filter(|n| find(&bytes, n).is_some())
        .collect();
    assert_eq!(
        names.len() + 1,
        count,
        "sealed names missing from the index"
    );
    for n in &names {
        if let Some(at) = find(&bytes, n) {
            // Out of the base32 alphabet, same length: the record still reads.
            bytes[at..at + n.len()].make_ascii_uppercase();
        }
    }
    fs::write(&index, &bytes).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.backup_ok();
    assert_eq!(counter(&r, "files_read"), 0, "{r}");
    let snaps = s.snapshots(&s.target);
    assert_eq!(
        inodes(&snaps[1]),
        inodes(&first),
        "names differ or not linked: {r}"
    );
    assert_restores(&s, &snaps[1], &|_| false);
    // The run wrote the right names back.
    let bytes = fs::read(&index).unwrap();
    assert!(names.iter().all(|n| find(&bytes, n).is_some()));
}
