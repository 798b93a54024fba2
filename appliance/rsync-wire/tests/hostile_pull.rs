//! A hostile or broken sender in a pull: unsafe names, absurd lengths and
//! counts, data nobody asked for. Every case must end in a clean error
//! (no panic, no hang) with nothing written outside the destination; a
//! scripted peer also exercises the redo pass.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use rsync_wire::checksum::{ChecksumKind, FileHasher, SumParams};
use rsync_wire::codec;
use rsync_wire::{Connection, ListLimits, PullOptions, RemoteEnd, RemoteOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct FakeRemote;

impl RemoteEnd for FakeRemote {
    fn finish(&mut self, _: Duration) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + '_>> {
        Box::pin(async {
            RemoteOutcome {
                exit_status: Some(0),
                stderr: String::new(),
            }
        })
    }
}

fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for chunk in payload.chunks(0xFF_FFFF) {
        let h = ((7 + u32::from(tag)) << 24) | chunk.len() as u32;
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(chunk);
    }
    v
}

fn handshake() -> Vec<u8> {
    let mut v = vec![31, 0, 0, 0, 0x81, 0xFE, 3];
    v.extend_from_slice(b"md5");
    v.extend_from_slice(&1i32.to_le_bytes());
    v
}

const S_IFREG: i32 = 0o100644;
const S_IFDIR: i32 = 0o040755;
const S_IFLNK: i32 = 0o120777;

/// One file-list entry at protocol 31 (varint flags, no shared prefix).
fn entry(out: &mut Vec<u8>, name: &[u8], size: i64, mode: i32) {
    entry_at(out, name, size, mode, 1_600_000_000);
}

/// Like [`entry`] with a chosen mtime.
fn entry_at(out: &mut Vec<u8>, name: &[u8], size: i64, mode: i32, mtime: i64) {
    let top = if name == b"." { 1 } else { 0 };
    codec::put_varint(out, 0x18 | top);
    if name.len() > 255 {
        panic!("use a raw entry");
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    codec::put_varlong(out, size, 3);
    codec::put_varlong(out, mtime, 4);
    codec::put_i32(out, mode);
}

fn end_list(out: &mut Vec<u8>) {
    codec::put_varint(out, 0);
    codec::put_varint(out, 0);
}

/// Reads the client's DATA stream until `n` bytes arrived (or EOF).
async fn read_client_data<R: tokio::io::AsyncRead + Unpin>(r: &mut R, n: usize, mux: bool) {
    let mut got = 0;
    if !mux {
        let mut b = vec![0u8; n];
        let _ = r.read_exact(&mut b).await;
        return;
    }
    while got < n {
        let mut h = [0u8; 4];
        if r.read_exact(&mut h).await.is_err() {
            return;
        }
        let h = u32::from_le_bytes(h);
        let len = (h & 0xFF_FFFF) as usize;
        let mut p = vec![0u8; len];
        if r.read_exact(&mut p).await.is_err() {
            return;
        }
        if h >> 24 == 7 {
            got += len;
        }
    }
}

/// Runs a pull into `dest` against a server that sends `parts` in turn,
/// waiting before part `i > 0` until the client sent `waits[i - 1]` DATA
/// bytes, then closes.
async fn pull_against(
    parts: Vec<Vec<u8>>,
    waits: Vec<usize>,
    dest: &Path,
    opts: &PullOptions,
) -> rsync_wire::Result<rsync_wire::PullStats> {
    pull_against_at(31, parts, waits, dest, opts).await
}

async fn pull_against_at(
    proto: u32,
    parts: Vec<Vec<u8>>,
    waits: Vec<usize>,
    dest: &Path,
    opts: &PullOptions,
) -> rsync_wire::Result<rsync_wire::PullStats> {
    let (conn, peer) = scripted_peer(proto, parts, waits);
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        rsync_wire::pull(conn, dest, opts, &mut |_| {}),
    )
    .await
    .expect("pull hung");
    peer.abort();
    res
}

type DuplexHalf<T> = tokio::io::ReadHalf<T>;
type Client =
    Connection<DuplexHalf<tokio::io::DuplexStream>, tokio::io::WriteHalf<tokio::io::DuplexStream>>;

/// The server's side of a scripted session, stopped when dropped.
struct Peer(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>);

impl Peer {
    fn abort(self) {
        self.0.abort();
        self.1.abort();
    }
}

/// A connection to a peer that sends `parts` (see [`pull_against`]).
fn scripted_peer(proto: u32, parts: Vec<Vec<u8>>, waits: Vec<usize>) -> (Client, Peer) {
    let mux = proto >= 30;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (mut srv_r, mut srv_w) = tokio::io::split(server);
    let (waited_tx, mut waited_rx) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move {
        // Version, then from 30 on the vstring "xxh128 md5".
        let mut hs = vec![0u8; if mux { 4 + 1 + 10 } else { 4 }];
        if srv_r.read_exact(&mut hs).await.is_err() {
            return;
        }
        let mut total = 0;
        for w in waits {
            read_client_data(&mut srv_r, w - total, mux).await;
            total = w;
            let _ = waited_tx.send(());
        }
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = srv_r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let feed = tokio::spawn(async move {
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 && waited_rx.recv().await.is_none() {
                break;
            }
            if srv_w.write_all(&p).await.is_err() {
                break;
            }
        }
        let _ = srv_w.shutdown().await;
    });
    let (r, w) = tokio::io::split(client);
    let conn = Connection {
        reader: r,
        writer: w,
        remote: Box::new(FakeRemote),
    };
    (conn, Peer(drain, feed))
}

fn opts() -> PullOptions {
    PullOptions {
        exit_grace: Duration::from_secs(1),
        ..PullOptions::default()
    }
}

/// Only `dest` (and what is inside it) exists under `root`.
fn only_dest(root: &Path) {
    let names: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["dest"], "something was written outside");
}

async fn list_error(list: Vec<u8>, opts: &PullOptions) -> String {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let mut script = handshake();
    script.extend(frame(0, &list));
    let e = pull_against(vec![script], vec![], &dest, opts)
        .await
        .unwrap_err();
    only_dest(t.path());
    // Rejected before anything was created inside the destination either.
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    e.to_string()
}

#[tokio::test]
async fn unsafe_names_are_rejected() {
    for bad in [
        &b"../x"[..],
        b"/etc/x",
        b"a/../../b",
        b"..",
        b"a/./b",
        b"a//b",
        b"x\0y",
    ] {
        let mut l = Vec::new();
        entry(&mut l, b".", 0, S_IFDIR);
        entry(&mut l, b"a", 0, S_IFDIR);
        entry(&mut l, bad, 3, S_IFREG);
        end_list(&mut l);
        let e = list_error(l, &opts()).await;
        assert!(e.contains("unsafe file name"), "{bad:?}: {e}");
    }
    // A file below a symlink, a file below a file, a name listed twice.
    for (names, why) in [
        (
            vec![(&b"l"[..], S_IFLNK), (b"l/x", S_IFREG)],
            "parent is not a listed directory",
        ),
        (vec![(b"f", S_IFREG), (b"f/x", S_IFREG)], "parent"),
        (vec![(b"d", S_IFDIR), (b"d", S_IFDIR)], "listed twice"),
        (vec![(b"x/y", S_IFREG)], "parent"),
    ] {
        let mut l = Vec::new();
        entry(&mut l, b".", 0, S_IFDIR);
        for (n, m) in names {
            entry(&mut l, n, 0, m);
            if m == S_IFLNK {
                codec::put_varint(&mut l, 4);
                l.extend_from_slice(b"/etc");
            }
        }
        end_list(&mut l);
        let e = list_error(l, &opts()).await;
        assert!(e.contains(why), "{e}");
    }
}

#[tokio::test]
async fn absurd_lengths_and_counts_are_refused() {
    // A long name (LONG_NAME flag) claiming 2 GiB.
    let mut l = Vec::new();
    codec::put_varint(&mut l, 0x18 | 0x40);
    codec::put_varint(&mut l, i32::MAX);
    let e = list_error(l, &opts()).await;
    assert!(e.contains("file name length"), "{e}");

    // Shared prefix longer than the previous name.
    let mut l = Vec::new();
    entry(&mut l, b"a", 0, S_IFREG);
    codec::put_varint(&mut l, 0x18 | 0x20);
    l.push(200);
    let e = list_error(l, &opts()).await;
    assert!(e.contains("shared name prefix"), "{e}");

    // A symlink target of 2 GiB.
    let mut l = Vec::new();
    entry(&mut l, b"l", 0, S_IFLNK);
    codec::put_varint(&mut l, i32::MAX);
    let e = list_error(l, &opts()).await;
    assert!(e.contains("symlink target length"), "{e}");

    // Negative size.
    let mut l = Vec::new();
    entry(&mut l, b"f", -5, S_IFREG);
    let e = list_error(l, &opts()).await;
    assert!(e.contains("file size"), "{e}");

    // More entries than allowed.
    let o = PullOptions {
        limits: ListLimits {
            max_entries: 100,
            max_name_bytes: 1 << 20,
        },
        ..opts()
    };
    let mut l = Vec::new();
    for i in 0..101 {
        entry(&mut l, format!("f{i:04}").as_bytes(), 1, S_IFREG);
    }
    end_list(&mut l);
    let e = list_error(l, &o).await;
    assert!(e.contains("entry count"), "{e}");

    // More name bytes than allowed.
    let o = PullOptions {
        limits: ListLimits {
            max_entries: 1000,
            max_name_bytes: 1000,
        },
        ..opts()
    };
    let mut l = Vec::new();
    for i in 0..10 {
        entry(&mut l, format!("{i:0200}").as_bytes(), 1, S_IFREG);
    }
    end_list(&mut l);
    let e = list_error(l, &o).await;
    assert!(e.contains("name bytes"), "{e}");

    // Device entries were not asked for.
    let mut l = Vec::new();
    entry(&mut l, b"dev", 0, 0o020644);
    end_list(&mut l);
    let e = list_error(l, &opts()).await;
    assert!(e.contains("unsupported type"), "{e}");
}

fn md5_digest(data: &[u8]) -> [u8; 16] {
    let mut h = FileHasher::new(&SumParams {
        kind: ChecksumKind::Md5,
        seed: 1,
        proper_seed_order: true,
    });
    h.update(data);
    h.finish()
}

/// `.` and one file `f` (index 1), as a DATA frame after the handshake.
fn one_file_list() -> Vec<u8> {
    let mut l = Vec::new();
    entry(&mut l, b".", 0, S_IFDIR);
    entry(&mut l, b"f", 5, S_IFREG);
    end_list(&mut l);
    let mut s = handshake();
    s.extend(frame(0, &l));
    s
}

/// Client DATA bytes: filter list end (4), request for f (1+2+16), NDX_DONE.
const FIRST_PASS_BYTES: usize = 4 + 19 + 1;

fn file_data(ndx: &[u8], data: &[u8], digest: &[u8; 16]) -> Vec<u8> {
    let mut d = ndx.to_vec();
    d.extend_from_slice(&0x8000u16.to_le_bytes());
    d.extend_from_slice(&[0u8; 16]);
    codec::put_i32(&mut d, data.len() as i32);
    d.extend_from_slice(data);
    codec::put_i32(&mut d, 0);
    d.extend_from_slice(digest);
    d
}

fn ending() -> Vec<u8> {
    let mut d = vec![0u8, 0u8]; // echo of NDX_DONE #2, final NDX_DONE
    for _ in 0..5 {
        codec::put_varlong(&mut d, 0, 3);
    }
    d.push(0); // answer to the first goodbye
    d
}

#[tokio::test]
async fn bad_digest_is_redone_then_reported() {
    // First attempt corrupt, redo good: success with one redo.
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let mut p1 = one_file_list();
    let mut d = file_data(&[0x02], b"hello", &[0u8; 16]);
    d.push(0); // echo of NDX_DONE #1
    p1.extend(frame(0, &d));
    let mut d = file_data(&[0xFE, 0, 0], b"hello", &md5_digest(b"hello"));
    d.extend(ending());
    let p2 = frame(0, &d);
    let stats = pull_against(vec![p1, p2], vec![FIRST_PASS_BYTES + 19], &dest, &opts())
        .await
        .unwrap();
    assert_eq!(stats.files_redone, 1);
    assert_eq!(stats.files_transferred, 1);
    assert_eq!(stats.literal_bytes, 10);
    assert_eq!(stats.total_bytes, 5);
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"hello");
    only_dest(t.path());

    // Both attempts corrupt: PullFailed naming the file, no file left.
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let mut p1 = one_file_list();
    let mut d = file_data(&[0x02], b"hello", &[0u8; 16]);
    d.push(0);
    p1.extend(frame(0, &d));
    let mut d = file_data(&[0xFE, 0, 0], b"hello", &[1u8; 16]);
    d.extend(ending());
    let p2 = frame(0, &d);
    let e = pull_against(vec![p1, p2], vec![FIRST_PASS_BYTES + 19], &dest, &opts())
        .await
        .unwrap_err();
    match &e {
        rsync_wire::Error::PullFailed { failed, .. } => {
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].0, b"f");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "temp file left"
    );
}

#[tokio::test]
async fn bad_data_answers_are_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Data for "." (not a regular file).
        (
            {
                let mut d = vec![0x01];
                d.extend_from_slice(&0x8000u16.to_le_bytes());
                d
            },
            "non-regular",
        ),
        // Index out of range.
        (vec![0x40, 0, 0x80], "file index"),
        // Wrong sum head echoed.
        (
            {
                let mut d = vec![0x02];
                d.extend_from_slice(&0x8000u16.to_le_bytes());
                for v in [5i32, 700, 2, 0] {
                    codec::put_i32(&mut d, v);
                }
                d
            },
            "sum head",
        ),
        // A block match without a basis (count 0).
        (
            {
                let mut d = vec![0x02];
                d.extend_from_slice(&0x8000u16.to_le_bytes());
                d.extend_from_slice(&[0u8; 16]);
                codec::put_i32(&mut d, i32::MIN);
                d
            },
            "block index",
        ),
    ];
    for (data, why) in cases {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let mut p1 = one_file_list();
        p1.extend(frame(0, &data));
        let e = pull_against(vec![p1], vec![], &dest, &opts())
            .await
            .unwrap_err();
        assert!(e.to_string().contains(why), "{why}: {e}");
        only_dest(t.path());
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "temp file left"
        );
    }
}

#[tokio::test]
async fn connection_lost_mid_file_leaves_no_temp_file() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let mut p1 = one_file_list();
    let mut d = vec![0x02];
    d.extend_from_slice(&0x8000u16.to_le_bytes());
    d.extend_from_slice(&[0u8; 16]);
    codec::put_i32(&mut d, 1000);
    d.extend_from_slice(&[7u8; 300]);
    p1.extend(frame(0, &d));
    let e = pull_against(vec![p1], vec![], &dest, &opts())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "temp file left"
    );
}

/// Random bytes after a valid list: an error, never a panic or hang.
#[tokio::test]
async fn random_garbage_after_list() {
    let mut seed = 0x0123_4567_89AB_CDEFu64;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let mut p1 = one_file_list();
        let len = (rng() % 200) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rng() as u8).collect();
        if round % 2 == 0 {
            // Start like a real answer so that the data path is reached.
            let mut h = vec![0x02];
            h.extend_from_slice(&0x8000u16.to_le_bytes());
            h.extend_from_slice(&[0u8; 16]);
            h.extend(d);
            d = h;
        }
        p1.extend(frame(0, &d));
        let res = pull_against(vec![p1], vec![], &dest, &opts()).await;
        assert!(res.is_err(), "round {round}: accepted {res:?}");
        only_dest(t.path());
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "temp file left"
        );
    }
}

/// The redo pass at protocol 27: int32 indices, no item flags, MD4 digests
/// seeded with the checksum seed, unmultiplexed client output.
#[tokio::test]
async fn redo_at_protocol_27() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let mut s = vec![27, 0, 0, 0];
    s.extend_from_slice(&7i32.to_le_bytes()); // seed
    let mut l = Vec::new();
    for (name, mode) in [(&b"."[..], S_IFDIR), (b"f", S_IFREG)] {
        l.push(0x18 | u8::from(name == b"."));
        l.push(name.len() as u8);
        l.extend_from_slice(name);
        codec::put_i32(&mut l, 5); // size
        codec::put_i32(&mut l, 1_600_000_000); // mtime
        codec::put_i32(&mut l, mode);
    }
    l.push(0);
    codec::put_i32(&mut l, 0); // io_error
    let one = |digest: &[u8; 16]| {
        let mut d = Vec::new();
        codec::put_i32(&mut d, 1);
        d.extend_from_slice(&[0u8; 16]);
        codec::put_i32(&mut d, 5);
        d.extend_from_slice(b"hello");
        codec::put_i32(&mut d, 0);
        d.extend_from_slice(digest);
        d
    };
    let mut h = FileHasher::new(&SumParams {
        kind: ChecksumKind::Md4,
        seed: 7,
        proper_seed_order: false,
    });
    h.update(b"hello");
    let good = h.finish();
    l.extend(one(&[0u8; 16]));
    codec::put_i32(&mut l, -1); // echo of NDX_DONE #1
    s.extend(frame(0, &l));
    let mut d = one(&good);
    codec::put_i32(&mut d, -1); // final NDX_DONE
    for _ in 0..3 {
        codec::put_i32(&mut d, 0); // stats
    }
    let p2 = frame(0, &d);
    let o = PullOptions {
        protocol: 27,
        ..opts()
    };
    // Client: filter end (4), request (4 + 16), NDX_DONE (4), redo request.
    let stats = pull_against_at(27, vec![s, p2], vec![4 + 20 + 4 + 20], &dest, &o)
        .await
        .unwrap();
    assert_eq!((stats.files_transferred, stats.files_redone), (1, 1));
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"hello");
}

/// Extreme mtimes (`i64::MIN`, `i64::MAX`) reach `SystemTime` arithmetic
/// and `futimens` when a file or directory is finished: no panic, at worst
/// a failed entry, nothing left behind.
#[tokio::test]
async fn extreme_mtimes_are_harmless() {
    for mtime in [i64::MIN, i64::MIN + 1, i64::MAX] {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let mut l = Vec::new();
        entry_at(&mut l, b".", 0, S_IFDIR, mtime);
        entry_at(&mut l, b"f", 5, S_IFREG, mtime);
        end_list(&mut l);
        let mut s = handshake();
        s.extend(frame(0, &l));
        let mut d = file_data(&[0x02], b"hello", &md5_digest(b"hello"));
        d.push(0); // echo of NDX_DONE #1
        d.extend(ending());
        s.extend(frame(0, &d));
        let res = pull_against(vec![s], vec![], &dest, &opts()).await;
        match res {
            Ok(_) => {}
            Err(rsync_wire::Error::PullFailed { failed, .. }) => {
                assert!(!failed.is_empty());
            }
            Err(e) => panic!("mtime {mtime}: {e}"),
        }
        only_dest(t.path());
        // No temporary file is left behind.
        for e in std::fs::read_dir(&dest).unwrap() {
            let n = e.unwrap().file_name();
            assert!(!n.to_string_lossy().starts_with('.'), "{n:?} left");
        }
    }
}

/// Records what a streaming pull hands over.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    data: Vec<u8>,
}

impl rsync_wire::PullSink for Recorder {
    fn select(&mut self, list: &[rsync_wire::FileEntry]) -> Vec<bool> {
        self.calls.push(format!("select {}", list.len()));
        vec![true; list.len()]
    }
    fn begin(&mut self, i: usize, e: &rsync_wire::FileEntry, redo: bool) -> Result<(), String> {
        self.calls.push(format!(
            "begin {i} {} {redo}",
            String::from_utf8_lossy(&e.name)
        ));
        self.data.clear();
        Ok(())
    }
    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.data.extend_from_slice(bytes);
        Ok(())
    }
    fn end(&mut self, ok: bool) -> Result<(), String> {
        self.calls
            .push(format!("end {ok} {}", String::from_utf8_lossy(&self.data)));
        Ok(())
    }
}

#[tokio::test]
async fn streaming_pull_hands_over_the_redo_too() {
    let mut p1 = one_file_list();
    let mut d = file_data(&[0x02], b"hellO", &md5_digest(b"hello"));
    d.push(0); // echo of NDX_DONE #1
    p1.extend(frame(0, &d));
    let mut d = file_data(&[0xFE, 0, 0], b"hello", &md5_digest(b"hello"));
    d.extend(ending());
    let p2 = frame(0, &d);
    let (conn, peer) = scripted_peer(31, vec![p1, p2], vec![FIRST_PASS_BYTES + 19]);
    let mut rec = Recorder::default();
    let stats = tokio::time::timeout(
        Duration::from_secs(20),
        rsync_wire::pull_stream(conn, &mut rec, &opts(), &mut |_| {}),
    )
    .await
    .expect("pull hung")
    .unwrap();
    peer.abort();
    assert_eq!(
        rec.calls,
        [
            "select 2",
            "begin 1 f false",
            "end false hellO",
            "begin 1 f true",
            "end true hello"
        ]
    );
    assert_eq!((stats.files_transferred, stats.files_redone), (1, 1));
}
