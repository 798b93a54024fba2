#![allow(dead_code)]
//! Helpers for the interop tests: build a file list from a local tree, serve
//! its contents, compare trees.

pub mod peerfs;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rsync_wire::{ContentSource, Event, FileEntry, PushOptions, PushStats};

pub fn rsync_path() -> OsString {
    std::env::var_os("RSYNC").unwrap_or_else(|| "rsync".into())
}

/// Entries for everything under `root` (relative names, `.` included).
pub fn scan(root: &Path) -> Vec<FileEntry> {
    let mut out = Vec::new();
    fn walk(root: &Path, rel: &[u8], out: &mut Vec<FileEntry>) {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(rel))
        };
        let md = std::fs::symlink_metadata(&p).unwrap();
        let name = if rel.is_empty() {
            b".".to_vec()
        } else {
            rel.to_vec()
        };
        let perms = md.mode() & 0o7777;
        let (mt, ns) = (md.mtime(), md.mtime_nsec() as u32);
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.push(FileEntry::symlink(name, t.into_os_string().into_vec(), mt).with_nsec(ns));
        } else if md.is_dir() {
            out.push(FileEntry::dir(name, mt, perms).with_nsec(ns));
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                let mut r = rel.to_vec();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(e.file_name().as_bytes());
                walk(root, &r, out);
            }
        } else {
            out.push(FileEntry::file(name, md.len(), mt, perms).with_nsec(ns));
        }
    }
    walk(root, b"", &mut out);
    out
}

/// Serves file contents from a directory, counting opens.
pub struct DirSource {
    pub root: PathBuf,
    pub opens: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl DirSource {
    pub fn new(root: &Path) -> Self {
        DirSource {
            root: root.to_path_buf(),
            opens: Arc::default(),
        }
    }
}

impl ContentSource for DirSource {
    type Reader = tokio::fs::File;
    async fn open(&mut self, _index: usize, entry: &FileEntry) -> io::Result<Self::Reader> {
        self.opens.lock().unwrap().push(entry.name.to_vec());
        tokio::fs::File::open(self.root.join(std::ffi::OsStr::from_bytes(&entry.name))).await
    }
}

/// What a tree looks like: name -> (kind, perms, content or link target, mtime).
pub type Snapshot = BTreeMap<Vec<u8>, (char, u32, Vec<u8>, i64)>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut m = BTreeMap::new();
    for e in scan(root) {
        let p = root.join(std::ffi::OsStr::from_bytes(&e.name));
        let md = std::fs::symlink_metadata(&p).unwrap();
        let v = if md.file_type().is_symlink() {
            (
                'l',
                0,
                std::fs::read_link(&p).unwrap().into_os_string().into_vec(),
                md.mtime(),
            )
        } else if md.is_dir() {
            ('d', md.permissions().mode() & 0o7777, Vec::new(), 0)
        } else {
            (
                'f',
                md.permissions().mode() & 0o7777,
                std::fs::read(&p).unwrap(),
                md.mtime(),
            )
        };
        m.insert(e.name.to_vec(), v);
    }
    m
}

pub fn assert_same_tree(a: &Path, b: &Path) {
    let sa = snapshot(a);
    let sb = snapshot(b);
    let ka: Vec<_> = sa
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let kb: Vec<_> = sb
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(ka, kb, "different names");
    for (k, va) in &sa {
        let vb = &sb[k];
        assert!(
            va == vb,
            "entry {:?} differs: {:?}/{} vs {:?}/{}",
            String::from_utf8_lossy(k),
            va.0,
            va.1,
            vb.0,
            vb.1
        );
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// The test tree: nested dirs, empty file, symlink, odd names, a big file.
pub fn make_tree(root: &Path) {
    use std::fs;
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("small.txt"), b"hello world\n").unwrap();
    fs::write(root.join("a/one"), b"one\n").unwrap();
    fs::write(root.join("a/b/two"), random_bytes(5000, 2)).unwrap();
    fs::write(root.join("a/b/c/three"), random_bytes(70_000, 3)).unwrap();
    fs::write(root.join("with space 'and quotes\" here"), b"q").unwrap();
    fs::write(root.join("new\nline"), b"nl").unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9\xff")),
        b"bytes",
    )
    .unwrap();
    fs::write(root.join("x".repeat(255)), b"long name").unwrap();
    fs::write(root.join("a/b/big.bin"), random_bytes(3 << 20, 42)).unwrap();
    std::os::unix::fs::symlink("a/b/two", root.join("link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", root.join("a/dangling")).unwrap();
    fs::set_permissions(root.join("small.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("a/one"), fs::Permissions::from_mode(0o755)).unwrap();
    // Fixed past mtimes so that later edits always change the mtime.
    for e in scan(root) {
        if matches!(e.kind, rsync_wire::EntryKind::Symlink { .. }) {
            continue;
        }
        set_mtime(
            &root.join(std::ffi::OsStr::from_bytes(&e.name)),
            1_600_000_000,
        );
    }
}

pub fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// Writes a file and gives it a new fixed mtime.
pub fn rewrite(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
    set_mtime(p, 1_700_000_000);
}

/// Collected events.
#[derive(Default, Debug)]
pub struct Seen {
    pub messages: Vec<String>,
    pub deleted: Vec<Vec<u8>>,
    pub done: Vec<(Vec<u8>, u64, u64, u64, bool)>,
    pub content_errors: usize,
}

pub async fn push_dir(
    src: &Path,
    dest: &Path,
    opts: &PushOptions,
) -> (rsync_wire::Result<PushStats>, Seen) {
    let files = scan(src);
    let mut source = DirSource::new(src);
    push_entries(files, &mut source, dest, opts).await
}

pub async fn push_entries<C: ContentSource>(
    files: Vec<FileEntry>,
    source: &mut C,
    dest: &Path,
    opts: &PushOptions,
) -> (rsync_wire::Result<PushStats>, Seen) {
    push_entries_with(&rsync_path(), files, source, dest, opts).await
}

/// [`push_dir`] with another server program (a wrapper script).
pub async fn push_dir_with(
    program: &std::ffi::OsStr,
    src: &Path,
    dest: &Path,
    opts: &PushOptions,
) -> (rsync_wire::Result<PushStats>, Seen) {
    let files = scan(src);
    let mut source = DirSource::new(src);
    push_entries_with(program, files, &mut source, dest, opts).await
}

pub async fn push_entries_with<C: ContentSource>(
    program: &std::ffi::OsStr,
    files: Vec<FileEntry>,
    source: &mut C,
    dest: &Path,
    opts: &PushOptions,
) -> (rsync_wire::Result<PushStats>, Seen) {
    let mut seen = Seen::default();
    let res = {
        let mut cb = |e: Event<'_>| match e {
            Event::Message { text, .. } => seen.messages.push(text.to_string()),
            Event::Deleted { name } => seen.deleted.push(name.to_vec()),
            Event::FileDone(p) => seen.done.push((
                p.name.to_vec(),
                p.literal_bytes,
                p.matched_bytes,
                p.total_bytes,
                p.redo,
            )),
            Event::ContentError { .. } => seen.content_errors += 1,
            Event::RemoteIoError(_) | Event::LocalError { .. } => {}
        };
        rsync_wire::push_local(program, dest, files, source, opts, &mut cb).await
    };
    (res, seen)
}

pub fn opts_with(extra: &[&str]) -> PushOptions {
    let mut o = PushOptions::default();
    o.server.extra = extra.iter().map(OsString::from).collect();
    o.server.extra.push("--checksum-seed=1".into());
    o
}
