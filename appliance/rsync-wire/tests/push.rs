//! Interop tests against a real `rsync --server` spawned locally over pipes.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use common::*;
use rsync_wire::{AltDest, ContentSource, Error};

fn stock_literal(out: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("Literal data:"))
        .expect("stats line");
    line.split_whitespace()
        .nth(2)
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn push_new_tree() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    let (res, seen) = push_dir(&src, &dest, &opts_with(&[])).await;
    let stats = res.unwrap();
    assert_same_tree(&src, &dest);
    assert_eq!(stats.protocol, 31);
    assert_eq!(stats.checksum, "xxh128");
    // Every regular file is sent once, all literal.
    assert_eq!(stats.files_transferred, 10, "{seen:?}");
    assert_eq!(stats.matched_bytes, 0);
    assert_eq!(stats.literal_bytes, stats.source_bytes);
    assert!(stats.literal_bytes > 3 << 20);
    assert_eq!(seen.done.len(), 10);
    // Second push of the unchanged tree transfers nothing.
    let (res, seen) = push_dir(&src, &dest, &opts_with(&[])).await;
    let stats = res.unwrap();
    assert_eq!(stats.files_transferred, 0, "{seen:?}");
    assert_same_tree(&src, &dest);
}

#[tokio::test]
async fn push_changes_uses_delta() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    push_dir(&src, &dest, &opts_with(&[])).await.0.unwrap();
    let stock_dest = t.path().join("stock");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&dest)
            .arg(&stock_dest)
            .status()
            .unwrap()
            .success()
    );

    // Small edit in the middle of the big file, plus an insertion.
    let big = src.join("a/b/big.bin");
    let mut data = std::fs::read(&big).unwrap();
    for b in &mut data[1_500_000..1_500_100] {
        *b = b.wrapping_add(1);
    }
    data.splice(2_000_000..2_000_000, b"inserted bytes".iter().copied());
    rewrite(&big, &data);
    rewrite(&src.join("small.txt"), b"changed\n");

    let (res, seen) = push_dir(&src, &dest, &opts_with(&[])).await;
    let stats = res.unwrap();
    assert_same_tree(&src, &dest);
    assert_eq!(stats.files_transferred, 2, "{seen:?}");
    let big_done = seen.done.iter().find(|d| d.0 == b"a/b/big.bin").unwrap();
    assert_eq!(big_done.3, data.len() as u64);
    assert!(big_done.1 < 16 * 1024, "literal {} too large", big_done.1);
    assert_eq!(big_done.1 + big_done.2, data.len() as u64);

    // Same change with stock rsync.
    let out = Command::new(rsync_path())
        .args(["-a", "--no-whole-file", "--stats", "--checksum-seed=1"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", stock_dest.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stock = stock_literal(&String::from_utf8_lossy(&out.stdout));
    eprintln!(
        "literal bytes: ours {} (matched {}), stock rsync {}",
        stats.literal_bytes, stats.matched_bytes, stock
    );
    assert!(
        stats.literal_bytes <= stock + 1024,
        "ours {} vs stock {}",
        stats.literal_bytes,
        stock
    );
}

#[tokio::test]
async fn push_delete_with_excludes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    push_dir(&src, &dest, &opts_with(&[])).await.0.unwrap();
    std::fs::write(dest.join("stale"), b"x").unwrap();
    std::fs::create_dir_all(dest.join("old/dir")).unwrap();
    std::fs::write(dest.join("old/dir/f"), b"x").unwrap();
    std::fs::write(dest.join("a/precious.keep"), b"keep me").unwrap();
    std::fs::remove_file(src.join("a/one")).unwrap();

    let mut o = opts_with(&[]);
    o.server.delete = true;
    o.excludes = vec![b"*.keep".to_vec()];
    let (res, seen) = push_dir(&src, &dest, &o).await;
    let stats = res.unwrap();
    assert!(!dest.join("stale").exists());
    assert!(!dest.join("old").exists());
    assert!(!dest.join("a/one").exists());
    assert!(dest.join("a/precious.keep").exists());
    std::fs::remove_file(dest.join("a/precious.keep")).unwrap();
    assert_same_tree(&src, &dest);
    assert!(stats.deleted >= 4, "{stats:?} {seen:?}");
    assert!(seen.deleted.iter().any(|n| n == b"stale"));
    assert_eq!(
        stats.del_stats.iter().sum::<u64>(),
        stats.deleted,
        "{stats:?}"
    );
}

#[tokio::test]
async fn push_link_dest() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let d1 = t.path().join("snap1");
    push_dir(&src, &d1, &opts_with(&[])).await.0.unwrap();
    rewrite(&src.join("small.txt"), b"changed for snap2\n");
    let d2 = t.path().join("snap2");
    let mut o = opts_with(&[]);
    o.server.alt_dest = Some(AltDest::Link(vec![b"../snap1".to_vec()]));
    let (res, seen) = push_dir(&src, &d2, &o).await;
    let stats = res.unwrap();
    assert_same_tree(&src, &d2);
    assert_eq!(stats.files_transferred, 1, "{seen:?}");
    let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&d1.join("a/b/big.bin")), ino(&d2.join("a/b/big.bin")));
    assert_eq!(ino(&d1.join("empty")), ino(&d2.join("empty")));
    assert_ne!(ino(&d1.join("small.txt")), ino(&d2.join("small.txt")));
}

async fn push_at_protocol(p: u32) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    let arg = format!("--protocol={p}");
    let (res, seen) = push_dir(&src, &dest, &opts_with(&[&arg])).await;
    let stats = res.unwrap_or_else(|e| panic!("protocol {p}: {e}"));
    assert_eq!(stats.protocol, p);
    assert_same_tree(&src, &dest);
    assert_eq!(stats.files_transferred, 10, "{seen:?}");
    // Delta at this protocol too.
    let big = src.join("a/b/big.bin");
    let mut data = std::fs::read(&big).unwrap();
    data[1_000_000] ^= 0xFF;
    rewrite(&big, &data);
    let mut o = opts_with(&[&arg]);
    o.server.delete = true;
    std::fs::write(dest.join("stale"), b"x").unwrap();
    let (res, seen) = push_dir(&src, &dest, &o).await;
    let stats = res.unwrap_or_else(|e| panic!("protocol {p}: {e}"));
    assert_same_tree(&src, &dest);
    assert_eq!(stats.files_transferred, 1, "{seen:?}");
    assert!(stats.literal_bytes < 40_000, "{stats:?}");
}

#[tokio::test]
async fn push_protocol_30() {
    push_at_protocol(30).await;
}

#[tokio::test]
async fn push_protocol_29() {
    push_at_protocol(29).await;
}

#[tokio::test]
async fn push_protocol_27() {
    push_at_protocol(27).await;
}

#[tokio::test]
async fn md5_when_offered_only() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    push_dir(&src, &dest, &opts_with(&[])).await.0.unwrap();
    let big = src.join("a/b/big.bin");
    let mut data = std::fs::read(&big).unwrap();
    data[10] ^= 1;
    rewrite(&big, &data);
    let mut o = opts_with(&[]);
    o.checksums = vec![rsync_wire::ChecksumKind::Md5];
    let (res, _) = push_dir(&src, &dest, &o).await;
    let stats = res.unwrap();
    assert_eq!(stats.checksum, "md5");
    assert!(stats.matched_bytes > 3_000_000);
    assert_same_tree(&src, &dest);
}

#[tokio::test]
async fn bad_destination_reports_remote_error() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    // A regular file where the destination directory should be.
    let dest = t.path().join("blocker");
    std::fs::write(&dest, b"not a dir").unwrap();
    let (res, _seen) = push_dir(&src, &dest.join("sub"), &opts_with(&[])).await;
    let err = res.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::Session { .. } | Error::RemoteExit { .. }),
        "{text}"
    );
    // The server's own explanation is part of the error.
    assert!(
        text.contains("Not a directory") || text.contains("mkdir"),
        "{text}"
    );
    eprintln!("{text}");
}

/// A source that fails in configurable ways.
struct Flaky {
    inner: DirSource,
    /// Name whose first reader errors after 10 KiB.
    fail_first_read: Vec<u8>,
    /// Name that cannot be opened.
    fail_open: Vec<u8>,
    /// Name whose reader starts only after a delay.
    slow: Vec<u8>,
    delay: std::time::Duration,
    opened: std::collections::HashMap<Vec<u8>, usize>,
}

impl Flaky {
    fn new(root: &std::path::Path) -> Self {
        Flaky {
            inner: DirSource::new(root),
            fail_first_read: Vec::new(),
            fail_open: Vec::new(),
            slow: Vec::new(),
            delay: std::time::Duration::ZERO,
            opened: Default::default(),
        }
    }
}

impl rsync_wire::ContentSource for Flaky {
    type Reader = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;
    async fn open(
        &mut self,
        index: usize,
        entry: &rsync_wire::FileEntry,
    ) -> std::io::Result<Self::Reader> {
        use tokio::io::AsyncReadExt;
        let n = self.opened.entry(entry.name.to_vec()).or_default();
        *n += 1;
        let first = *n == 1;
        if entry.name == self.fail_open {
            return Err(std::io::Error::other("cannot open on purpose"));
        }
        let f = self.inner.open(index, entry).await?;
        if entry.name == self.fail_first_read && first {
            let err = tokio_test_reader_error();
            return Ok(Box::pin(f.take(10 * 1024).chain(err)));
        }
        if entry.name == self.slow {
            tokio::time::sleep(self.delay).await;
        }
        Ok(Box::pin(f))
    }
}

/// A reader that fails.
fn tokio_test_reader_error() -> impl tokio::io::AsyncRead + Send {
    struct Fail;
    impl tokio::io::AsyncRead for Fail {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::other("read failed on purpose")))
        }
    }
    Fail
}

#[tokio::test]
async fn read_error_triggers_redo() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    let mut source = Flaky::new(&src);
    source.fail_first_read = b"a/b/big.bin".to_vec();
    let (res, seen) = push_entries(scan(&src), &mut source, &dest, &opts_with(&[])).await;
    // The receiver redid the file; rsync still reports the read error (exit 23).
    match res {
        Ok(stats) => assert_eq!(stats.files_redone, 1),
        Err(Error::RemoteExit { code, .. }) => assert_eq!(code, 23, "{seen:?}"),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(source.opened[&b"a/b/big.bin"[..]], 2);
    assert!(
        seen.done.iter().any(|d| d.0 == b"a/b/big.bin" && d.4),
        "{seen:?}"
    );
    assert_eq!(seen.content_errors, 1);
    assert_same_tree(&src, &dest);
}

#[tokio::test]
async fn open_error_is_reported_and_others_transfer() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    let mut source = Flaky::new(&src);
    source.fail_open = b"small.txt".to_vec();
    let (res, seen) = push_entries(scan(&src), &mut source, &dest, &opts_with(&[])).await;
    match res {
        Err(Error::RemoteExit { code, .. }) => assert_eq!(code, 23),
        other => panic!("expected exit 23, got {other:?}"),
    }
    assert_eq!(seen.content_errors, 1);
    assert!(!dest.join("small.txt").exists());
    assert_eq!(
        std::fs::read(dest.join("a/b/big.bin")).unwrap(),
        std::fs::read(src.join("a/b/big.bin")).unwrap()
    );
}

#[tokio::test]
async fn opens_only_requested_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    push_dir(&src, &dest, &opts_with(&[])).await.0.unwrap();
    rewrite(&src.join("a/one"), b"two\n");
    let mut source = DirSource::new(&src);
    let opens = source.opens.clone();
    let (res, _) = push_entries(scan(&src), &mut source, &dest, &opts_with(&[])).await;
    res.unwrap();
    assert_eq!(*opens.lock().unwrap(), vec![b"a/one".to_vec()]);
}

/// With `--timeout` set, a content provider that stalls longer than the
/// timeout must not break the session (we send keepalives while waiting:
/// empty DATA frames at 31, MSG_NOOP at 30).
async fn slow_source_with_timeout(protocol: &str) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"slow data").unwrap();
    let dest = t.path().join("dest");
    let mut source = Flaky::new(&src);
    source.slow = b"f".to_vec();
    // rsync's own timeout handling has 1-second granularity and its
    // generator keeps itself alive every (timeout+1)/2 s: --timeout=2 was
    // occasionally too tight for the server on a loaded machine.
    source.delay = std::time::Duration::from_millis(6500);
    let mut o = opts_with(&[protocol]);
    o.server.timeout_secs = Some(3);
    let (res, seen) = push_entries(scan(&src), &mut source, &dest, &o).await;
    let stats = res.unwrap_or_else(|e| panic!("{e} {seen:?}"));
    assert!(stats.keepalives_sent >= 3, "{stats:?}");
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"slow data");
}

#[tokio::test]
async fn slow_source_with_timeout_31() {
    slow_source_with_timeout("--protocol=31").await;
}

#[tokio::test]
async fn slow_source_with_timeout_30() {
    slow_source_with_timeout("--protocol=30").await;
}

#[tokio::test]
async fn absurd_sum_count_is_rejected() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest");
    push_dir(&src, &dest, &opts_with(&[])).await.0.unwrap();
    let big = src.join("a/b/big.bin");
    let mut data = std::fs::read(&big).unwrap();
    data[0] ^= 1;
    rewrite(&big, &data);
    let mut o = opts_with(&[]);
    o.max_block_sums = 100;
    let (res, _) = push_dir(&src, &dest, &o).await;
    let e = res.unwrap_err();
    assert!(e.to_string().contains("block-sum count"), "{e}");
}

/// Content generated on the fly: deterministic bytes, never held in memory.
struct Generated {
    size: u64,
    seed: u64,
}

struct GenReader {
    left: u64,
    state: u64,
}

impl tokio::io::AsyncRead for GenReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left).min(8192) as usize;
        let mut chunk = Vec::with_capacity(n);
        while chunk.len() < n {
            let mut s = self.state;
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            self.state = s;
            chunk.push((s >> 24) as u8);
        }
        self.left -= n as u64;
        buf.put_slice(&chunk);
        std::task::Poll::Ready(Ok(()))
    }
}

impl rsync_wire::ContentSource for Generated {
    type Reader = GenReader;
    async fn open(&mut self, _: usize, _: &rsync_wire::FileEntry) -> std::io::Result<GenReader> {
        Ok(GenReader {
            left: self.size,
            state: 0x9E37_79B9_7F4A_7C15 ^ self.seed,
        })
    }
}

#[tokio::test]
async fn generated_content_and_partial_dir() {
    use tokio::io::AsyncReadExt;
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let size = 20u64 << 20;
    let files = vec![
        rsync_wire::FileEntry::dir(".", 1_600_000_000, 0o755),
        rsync_wire::FileEntry::dir("vm", 1_600_000_000, 0o700),
        rsync_wire::FileEntry::file("vm/disk.img", size, 1_600_000_000, 0o600)
            .with_nsec(123_456_789),
    ];
    let mut o = opts_with(&[]);
    o.server.partial_dir = Some(b".rsync-partial".to_vec());
    o.server.delete = true;
    let mut g = Generated { size, seed: 0 };
    let (res, seen) = push_entries(files.clone(), &mut g, &dest, &o).await;
    let stats = res.unwrap_or_else(|e| panic!("{e} {seen:?}"));
    assert_eq!(stats.literal_bytes, size);
    let mut expect = Vec::new();
    g.open(0, &files[2])
        .await
        .unwrap()
        .read_to_end(&mut expect)
        .await
        .unwrap();
    let got = std::fs::read(dest.join("vm/disk.img")).unwrap();
    assert!(got == expect, "content differs");
    let md = std::fs::metadata(dest.join("vm/disk.img")).unwrap();
    assert_eq!(md.mtime(), 1_600_000_000);
    assert_eq!(md.mtime_nsec(), 123_456_789);
    // Same list again with a new mtime: everything matches the basis.
    let mut files2 = files.clone();
    files2[2].mtime += 1;
    let (res, _) = push_entries(files2, &mut g, &dest, &o).await;
    let stats = res.unwrap();
    assert_eq!(stats.matched_bytes, size);
    assert_eq!(stats.literal_bytes, 0);
}

#[tokio::test]
async fn push_compare_dest() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let base = t.path().join("base");
    push_dir(&src, &base, &opts_with(&[])).await.0.unwrap();
    rewrite(&src.join("small.txt"), b"only this changed\n");
    let d2 = t.path().join("incr");
    let mut o = opts_with(&[]);
    o.server.alt_dest = Some(AltDest::Compare(vec![b"../base".to_vec()]));
    let (res, seen) = push_dir(&src, &d2, &o).await;
    let stats = res.unwrap();
    assert_eq!(stats.files_transferred, 1, "{seen:?}");
    assert_eq!(
        std::fs::read(d2.join("small.txt")).unwrap(),
        b"only this changed\n"
    );
    assert!(!d2.join("a/b/big.bin").exists());
}

/// The transport-agnostic entry point with a connection built by hand, as
/// an SSH transport would (the remote command line is the shell-quoted form).
#[tokio::test]
async fn push_over_hand_built_connection() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let dest = t.path().join("dest with 'quote");
    let o = opts_with(&[]);
    let argv =
        rsync_wire::args::server_args(&o.server, dest.as_os_str().as_encoded_bytes()).unwrap();
    // What an SSH transport would send as the remote command; run it via sh.
    let cmd = rsync_wire::args::shell_command(b"rsync", &argv);
    let cmd = String::from_utf8(cmd).unwrap();
    let conn = rsync_wire::spawn_local("sh".as_ref(), &["-c".into(), cmd.into()]).unwrap();
    let mut source = DirSource::new(&src);
    let mut n_msgs = 0;
    let mut cb = |e: rsync_wire::Event<'_>| {
        if let rsync_wire::Event::Message { .. } = e {
            n_msgs += 1;
        }
    };
    let stats = rsync_wire::push(conn, scan(&src), &mut source, &o, &mut cb)
        .await
        .unwrap();
    assert_eq!(stats.files_transferred, 10);
    assert_eq!(n_msgs, 0);
    assert_same_tree(&src, &dest);
}

/// Throughput check (run with `--release --ignored --nocapture`): a basis
/// that matches nothing forces the rolling search over every byte.
#[tokio::test]
#[ignore]
async fn bench_rolling_search() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let size = 256u64 << 20;
    let mk = |mtime| vec![rsync_wire::FileEntry::file("big", size, mtime, 0o600)];
    let o = opts_with(&[]);
    let mut g = Generated { size, seed: 1 };
    let t0 = std::time::Instant::now();
    push_entries(mk(1), &mut g, &dest, &o).await.0.unwrap();
    eprintln!("new file: {:?}", t0.elapsed());
    let mut g = Generated { size, seed: 2 };
    let t0 = std::time::Instant::now();
    let s = push_entries(mk(2), &mut g, &dest, &o).await.0.unwrap();
    eprintln!("no matches: {:?} literal {}", t0.elapsed(), s.literal_bytes);
    let t0 = std::time::Instant::now();
    let s = push_entries(mk(3), &mut g, &dest, &o).await.0.unwrap();
    eprintln!(
        "all matches: {:?} matched {}",
        t0.elapsed(),
        s.matched_bytes
    );
}

/// Before protocol 29 both sides sort plain path bytes, "." included:
/// names starting with a byte below '.' come before it.
#[tokio::test]
async fn push_names_sorting_before_dot() {
    for p in [27, 29, 31] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        make_tree(&src);
        std::fs::write(src.join("-dash"), b"dash").unwrap();
        std::fs::write(src.join(" space"), b"space").unwrap();
        std::fs::create_dir(src.join("!dir")).unwrap();
        std::fs::write(src.join("!dir/f"), b"f").unwrap();
        let dest = t.path().join("dest");
        let arg = format!("--protocol={p}");
        let (res, seen) = push_dir(&src, &dest, &opts_with(&[&arg])).await;
        let stats = res.unwrap_or_else(|e| panic!("protocol {p}: {e}"));
        assert_same_tree(&src, &dest);
        assert_eq!(stats.files_transferred, 13, "{seen:?}");
    }
}

/// Runs a push that is expected to fail on the server's side, guarded
/// against hangs; returns the error text.
async fn failing_push(
    program: &std::ffi::OsStr,
    src: &std::path::Path,
    dest: &std::path::Path,
) -> String {
    let (res, seen) = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        push_dir_with(program, src, dest, &opts_with(&[])),
    )
    .await
    .expect("the push hung after a server-side error");
    let err = match res {
        Ok(stats) => panic!("push succeeded: {stats:?} {seen:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(err, Error::Session { .. } | Error::RemoteExit { .. }),
        "{err}"
    );
    let text = err.to_string();
    eprintln!("{text}");
    text
}

/// The server may not write the destination (it runs as `nobody`; root
/// would bypass the permission bits): the error carries the server's own
/// "Permission denied", for an existing directory (every file refused,
/// exit 23) and for one it would have to create (fatal mkdir).
#[tokio::test]
async fn push_permission_denied_carries_servers_message() {
    use common::peerfs;
    let t = tempfile::tempdir().unwrap();
    let Some(wrapper) = peerfs::rsync_as_nobody(t.path()) else {
        return;
    };
    let src = t.path().join("src");
    make_tree(&src);
    let locked = t.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("existing"), b"untouched").unwrap();
    peerfs::open_path_for_others(t.path(), &locked);
    // Readable but not writable for nobody (owned by root, 0755).
    assert_eq!(std::fs::metadata(&locked).unwrap().uid(), 0);

    let text = failing_push(wrapper.as_os_str(), &src, &locked).await;
    assert!(text.contains("Permission denied"), "{text}");
    let text = failing_push(wrapper.as_os_str(), &src, &locked.join("new")).await;
    assert!(text.contains("Permission denied"), "{text}");
    assert!(text.contains("new"), "{text}");
    // Nothing was written.
    let names: Vec<_> = std::fs::read_dir(&locked)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["existing"]);
    assert_eq!(
        std::fs::read(locked.join("existing")).unwrap(),
        b"untouched"
    );

    // The same tree into a directory nobody owns goes through (the wrapper
    // itself is not what fails).
    let open = t.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::os::unix::fs::chown(&open, Some(65534), Some(65534)).unwrap();
    let (res, seen) = push_dir_with(wrapper.as_os_str(), &src, &open, &opts_with(&[])).await;
    res.unwrap_or_else(|e| panic!("{e} {seen:?}"));
    assert_eq!(
        std::fs::read(open.join("a/b/big.bin")).unwrap(),
        std::fs::read(src.join("a/b/big.bin")).unwrap()
    );
}

/// The destination is on a read-only file system (which root cannot
/// bypass): the server's "Read-only file system" is in the error and the
/// existing files are unchanged.
#[tokio::test]
async fn push_to_read_only_fs_carries_servers_message() {
    use common::peerfs;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let Some(mnt) = peerfs::Tmpfs::mount(&t.path().join("ro"), "16m") else {
        return;
    };
    let dest = mnt.path.join("dest");
    push_dir(&src, &dest, &opts_with(&[])).await.0.unwrap();
    let before = snapshot(&dest);
    mnt.remount_ro();
    rewrite(&src.join("small.txt"), b"changed on the source\n");
    std::fs::write(src.join("new file"), b"new").unwrap();
    let text = failing_push(&rsync_path(), &src, &dest).await;
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(snapshot(&dest) == before, "destination changed");
}

/// The destination file system fills up half-way through a big file: the
/// push ends with the server's "No space left on device" instead of hanging,
/// the files already there are intact and no temporary file is left; once
/// the big file is gone from the source, the next push completes.
#[tokio::test]
async fn push_disk_full_carries_servers_message_and_keeps_old_files() {
    use common::peerfs;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("keep.txt"), b"keep me\n").unwrap();
    let old = random_bytes(300_000, 7);
    std::fs::write(src.join("old.bin"), &old).unwrap();
    set_mtime(&src.join("keep.txt"), 1_600_000_000);
    set_mtime(&src.join("old.bin"), 1_600_000_000);
    let Some(mnt) = peerfs::Tmpfs::mount(&t.path().join("small"), "1m") else {
        return;
    };
    let dest = mnt.path.join("dest");
    push_dir(&src, &dest, &opts_with(&[])).await.0.unwrap();
    let before = snapshot(&dest);

    // 2 MiB do not fit in what is left of 1 MiB; old.bin changes too.
    std::fs::write(src.join("big.bin"), random_bytes(2 << 20, 8)).unwrap();
    let mut changed = old.clone();
    changed[150_000] ^= 0xff;
    rewrite(&src.join("old.bin"), &changed);
    let text = failing_push(&rsync_path(), &src, &dest).await;
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        snapshot(&dest) == before,
        "destination changed or left over"
    );

    // Room again: the next push (without the big file) completes.
    std::fs::remove_file(src.join("big.bin")).unwrap();
    let (res, seen) = push_dir(&src, &dest, &opts_with(&[])).await;
    res.unwrap_or_else(|e| panic!("{e} {seen:?}"));
    assert_same_tree(&src, &dest);
}
