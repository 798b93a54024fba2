//! Pull and list-only against a real `rsync --server --sender` spawned
//! locally over pipes.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use rsync_wire::{EntryKind, Error, Event, FilterRule, PullOptions, PullStats};

#[derive(Default, Debug)]
struct PullSeen {
    done: Vec<(Vec<u8>, u64, u64, u64, bool)>,
    local_errors: Vec<(Vec<u8>, String)>,
    messages: Vec<String>,
}

fn remote_dir(p: &Path) -> Vec<u8> {
    let mut v = p.as_os_str().as_bytes().to_vec();
    v.push(b'/');
    v
}

async fn pull_dir(
    src: &Path,
    dest: &Path,
    opts: &PullOptions,
) -> (rsync_wire::Result<PullStats>, PullSeen) {
    pull_path(&remote_dir(src), dest, opts).await
}

async fn pull_path(
    remote: &[u8],
    dest: &Path,
    opts: &PullOptions,
) -> (rsync_wire::Result<PullStats>, PullSeen) {
    let mut seen = PullSeen::default();
    let res = {
        let mut cb = |e: Event<'_>| match e {
            Event::FileDone(p) => seen.done.push((
                p.name.to_vec(),
                p.literal_bytes,
                p.matched_bytes,
                p.total_bytes,
                p.redo,
            )),
            Event::LocalError { name, error } => seen.local_errors.push((name.to_vec(), error)),
            Event::Message { text, .. } => seen.messages.push(text.to_string()),
            _ => {}
        };
        rsync_wire::pull_local(&rsync_path(), remote, dest, opts, &mut cb).await
    };
    (res, seen)
}

fn popts(protocol: u32) -> PullOptions {
    PullOptions {
        protocol,
        ..PullOptions::default()
    }
}

/// Like `assert_same_tree` (symlink mtimes included, seconds), with the
/// octal mode and mtime in the failure message.
fn assert_same_pulled(a: &Path, b: &Path) {
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
            "entry {:?} differs: {:?}/{:o}/{} vs {:?}/{:o}/{}",
            String::from_utf8_lossy(k),
            va.0,
            va.1,
            va.3,
            vb.0,
            vb.1,
            vb.3
        );
    }
}

fn mtime_nsec(p: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

async fn new_tree_then_edit(protocol: u32) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    // A sub-second mtime to check nanoseconds (protocol 31).
    let f = std::fs::File::options()
        .write(true)
        .open(src.join("a/one"))
        .unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(1_650_000_000, 123_456_789))
        .unwrap();
    drop(f);
    // Names sorting before "." in byte order (protocol < 29 sorts plain
    // bytes, "." included).
    std::fs::write(src.join("-dash"), b"dash").unwrap();
    std::fs::write(src.join(" space"), b"space").unwrap();
    std::fs::create_dir(src.join("!dir")).unwrap();
    std::fs::write(src.join("!dir/f"), b"f").unwrap();
    for n in ["-dash", " space", "!dir/f", "!dir"] {
        set_mtime(&src.join(n), 1_600_000_000);
    }
    let dest = t.path().join("dest");
    let (res, seen) = pull_dir(&src, &dest, &popts(protocol)).await;
    let stats = res.unwrap_or_else(|e| panic!("{e}"));
    assert_same_pulled(&src, &dest);
    assert_eq!(stats.protocol, protocol);
    assert_eq!(stats.files_transferred, 13, "{seen:?}");
    assert_eq!(stats.files_redone, 0);
    assert_eq!(stats.matched_bytes, 0);
    assert!(stats.literal_bytes > 3 << 20);
    assert_eq!(seen.done.len(), 13);
    assert!(seen.local_errors.is_empty(), "{seen:?}");
    if protocol >= 31 {
        assert_eq!(
            mtime_nsec(&dest.join("a/one")),
            (1_650_000_000, 123_456_789)
        );
    } else {
        assert_eq!(mtime_nsec(&dest.join("a/one")).0, 1_650_000_000);
    }

    // Unchanged: nothing is requested.
    let (res, seen) = pull_dir(&src, &dest, &popts(protocol)).await;
    let stats = res.unwrap();
    assert_eq!(stats.files_requested, 0, "{seen:?}");
    assert_eq!(stats.files_up_to_date, 13);
    assert_same_pulled(&src, &dest);

    // A small edit and an insertion in the big file: the basis is used.
    let big = src.join("a/b/big.bin");
    let mut data = std::fs::read(&big).unwrap();
    for b in &mut data[1_500_000..1_500_100] {
        *b = b.wrapping_add(1);
    }
    data.splice(2_000_000..2_000_000, b"inserted bytes".iter().copied());
    rewrite(&big, &data);
    rewrite(&src.join("small.txt"), b"changed\n");
    std::fs::set_permissions(
        src.join("a/b/two"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let (res, seen) = pull_dir(&src, &dest, &popts(protocol)).await;
    let stats = res.unwrap();
    assert_same_pulled(&src, &dest);
    assert_eq!(stats.files_transferred, 2, "{seen:?}");
    let d = seen.done.iter().find(|d| d.0 == b"a/b/big.bin").unwrap();
    assert_eq!(d.3, data.len() as u64);
    let limit = if protocol >= 30 { 16 * 1024 } else { 40 * 1024 };
    assert!(d.1 < limit, "literal {} too large", d.1);
    assert_eq!(d.1 + d.2, data.len() as u64);
}

#[tokio::test]
async fn pull_tree_protocol_31() {
    new_tree_then_edit(31).await;
}

#[tokio::test]
async fn pull_tree_protocol_30() {
    new_tree_then_edit(30).await;
}

#[tokio::test]
async fn pull_tree_protocol_29() {
    new_tree_then_edit(29).await;
}

#[tokio::test]
async fn pull_tree_protocol_27() {
    new_tree_then_edit(27).await;
}

#[tokio::test]
async fn pull_one_file_and_one_folder() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);

    let dest = t.path().join("one-file");
    let opts = PullOptions {
        filters: FilterRule::only(b"a/b/two", false).unwrap(),
        ..PullOptions::default()
    };
    let (res, seen) = pull_dir(&src, &dest, &opts).await;
    res.unwrap();
    assert_eq!(seen.done.len(), 1, "{seen:?}");
    let snap = snapshot(&dest);
    let names: Vec<&[u8]> = snap.keys().map(|k| &k[..]).collect();
    assert_eq!(names, [&b"."[..], b"a", b"a/b", b"a/b/two"]);
    assert_eq!(
        std::fs::read(dest.join("a/b/two")).unwrap(),
        std::fs::read(src.join("a/b/two")).unwrap()
    );

    let dest = t.path().join("one-folder");
    let opts = PullOptions {
        filters: FilterRule::only(b"a/b", true).unwrap(),
        ..PullOptions::default()
    };
    let (res, _) = pull_dir(&src, &dest, &opts).await;
    res.unwrap();
    assert_same_pulled(&src.join("a/b"), &dest.join("a/b"));
    let top: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["a"]);
    let mid: Vec<_> = std::fs::read_dir(dest.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(mid, ["b"]);

    // A remote path naming one file, no filters.
    let dest = t.path().join("by-path");
    let (res, _) = pull_path(
        src.join("small.txt").as_os_str().as_bytes(),
        &dest,
        &PullOptions::default(),
    )
    .await;
    res.unwrap();
    assert_eq!(
        std::fs::read(dest.join("small.txt")).unwrap(),
        b"hello world\n"
    );
}

/// Collects every requested file's bytes (the streaming pull's sink).
struct Collect {
    /// Select only names ending like this.
    suffix: &'static [u8],
    files: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    current: Option<(Vec<u8>, Vec<u8>)>,
}

impl Collect {
    fn new(suffix: &'static [u8]) -> Collect {
        Collect {
            suffix,
            files: Default::default(),
            current: None,
        }
    }
}

impl rsync_wire::PullSink for Collect {
    fn select(&mut self, list: &[rsync_wire::FileEntry]) -> Vec<bool> {
        list.iter().map(|e| e.name.ends_with(self.suffix)).collect()
    }
    fn begin(&mut self, _: usize, e: &rsync_wire::FileEntry, _: bool) -> Result<(), String> {
        self.current = Some((e.name.to_vec(), Vec::new()));
        Ok(())
    }
    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        let c = self.current.as_mut().ok_or("data before begin")?;
        c.1.extend_from_slice(bytes);
        Ok(())
    }
    fn end(&mut self, ok: bool) -> Result<(), String> {
        let (name, data) = self.current.take().ok_or("end before begin")?;
        if ok {
            self.files.insert(name, data);
        }
        Ok(())
    }
}

#[tokio::test]
async fn streaming_pull_hands_over_exactly_the_selected_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    for protocol in [31, 30, 27] {
        let mut sink = Collect::new(b"");
        let stats = rsync_wire::pull_stream_local(
            &rsync_path(),
            &remote_dir(&src),
            &mut sink,
            &popts(protocol),
            &mut |_| {},
        )
        .await
        .unwrap();
        let want: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = snapshot(&src)
            .into_iter()
            .filter(|(name, _)| {
                src.join(std::ffi::OsStr::from_bytes(name))
                    .symlink_metadata()
                    .unwrap()
                    .is_file()
            })
            .map(|(name, _)| {
                let data = std::fs::read(src.join(std::ffi::OsStr::from_bytes(&name))).unwrap();
                (name, data)
            })
            .collect();
        assert_eq!(sink.files, want, "protocol {protocol}");
        assert_eq!(stats.files_transferred, want.len() as u64);
        assert_eq!(stats.matched_bytes, 0, "no basis in a streaming pull");
    }
    // A selection: only what the sink asks for is sent.
    let mut sink = Collect::new(b"two");
    let stats = rsync_wire::pull_stream_local(
        &rsync_path(),
        &remote_dir(&src),
        &mut sink,
        &PullOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    let names: Vec<&[u8]> = sink.files.keys().map(|k| &k[..]).collect();
    assert_eq!(names, [&b"a/b/two"[..]]);
    assert_eq!(stats.files_requested, 1);
}

#[tokio::test]
async fn list_tree() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let opts = PullOptions::default();
    let entries = rsync_wire::list_local(&rsync_path(), &remote_dir(&src), true, &opts)
        .await
        .unwrap();
    let mut expect = scan(&src);
    expect.sort_by(|a, b| a.name.cmp(&b.name));
    let mut got = entries.clone();
    got.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got.len(), expect.len());
    for (g, e) in got.iter().zip(&expect) {
        assert_eq!(g.name, e.name);
        assert_eq!(g.kind, e.kind, "{:?}", String::from_utf8_lossy(&g.name));
        if !matches!(g.kind, EntryKind::Symlink { .. }) {
            assert_eq!(g.perms, e.perms);
        }
        if !g.is_dir() {
            assert_eq!((g.mtime, g.mtime_nsec), (e.mtime, e.mtime_nsec));
        }
    }
    assert_eq!(&entries[0].name[..], b".");

    // Not recursive: the top level only.
    let entries = rsync_wire::list_local(&rsync_path(), &remote_dir(&src), false, &opts)
        .await
        .unwrap();
    assert!(
        entries.iter().all(|e| !e.name.contains(&b'/')),
        "{entries:?}"
    );
    assert!(entries.iter().any(|e| e.name[..] == b"a"[..] && e.is_dir()));
    assert!(
        entries
            .iter()
            .any(|e| e.name[..] == b"small.txt"[..] && e.size() == 12)
    );

    // Protocol 27.
    let entries = rsync_wire::list_local(&rsync_path(), &remote_dir(&src), true, &popts(27))
        .await
        .unwrap();
    assert_eq!(entries.len(), expect.len());
}

#[tokio::test]
async fn symlinked_dir_in_destination_is_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = t.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    // dest/a points outside; dest/small.txt is a symlink to a file outside.
    std::os::unix::fs::symlink(&outside, dest.join("a")).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), dest.join("small.txt")).unwrap();
    // A file where the server has a directory is replaced.
    std::fs::write(dest.join("empty dir"), b"was a file").unwrap();
    let (res, seen) = pull_dir(&src, &dest, &PullOptions::default()).await;
    res.unwrap_or_else(|e| panic!("{e} {seen:?}"));
    assert_same_pulled(&src, &dest);
    let left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["secret"]);
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
}

#[tokio::test]
async fn remote_read_errors_are_partial_transfers() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    // A remote path that does not exist: an empty list, exit 23, the
    // server's message in the error.
    for missing in ["no-such-dir/", "no-such-file"] {
        let dest = t.path().join("none");
        let missing = t.path().join(missing);
        let (res, seen) = pull_path(
            missing.as_os_str().as_bytes(),
            &dest,
            &PullOptions::default(),
        )
        .await;
        match res {
            Err(Error::RemoteExit {
                code: 23, messages, ..
            }) => {
                assert!(messages.contains("No such file"), "{messages}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            seen.messages.iter().any(|m| m.contains("No such file")),
            "{seen:?}"
        );
    }
    let locked = src.join("a/one");
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    if std::fs::read(&locked).is_ok() {
        // Running as root: permissions do not stop reads.
        return;
    }
    let dest = t.path().join("dest");
    let (res, _) = pull_dir(&src, &dest, &PullOptions::default()).await;
    match res {
        Err(Error::RemoteExit { code: 23, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(dest.join("a/b/big.bin").exists());
}

/// Many files, some with a stale local basis: the generator streams block
/// sums while the server streams data back (no deadlock), at 31 and at 27
/// (unmultiplexed client output).
#[tokio::test]
async fn many_files_generator_and_receiver_overlap() {
    for protocol in [31, 27] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let dest = t.path().join("dest");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::create_dir_all(dest.join("d")).unwrap();
        for i in 0..150u64 {
            let data = random_bytes(96 * 1024, i + 1);
            let name = format!("d/f{i:03}");
            std::fs::write(src.join(&name), &data).unwrap();
            set_mtime(&src.join(&name), 1_600_000_000);
            if i % 2 == 0 {
                let mut old = data.clone();
                old[50_000] ^= 0xFF;
                std::fs::write(dest.join(&name), &old).unwrap();
                set_mtime(&dest.join(&name), 1_500_000_000);
            }
        }
        for i in 0..8u64 {
            let name = format!("big{i}");
            std::fs::write(src.join(&name), random_bytes(2 << 20, 100 + i)).unwrap();
        }
        let (res, seen) = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            pull_dir(&src, &dest, &popts(protocol)),
        )
        .await
        .expect("pull hung");
        let stats = res.unwrap_or_else(|e| panic!("{e}"));
        assert_same_pulled(&src, &dest);
        assert_eq!(stats.files_transferred, 158, "{seen:?}");
        assert!(stats.matched_bytes >= 70 * 90 * 1024, "{stats:?}");
    }
}

#[tokio::test]
async fn local_conflicts_are_reported_per_entry() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    // A read-only source root: the destination root gets that mode too,
    // and a second pull must still be able to write into it.
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let dest = t.path().join("dest");
    std::fs::create_dir_all(dest.join("small.txt/inner")).unwrap();
    let opts = PullOptions {
        sender: rsync_wire::SenderOptions {
            timeout_secs: Some(30),
            ..rsync_wire::SenderOptions::default()
        },
        ..PullOptions::default()
    };
    let (res, seen) = pull_dir(&src, &dest, &opts).await;
    match res {
        Err(Error::PullFailed { failed, stats }) => {
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert_eq!(failed[0].0, b"small.txt");
            assert_eq!(stats.files_transferred, 9);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.local_errors.len(), 1, "{seen:?}");
    assert_eq!(
        std::fs::read(dest.join("a/b/big.bin")).unwrap(),
        std::fs::read(src.join("a/b/big.bin")).unwrap()
    );
    std::fs::remove_dir_all(dest.join("small.txt")).unwrap();
    let (res, seen) = pull_dir(&src, &dest, &opts).await;
    let stats = res.unwrap_or_else(|e| panic!("{e} {seen:?}"));
    assert_eq!(stats.files_transferred, 1);
    assert_same_pulled(&src, &dest);
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Sets the mtime (seconds + nanoseconds) of a symlink itself, with the
/// stock `touch -h` (an independent tool, not our code).
fn touch_link(p: &Path, secs: i64, nsec: u32) {
    let st = std::process::Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}.{nsec:09}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Symlinks get the sender's mtime on the link itself (nanoseconds at 31,
/// seconds below), at creation and when only the time changed; what a link
/// points to (inside or outside the destination) keeps its own mtime.
#[tokio::test]
async fn pull_sets_symlink_mtimes() {
    for protocol in [31, 30, 27] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("target"), b"outside").unwrap();
        set_mtime(&outside.join("target"), 1_400_000_000);
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/file"), b"file").unwrap();
        set_mtime(&src.join("d/file"), 1_500_000_000);
        let links: [(&str, std::path::PathBuf, i64, u32); 4] = [
            ("rel", "d/file".into(), 1_600_000_001, 111_111_111),
            ("d/up", "../rel".into(), 1_600_000_002, 222_222_222),
            ("dangling", "no/such/thing".into(), 1_600_000_003, 0),
            ("abs", outside.join("target"), 1_600_000_004, 444_444_444),
        ];
        for (name, target, secs, nsec) in &links {
            std::os::unix::fs::symlink(target, src.join(name)).unwrap();
            touch_link(&src.join(name), *secs, *nsec);
        }
        set_mtime(&src.join("d"), 1_500_000_000);
        let dest = t.path().join("dest");
        let (res, seen) = pull_dir(&src, &dest, &popts(protocol)).await;
        let stats = res.unwrap_or_else(|e| panic!("protocol {protocol}: {e} {seen:?}"));
        assert_eq!(stats.symlinks, 4, "{stats:?}");
        let want_nsec = |n: u32| if protocol >= 31 { i64::from(n) } else { 0 };
        for (name, target, secs, nsec) in &links {
            let p = dest.join(name);
            assert_eq!(&std::fs::read_link(&p).unwrap(), target);
            assert_eq!(
                mtime_nsec(&p),
                (*secs, want_nsec(*nsec)),
                "protocol {protocol}: {name}"
            );
        }
        assert_same_pulled(&src, &dest);
        // Following the links changed nothing they point to.
        assert_eq!(mtime_nsec(&dest.join("d/file")), (1_500_000_000, 0));
        assert_eq!(mtime_nsec(&outside.join("target")), (1_400_000_000, 0));
        assert_eq!(std::fs::read(outside.join("target")).unwrap(), b"outside");

        // Only a link's time changes on the source: the existing link (same
        // target) gets the new time.
        touch_link(&src.join("d/up"), 1_650_000_000, 5);
        set_mtime(&src.join("d"), 1_500_000_000);
        let (res, seen) = pull_dir(&src, &dest, &popts(protocol)).await;
        res.unwrap_or_else(|e| panic!("protocol {protocol}: {e} {seen:?}"));
        assert_eq!(
            mtime_nsec(&dest.join("d/up")),
            (1_650_000_000, want_nsec(5)),
            "protocol {protocol}"
        );
        assert_same_pulled(&src, &dest);
        assert_eq!(mtime_nsec(&outside.join("target")), (1_400_000_000, 0));
    }
}

/// The session futures can be spawned on a multi-threaded runtime.
#[test]
fn pull_and_list_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let opts = PullOptions::default();
    let mut cb = |_: Event<'_>| {};
    let f = rsync_wire::pull_local(
        OsStrExt::from_bytes(b"rsync"),
        b"/x/",
        Path::new("/nonexistent"),
        &opts,
        &mut cb,
    );
    is_send(&f);
    let l = rsync_wire::list_local(OsStrExt::from_bytes(b"rsync"), b"/x/", true, &opts);
    is_send(&l);
}
