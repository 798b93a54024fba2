//! `offsite snapshots`, `ls`, `restore`, `verify` and `unseal-tree` against real peers: backups made by
//! `offsite backup`, restored through a real OpenSSH server and the real rsync (or a local `rsync
//! --server`), compared byte for byte (and mtime for mtime) with the share as it was; then the target is
//! tampered with in every way the issue lists and each command must name each damaged file and why.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;
use testpeers::TestSshd;

fn ssh_target(sshd: &TestSshd, path: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {}\nuser = {:?}\nidentity_file = {:?}\nknown_hosts = {:?}\npath = {path:?}\ntimeout_secs = 30",
        sshd.port,
        sshd.user,
        sshd.client_key.to_str().unwrap(),
        sshd.known_hosts.to_str().unwrap(),
    )
}

/// Runs `offsite restore --share docs <args> --config <config>`.
fn restore(s: &Setup, args: &[&OsStr]) -> Output {
    let mut all = vec![os("restore"), os("--share"), os("docs")];
    all.extend_from_slice(args);
    run(s, &all)
}

/// Runs `offsite <args> --config <config>`.
fn run(s: &Setup, args: &[&OsStr]) -> Output {
    offsite()
        .args(args)
        .arg("--config")
        .arg(&s.config)
        .output()
        .unwrap()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}\nstdout: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files, folders and symlinks below `root` with content (or link target), permission bits and mtime
/// (symlinks: their own mtime; folders: mode and mtime only).
fn tree_with_meta(root: &Path) -> BTreeMap<Vec<u8>, (Vec<u8>, u32, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_dir() {
                stack.push(r.clone());
                b"<dir>".to_vec()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()
            } else {
                fs::read(&p).unwrap()
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.permissions().mode() & 0o7777
            };
            out.insert(
                r.as_os_str().as_bytes().to_vec(),
                (content, mode, m.mtime(), m.mtime_nsec()),
            );
        }
    }
    out
}

fn snapshot_ids(s: &Setup) -> Vec<String> {
    let out = run(s, &[os("snapshots"), os("--json")]);
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["snapshot"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn restore_over_ssh_any_path_any_snapshot_folder_or_tar() {
    let sshd = TestSshd::start();
    let s = Setup::new();
    fill_share(&s.share);
    fs::set_permissions(
        s.share.join("report.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    fs::set_permissions(s.share.join("deep/er"), fs::Permissions::from_mode(0o750)).unwrap();
    s.write_config(&ssh_target(&sshd, s.target.to_str().unwrap()), "");
    s.backup_ok();
    let first = tree_with_meta(&s.share);
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(s.share.join("report.txt"), b"rewritten tonight").unwrap();
    fs::remove_file(s.share.join("photos/2024/img-0001.jpg")).unwrap();
    fs::write(s.share.join("deep/added"), b"added").unwrap();
    s.backup_ok();
    let second = tree_with_meta(&s.share);

    let ids = snapshot_ids(&s);
    assert_eq!(ids.len(), 2);
    let v: serde_json::Value =
        serde_json::from_str(&ok(&run(&s, &[os("snapshots"), os("--json")]))).unwrap();
    assert_eq!(v[1]["summary"]["files"], 9, "{v}");

    // ls shows plaintext names, folders and link targets.
    let ls = ok(&run(&s, &[os("ls"), os("--share"), os("docs")]));
    assert!(
        ls.contains("report.txt")
            && ls.contains("deep/")
            && ls.contains("link-to-report -> report.txt"),
        "{ls}"
    );
    let ls = ok(&run(
        &s,
        &[os("ls"), os("--share"), os("docs"), os("deep/er/still")],
    ));
    assert!(ls.contains("deeper/") && !ls.contains("report"), "{ls}");

    let work = tempfile::tempdir().unwrap();
    let to = |name: &str| work.path().join(name);

    // Everything, newest: byte-identical, modes and mtimes too.
    ok(&restore(&s, &[os("--to"), to("all").as_os_str()]));
    assert_eq!(tree_with_meta(&to("all")), second);

    // A folder too big for one session whose subfolders travel in the same session as its own entries.
    for i in 0..6 {
        fs::write(s.share.join(format!("deep/f{i}")), format!("file {i}")).unwrap();
        fs::create_dir_all(s.share.join(format!("deep/sub{i}"))).unwrap();
        fs::write(s.share.join(format!("deep/sub{i}/x")), b"x").unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    s.backup_ok();
    let second = tree_with_meta(&s.share);

    // Everything again, one tiny rsync session after another (split folders, subtrees, single files).
    for batch in ["1", "2", "5", "9", "16"] {
        let dir = to(&format!("batched-{batch}"));
        ok(&restore(
            &s,
            &[
                os("--batch-entries"),
                os(batch),
                os("--to"),
                dir.as_os_str(),
            ],
        ));
        assert_eq!(tree_with_meta(&dir), second, "batches of {batch}");
    }

    // Everything from the older snapshot.
    ok(&restore(
        &s,
        &[
            os("--snapshot"),
            os(&ids[0]),
            os("--to"),
            to("old").as_os_str(),
        ],
    ));
    assert_eq!(tree_with_meta(&to("old")), first);

    // One file of the older snapshot, one folder, a name with a newline and one that is not UTF-8.
    let out = restore(
        &s,
        &[
            os("--snapshot"),
            os(&ids[0]),
            os("--path"),
            os("report.txt"),
            os("--path"),
            os("deep/er"),
            os("--path"),
            os("new\nline"),
            os("--path"),
            OsStr::from_bytes(b"not-utf8-\xff\xfe.bin"),
            os("--to"),
            to("some").as_os_str(),
            os("--json"),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["files_ok"], 4, "{report}");
    let got = tree_with_meta(&to("some"));
    let names: Vec<&[u8]> = got.keys().map(|k| &k[..]).collect();
    assert_eq!(
        names,
        [
            &b"deep"[..],
            b"deep/er",
            b"deep/er/still",
            b"deep/er/still/deeper",
            b"deep/er/still/deeper/file.txt",
            b"new\nline",
            b"not-utf8-\xff\xfe.bin",
            b"report.txt"
        ]
    );
    for (k, v) in &got {
        if k != b"deep" {
            assert_eq!(Some(v), first.get(k), "{}", String::from_utf8_lossy(k));
        }
    }
    // Pulling one small file moves little more than that file.
    assert!(
        report["bytes_pulled"].as_u64().unwrap() < 64 * 1024,
        "{report}"
    );

    // A tar stream of everything, read back by GNU tar.
    let tar = to("all.tar");
    ok(&restore(&s, &[os("--tar"), tar.as_os_str()]));
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.contains("deep/er/still/deeper/file.txt") && listing.contains("report.txt"),
        "{listing}"
    );
    fs::create_dir(to("untar")).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(to("untar"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        tree_map(&to("untar"), &|_| false),
        tree_map(&s.share, &|_| false)
    );
    // `--tar -` writes the same archive to stdout.
    let out = restore(&s, &[os("--tar"), os("-")]);
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(&tar).unwrap());

    // Existing files are not overwritten (exit 4, untouched), unless asked.
    fs::write(to("all").join("report.txt"), b"mine").unwrap();
    let out = restore(&s, &[os("--to"), to("all").as_os_str()]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(to("all").join("report.txt")).unwrap(), b"mine");
    ok(&restore(
        &s,
        &[os("--overwrite"), os("--to"), to("all").as_os_str()],
    ));
    assert_eq!(
        fs::read(to("all").join("report.txt")).unwrap(),
        b"rewritten tonight"
    );

    // The whole target verifies.
    ok(&run(&s, &[os("verify")]));

    // A wrong key is refused at once, before anything is written.
    let other = s.dir.path().join("other.key");
    assert!(
        offsite()
            .args(["keygen", "--key"])
            .arg(&other)
            .status()
            .unwrap()
            .success()
    );
    let text = fs::read_to_string(&s.config).unwrap();
    let wrong = s.dir.path().join("wrong.toml");
    fs::write(
        &wrong,
        text.replace(s.key.to_str().unwrap(), other.to_str().unwrap()),
    )
    .unwrap();
    let out = offsite()
        .args(["restore", "--share", "docs", "--to"])
        .arg(to("never"))
        .arg("--config")
        .arg(&wrong)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("wrong key"), "{err}");
    assert!(!to("never").exists());
}

/// Problems by path (lossy) → kind, from a JSON report.
fn problems(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sealed_name(s: &Setup, rel: &str) -> String {
    let out = offsite()
        .args(["seal-name", "--key"])
        .arg(&s.key)
        .arg(rel)
        .output()
        .unwrap();
    ok(&out).lines().next().unwrap().to_owned()
}

#[test]
fn tampering_is_reported_per_file_by_restore_verify_and_unseal_tree() {
    let s = Setup::new();
    fill_share(&s.share);
    s.local_config("");
    s.backup_ok();
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(s.share.join("report.txt"), b"the new version").unwrap();
    s.backup_ok();
    let snaps = s.snapshots(&s.target);
    let (old, new) = (&snaps[0], &snaps[1]);
    let at = |snap: &Path, rel: &str| snap.join(sealed_name(&s, rel));
    // Replace, never write through: the files are hard links shared with the older snapshot.
    let replace = |p: &Path, data: &[u8]| {
        fs::remove_file(p).unwrap();
        fs::write(p, data).unwrap();
    };
    // Flip a byte, cut a file, swap two files, delete one, roll one back, add one.
    let mut big = fs::read(at(new, "big.bin")).unwrap();
    big[100_000] ^= 1;
    replace(&at(new, "big.bin"), &big);
    let img = fs::read(at(new, "photos/2024/img-0001.jpg")).unwrap();
    replace(&at(new, "photos/2024/img-0001.jpg"), &img[..img.len() - 40]);
    let a = fs::read(at(new, "with space and 'quotes\".txt")).unwrap();
    let b = fs::read(at(new, "empty")).unwrap();
    replace(&at(new, "with space and 'quotes\".txt"), &b);
    replace(&at(new, "empty"), &a);
    fs::remove_file(at(new, "deep/er/still/deeper/file.txt")).unwrap();
    let older = fs::read(at(old, "report.txt")).unwrap();
    replace(&at(new, "report.txt"), &older);
    fs::write(new.join("planted"), b"x").unwrap();

    let want: BTreeMap<String, String> = [
        ("big.bin", "tampered"),
        ("photos/2024/img-0001.jpg", "tampered"),
        ("with space and 'quotes\".txt", "swapped"),
        ("empty", "swapped"),
        ("deep/er/still/deeper/file.txt", "missing"),
        ("report.txt", "rolled_back"),
        ("planted", "extra"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    let snap_id = new.file_name().unwrap().to_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();

    let out = restore(
        &s,
        &[os("--json"), os("--to"), work.path().join("r").as_os_str()],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(problems(&report), want, "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("big.bin: tampered: chunk"), "{stderr}");
    assert!(
        stderr.contains("img-0001.jpg: tampered: truncated"),
        "{stderr}"
    );
    // The others are restored, byte for byte; the damaged ones are not there at all.
    let restored = tree_map(&work.path().join("r"), &|_| false);
    let expected = tree_map(&s.share, &|_| false);
    for (k, v) in &expected {
        let name = String::from_utf8_lossy(k).into_owned();
        if want.contains_key(&name) {
            assert!(!restored.contains_key(k), "{name} was restored");
        } else {
            assert_eq!(restored.get(k), Some(v), "{name}");
        }
    }
    assert!(
        tree_names(&work.path().join("r"))
            .iter()
            .all(|n| !n.starts_with(b".offsite-tmp"))
    );

    let out = run(
        &s,
        &[os("verify"), os("--snapshot"), os(&snap_id), os("--json")],
    );
    assert_eq!(out.status.code(), Some(3));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(problems(&reports[0]), want, "{reports}");

    // Without the box: a plain `cp -a` of the snapshot folder and the key.
    let copy = work.path().join("copy/docs").join(&snap_id);
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(new)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let out = offsite()
        .args(["unseal-tree", "--json", "--key"])
        .arg(&s.key)
        .arg(&copy)
        .arg(work.path().join("u"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut got = problems(&report);
    // Extra files are named as found (the planted name is not sealed).
    assert_eq!(got.remove("planted").as_deref(), Some("extra"));
    let mut want_local = want.clone();
    want_local.remove("planted");
    assert_eq!(got, want_local, "{report}");
    let unsealed = tree_map(&work.path().join("u"), &|_| false);
    assert_eq!(unsealed, restored);

    // The untouched older snapshot still restores completely.
    ok(&run(
        &s,
        &[
            os("verify"),
            os("--snapshot"),
            os(old.file_name().unwrap().to_str().unwrap()),
        ],
    ));
}

#[test]
fn plain_share_restores_and_detects_changes() {
    let s = Setup::new();
    let w = |rel: &[u8], data: &[u8]| {
        let p = s.share.join(OsStr::from_bytes(rel));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    w(b"a*b[1]?/x y.txt", b"glob characters in a folder name");
    w(b"a*b[1]?/two", b"second");
    w(b"nl\nname", b"newline");
    w(b"-dash", b"leading dash");
    w(b"\xff\xfe", b"not utf-8");
    std::os::unix::fs::symlink("a*b[1]?/two", s.share.join("ln")).unwrap();
    s.local_config("encrypt = false\nencrypt_names = false");
    s.backup_ok();
    let work = tempfile::tempdir().unwrap();
    ok(&restore(
        &s,
        &[os("--to"), work.path().join("all").as_os_str()],
    ));
    assert_eq!(
        tree_with_meta(&work.path().join("all")),
        tree_with_meta(&s.share)
    );
    // Selecting a folder whose name is a glob pattern selects exactly it.
    ok(&restore(
        &s,
        &[
            os("--path"),
            os("a*b[1]?"),
            os("--path"),
            os("nl\nname"),
            os("--to"),
            work.path().join("one").as_os_str(),
        ],
    ));
    let mut names = tree_names(&work.path().join("one"));
    names.sort();
    assert_eq!(
        names,
        [
            &b"a*b[1]?"[..],
            b"a*b[1]?/two",
            b"a*b[1]?/x y.txt",
            b"nl\nname"
        ]
    );
    // A changed file on the target is named.
    let snap = &s.snapshots(&s.target)[0];
    let p = snap.join("-dash");
    fs::remove_file(&p).unwrap();
    fs::write(&p, b"LEADING DASH").unwrap();
    let out = run(&s, &[os("verify"), os("--json")]);
    assert_eq!(out.status.code(), Some(3));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        problems(&reports[0]),
        [("-dash".to_owned(), "changed".to_owned())]
            .into_iter()
            .collect()
    );
}

#[test]
fn the_next_snapshots_manifest_comes_as_a_delta() {
    let s = Setup::new();
    for d in 0..30 {
        for f in 0..100 {
            let p = s.share.join(format!("d{d:02}/file-{f:03}.txt"));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("file {d} {f}")).unwrap();
        }
    }
    s.local_config("");
    s.backup_ok();
    let work = tempfile::tempdir().unwrap();
    let pulled = |to: &str| -> u64 {
        let out = restore(
            &s,
            &[
                os("--path"),
                os("d07/file-042.txt"),
                os("--json"),
                os("--to"),
                work.path().join(to).as_os_str(),
            ],
        );
        json_of(&ok(&out))["bytes_pulled"].as_u64().unwrap()
    };
    let first = pulled("a");
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(s.share.join("d29/file-099.txt"), b"changed").unwrap();
    s.backup_ok();
    let second = pulled("b");
    eprintln!("one-file restore, bytes pulled: first {first}, after one change {second}");
    // The first fetch carries the whole list of 3,030 entries; the next one only what changed.
    assert!(first > 60_000, "{first}");
    assert!(second * 4 < first, "first {first}, second {second}");
    assert_eq!(
        fs::read(work.path().join("b/d07/file-042.txt")).unwrap(),
        b"file 7 42"
    );
}

fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}
