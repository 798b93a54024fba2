//! Helpers for the backup tests: a share, a config, runs of the real `offsite` binary, and a restore that
//! uses only a plain copy of a snapshot folder plus `offsite unseal-name` / `offsite unseal`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod web;

/// The `offsite` binary under test: the one cargo built, or `OFFSITE_TEST_BIN` when set (another build, e.g.
/// an ARM one), run through the words of `OFFSITE_TEST_RUNNER` when set (e.g.
/// `qemu-aarch64-static -L /usr/aarch64-linux-gnu`; see cross-config/e2e).
pub fn offsite() -> Command {
    let Some(bin) = std::env::var_os("OFFSITE_TEST_BIN") else {
        return Command::new(env!("CARGO_BIN_EXE_offsite"));
    };
    let runner = std::env::var("OFFSITE_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// `offsite export-bundle --config CONFIG --out OUT --passphrase-file PASS [--with-keys]`.
pub fn export_bundle(config: &Path, out: &Path, pass: &Path, keys: bool) -> Output {
    let mut c = offsite();
    c.args(["export-bundle", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg("--passphrase-file")
        .arg(pass);
    if keys {
        c.arg("--with-keys");
    }
    c.output().unwrap()
}

/// `offsite import-bundle --config CONFIG --passphrase-file PASS BUNDLE`.
pub fn import_bundle(config: &Path, bundle: &Path, pass: &Path) -> Output {
    offsite()
        .args(["import-bundle", "--config"])
        .arg(config)
        .arg("--passphrase-file")
        .arg(pass)
        .arg(bundle)
        .output()
        .unwrap()
}

/// The stdout of a command that must have succeeded (else a panic with both outputs).
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A share folder, a key, a config file and a target folder in one temporary folder.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub share: PathBuf,
    pub key: PathBuf,
    pub config: PathBuf,
    pub target: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        let target = dir.path().join("target");
        fs::create_dir_all(&share).unwrap();
        fs::create_dir_all(&target).unwrap();
        let key = dir.path().join("master.key");
        let out = offsite()
            .args(["keygen", "--key"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("offsite.toml");
        Setup {
            dir,
            share,
            key,
            config,
            target,
        }
    }

    /// Writes the config: `target` is the `[target]` table's body, `share` extra keys of the one share.
    pub fn write_config(&self, target: &str, share: &str) {
        let text = format!(
            "state_dir = \"state\"\nkey_file = {key:?}\n\n[target]\n{target}\n\n[[share]]\nname = \"docs\"\n\
             path = {share_path:?}\nretention = {{ last = 100 }}\n{share}\n",
            key = self.key.to_str().unwrap(),
            share_path = self.share.to_str().unwrap(),
        );
        fs::write(&self.config, text).unwrap();
    }

    pub fn local_config(&self, share: &str) {
        self.write_config(
            &format!("path = {:?}", self.target.to_str().unwrap()),
            share,
        );
    }

    /// Runs `offsite backup --json`; returns the output and the parsed report.
    pub fn backup(&self, extra: &[&str]) -> (Output, serde_json::Value) {
        let out = offsite()
            .args(["backup", "--json", "--config"])
            .arg(&self.config)
            .args(extra)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, report)
    }

    pub fn backup_ok(&self) -> serde_json::Value {
        let (out, report) = self.backup(&[]);
        assert!(
            out.status.success(),
            "backup failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        report
    }

    /// Waits (30 s at most, then panics) until no snapshot folder on the folder target holds a temporary
    /// file of the receiving rsync: after a sender is killed, the receiver removes its temporary file
    /// once it notices, so whatever landed is whole. Names only: a temporary file may vanish between
    /// listing and reading.
    pub fn wait_no_temp_files(&self) {
        let temp = || -> Vec<String> {
            let mut left = Vec::new();
            for snap in self.snapshots(&self.target) {
                for rel in tree_names(&snap) {
                    let name = rel.rsplit(|&b| b == b'/').next().unwrap();
                    if name.starts_with(b".") && !name.starts_with(b".offsite") {
                        left.push(String::from_utf8_lossy(&rel).into_owned());
                    }
                }
            }
            left
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !temp().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "temporary files left: {:?}",
                temp()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Snapshot folders of the share on a folder target, oldest first.
    pub fn snapshots(&self, root: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(root.join("docs"))
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

pub fn counter(report: &serde_json::Value, name: &str) -> u64 {
    report["shares"][0]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {report}"))
}

/// Every file and symlink below `root` (relative path → content or link target), skipping what `skip`
/// says.
pub fn tree_map(root: &Path, skip: &dyn Fn(&[u8]) -> bool) -> BTreeMap<Vec<u8>, Vec<u8>> {
    fn go(
        dir: &Path,
        rel: &[u8],
        skip: &dyn Fn(&[u8]) -> bool,
        out: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    ) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let mut r = rel.to_vec();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(e.file_name().as_bytes());
            if skip(&r) {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let t = fs::read_link(e.path()).unwrap();
                out.insert(r, t.as_os_str().as_bytes().to_vec());
            } else if ft.is_dir() {
                go(&e.path(), &r, skip, out);
            } else if ft.is_file() {
                out.insert(r, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, b"", skip, &mut out);
    out
}

/// Every path below `root` (files, folders, links), relative; entries that vanish while it lists are left
/// out (a folder that vanishes lists as empty).
pub fn tree_names(root: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut todo = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = todo.pop() {
        let Ok(read) = fs::read_dir(&dir) else {
            continue;
        };
        for e in read.flatten() {
            let mut r: Vec<u8> = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(e.file_name().as_bytes());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push((e.path(), r.clone()));
            }
            out.push(r);
        }
    }
    out
}

/// Restores a plain copy of a sealed snapshot folder with the CLI only: each sealed file's name with
/// `offsite unseal-name`, its content with `offsite unseal`. Symlinks of sealed shares come back as files
/// holding the link target (the manifest says they are links).
pub fn unseal_copy(copy: &Path, key: &Path, out_dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let sealed = tree_map(copy, &|r| {
        r.rsplit(|&b| b == b'/')
            .next()
            .is_some_and(|n| n.starts_with(b".offsite"))
    });
    for rel in sealed.keys() {
        let rel_str = std::str::from_utf8(rel).expect("sealed names are ASCII");
        let out = offsite()
            .args(["unseal-name", "--key"])
            .arg(key)
            .arg("--root")
            .arg(copy)
            .arg(rel_str)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "unseal-name {rel_str}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plain = out.stdout.strip_suffix(b"\n").unwrap().to_vec();
        let dest = out_dir.join(OsStr::from_bytes(&plain));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let out = offsite()
            .args(["unseal", "--key"])
            .arg(key)
            .arg("--path")
            .arg(OsStr::from_bytes(&plain))
            .arg(copy.join(rel_str))
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "unseal {rel_str}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tree_map(out_dir, &|_| false)
}

/// The source tree as a restore must give it back: symlinks as their target bytes.
pub fn expected(share: &Path, excluded: &dyn Fn(&[u8]) -> bool) -> BTreeMap<Vec<u8>, Vec<u8>> {
    tree_map(share, excluded)
}

/// Copies a snapshot folder with the stock rsync binary (what an owner without the box would do).
pub fn plain_rsync_copy(src: &Path, dst: &Path) {
    let st = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn random(len: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed);
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    v
}

/// A share with awkward names, a long name, nesting, an empty file, a symlink, a compressible text with
/// a marker, and a larger random file.
pub fn fill_share(share: &Path) {
    let w = |rel: &[u8], data: &[u8]| {
        let p = share.join(OsStr::from_bytes(rel));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    let text: Vec<u8> = (0..2000)
        .flat_map(|i| format!("line {i} PLAINTEXT-MARKER quarterly figures\n").into_bytes())
        .collect();
    w(b"report.txt", &text);
    w(b"big.bin", &random(3 << 20, 1));
    w(b"empty", b"");
    w(
        b"with space and 'quotes\".txt",
        b"awkward 1 PLAINTEXT-MARKER",
    );
    w(b"new\nline", b"awkward 2 PLAINTEXT-MARKER");
    w(b"not-utf8-\xff\xfe.bin", b"awkward 3 PLAINTEXT-MARKER");
    w(
        &[b"long-".as_slice(), &[b'n'; 200]].concat(),
        b"long name PLAINTEXT-MARKER",
    );
    w(b"deep/er/still/deeper/file.txt", b"deep PLAINTEXT-MARKER");
    w(b"photos/2024/img-0001.jpg", &random(100_000, 2));
    std::os::unix::fs::symlink("report.txt", share.join("link-to-report")).unwrap();
}
