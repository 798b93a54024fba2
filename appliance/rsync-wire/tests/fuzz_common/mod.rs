#![allow(dead_code)]
//! A structure-aware mutation fuzzer for everything `rsync_wire` decodes
//! from a server, shared by `examples/fuzz_decoder.rs` (long runs, release
//! mode) and `tests/fuzz_smoke.rs` (a bounded run in CI). It needs no
//! nightly toolchain and no coverage instrumentation.
//!
//! * **Corpus**: real transcripts of `rsync --server` (push) and
//!   `rsync --server --sender` (pull, list) output, recorded through the
//!   crate's own [`rsync_wire::spawn_local`] with a tee on the reader
//!   ([`record_corpus`]), stored in `tests/fuzz-corpus/`. Each file's stem
//!   names a [`SeedConfig`] in [`CONFIGS`] (session kind, protocol, whether
//!   the destination held an older version of the tree, `--delete`), so a
//!   replay builds exactly the client state the server answered to.
//! * **Mutations** ([`mutate`]): on the de-multiplexed DATA stream (then
//!   re-framed at random boundaries, messages kept in place), on frames
//!   (headers, tags, lengths, injected or dropped messages), on the
//!   handshake, and on raw bytes: bit flips, interesting bytes, boundary
//!   int32/int64 values, varints, truncation, deletion, duplication and
//!   splicing from another seed.
//! * **Runs** ([`Harness::run`]): the mutated bytes are the server's output
//!   (delivered in random read sizes), the client's output goes to a sink,
//!   and the remote's exit status is 0. Push, pull (into a fresh
//!   `sandbox/dest`) and list run on a current-thread runtime under a
//!   per-run timeout, inside `catch_unwind`; a watchdog thread aborts the
//!   process if a run is stuck outside the runtime's control.
//! * **Findings**: a panic, a timeout, anything but `dest` in the sandbox,
//!   a temporary file left in the destination, a heap high-water mark
//!   above the limit (every run) or peak RSS (`VmHWM`, every
//!   [`RSS_EVERY`] runs) above it, or a single allocation above
//!   [`MAX_ALLOCATION`] (the heap checks need the binary to install
//!   [`TrackingAlloc`]).
//! * **Cost**: the harness itself stays cheap (one walk of the sandbox
//!   checks and cleans it, the push tree is built once, no `/proc` read
//!   per run), so most of a run's time is the session under test.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rsync_wire::{
    Connection, ContentSource, Event, FileEntry, PullOptions, PushOptions, RemoteEnd,
    RemoteOutcome, codec,
};
use tokio::io::{AsyncRead, ReadBuf};

// ---------------------------------------------------------------- seeds

/// Which client session a transcript drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// We send, the server (`rsync --server`) receives.
    Push,
    /// We receive into a directory (`rsync --server --sender`).
    Pull,
    /// List-only (`rsync --server --sender`).
    List,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Push => "push",
            Target::Pull => "pull",
            Target::List => "list",
        }
    }
}

/// How a transcript was recorded (and so how it must be replayed).
#[derive(Debug, Clone, Copy)]
pub struct SeedConfig {
    /// File stem in the corpus directory.
    pub name: &'static str,
    pub target: Target,
    /// Protocol the server was made to speak (push: `--protocol=N`; pull
    /// and list: the protocol we offered).
    pub protocol: u32,
    /// The destination held [`basis_tree`] (push: on the server; pull: ours).
    pub basis: bool,
    /// Push with `--delete` (a stale file in the destination).
    pub delete: bool,
    /// List recursively (`-r`) or one level (`-d`).
    pub recursive: bool,
}

const fn cfg(
    name: &'static str,
    target: Target,
    protocol: u32,
    basis: bool,
    delete: bool,
) -> SeedConfig {
    SeedConfig {
        name,
        target,
        protocol,
        basis,
        delete,
        recursive: true,
    }
}

/// Every transcript of the corpus.
pub const CONFIGS: &[SeedConfig] = &[
    cfg("push-p31-new", Target::Push, 31, false, false),
    cfg("push-p31-delta-delete", Target::Push, 31, true, true),
    cfg("push-p30-delta", Target::Push, 30, true, false),
    cfg("push-p29-delta-delete", Target::Push, 29, true, true),
    cfg("push-p27-delta", Target::Push, 27, true, false),
    cfg("pull-p31-new", Target::Pull, 31, false, false),
    cfg("pull-p31-basis", Target::Pull, 31, true, false),
    cfg("pull-p30-basis", Target::Pull, 30, true, false),
    cfg("pull-p29-new", Target::Pull, 29, false, false),
    cfg("pull-p27-basis", Target::Pull, 27, true, false),
    cfg("list-p31", Target::List, 31, false, false),
    SeedConfig {
        recursive: false,
        ..cfg("list-p30-one-level", Target::List, 30, false, false)
    },
    cfg("list-p28", Target::List, 28, false, false),
];

/// A loaded transcript.
#[derive(Debug, Clone)]
pub struct Seed {
    pub config: SeedConfig,
    pub bytes: Vec<u8>,
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus")
}

/// Loads every transcript named in [`CONFIGS`] that exists in `dir`.
pub fn load_corpus(dir: &Path) -> io::Result<Vec<Seed>> {
    let mut out = Vec::new();
    for c in CONFIGS {
        let p = dir.join(format!("{}.bin", c.name));
        match std::fs::read(&p) {
            Ok(bytes) => out.push(Seed { config: *c, bytes }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- the tree

const MTIME: i64 = 1_600_000_000;
const BASIS_MTIME: i64 = 1_500_000_000;

fn pseudo(n: usize, mut s: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.extend_from_slice(&(s >> 24).to_le_bytes());
    }
    v.truncate(n);
    v
}

fn text(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut i = 0;
    while v.len() < n {
        v.extend_from_slice(format!("line {i}: the quick brown fox\n").as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

/// One entry of a test tree with its content (files only).
pub type TreeEntry = (FileEntry, Vec<u8>);

/// The tree the server holds (pull, list) or we send (push).
pub fn source_tree() -> Vec<TreeEntry> {
    source_tree_ref().to_vec()
}

/// [`source_tree`], built once (a push replays it on every run).
fn source_tree_ref() -> &'static [TreeEntry] {
    static TREE: std::sync::OnceLock<Vec<TreeEntry>> = std::sync::OnceLock::new();
    TREE.get_or_init(build_source_tree)
}

fn build_source_tree() -> Vec<TreeEntry> {
    vec![
        (FileEntry::dir(".", MTIME, 0o755).with_nsec(5), Vec::new()),
        (
            FileEntry::file("a.txt", 6000, MTIME + 1, 0o644).with_nsec(123_456_789),
            text(6000),
        ),
        (FileEntry::file("empty", 0, MTIME + 2, 0o600), Vec::new()),
        (
            FileEntry::file("-dash", 3, MTIME + 3, 0o644),
            b"-x\n".to_vec(),
        ),
        (FileEntry::dir("sub", MTIME + 4, 0o750), Vec::new()),
        (
            FileEntry::file("sub/b.bin", 9000, MTIME + 5, 0o640),
            pseudo(9000, 7),
        ),
        (
            FileEntry::symlink("sub/link", "../a.txt", MTIME + 6),
            Vec::new(),
        ),
        (FileEntry::dir("sub/deeper", MTIME + 7, 0o755), Vec::new()),
        (
            FileEntry::file("sub/deeper/c", 100, MTIME + 8, 0o600),
            pseudo(100, 9),
        ),
    ]
}

/// An older version of some files: what the destination holds for the
/// `basis` configurations (all with mtime [`BASIS_MTIME`]).
pub fn basis_tree() -> Vec<(&'static str, Vec<u8>)> {
    let mut a = text(6000);
    a[3000..3010].copy_from_slice(b"##########");
    let mut b = pseudo(9000, 7);
    b.truncate(5000);
    b.extend_from_slice(&pseudo(1500, 99));
    vec![
        ("a.txt", a),
        ("sub/b.bin", b),
        ("sub/deeper/c", pseudo(100, 10)),
    ]
}

fn set_mtime(p: &Path, secs: i64, nsec: u32) -> io::Result<()> {
    let t = UNIX_EPOCH + Duration::new(secs as u64, nsec);
    std::fs::File::open(p)?.set_times(std::fs::FileTimes::new().set_modified(t))
}

/// Writes [`source_tree`] under `root` (which must not exist).
pub fn write_source_tree(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tree = source_tree();
    std::fs::create_dir_all(root)?;
    for (e, data) in &tree {
        let p = root.join(std::ffi::OsStr::from_bytes(&e.name));
        match &e.kind {
            rsync_wire::EntryKind::Dir if e.name[..] == b"."[..] => {}
            rsync_wire::EntryKind::Dir => std::fs::create_dir_all(&p)?,
            rsync_wire::EntryKind::File { .. } => std::fs::write(&p, data)?,
            rsync_wire::EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p)?
            }
        }
    }
    // Modes and times last, deepest first.
    for (e, _) in tree.iter().rev() {
        if matches!(e.kind, rsync_wire::EntryKind::Symlink { .. }) {
            continue;
        }
        let p = root.join(std::ffi::OsStr::from_bytes(&e.name));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(e.perms))?;
        set_mtime(&p, e.mtime, e.mtime_nsec)?;
    }
    Ok(())
}

/// Writes [`basis_tree`] under `root` (created if needed). Pulls of the
/// `basis` configurations call this before every run, so it makes as few
/// system calls as it can: one open per file, folders only when missing.
pub fn write_basis_tree(root: &Path) -> io::Result<()> {
    use std::io::Write;
    static BASIS: std::sync::OnceLock<Vec<(&'static str, Vec<u8>)>> = std::sync::OnceLock::new();
    let t = UNIX_EPOCH + Duration::from_secs(BASIS_MTIME as u64);
    for (name, data) in BASIS.get_or_init(basis_tree) {
        let p = root.join(name);
        let mut f = match std::fs::File::create(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(p.parent().expect("has a parent"))?;
                std::fs::File::create(&p)?
            }
            Err(e) => return Err(e),
        };
        f.write_all(data)?;
        f.set_times(std::fs::FileTimes::new().set_modified(t))?;
    }
    Ok(())
}

/// Push content from memory.
pub struct MemSource(pub HashMap<Vec<u8>, Vec<u8>>);

impl MemSource {
    pub fn new() -> Self {
        MemSource(
            source_tree_ref()
                .iter()
                .map(|(e, d)| (e.name.to_vec(), d.clone()))
                .collect(),
        )
    }
}

impl ContentSource for MemSource {
    type Reader = io::Cursor<Vec<u8>>;
    async fn open(&mut self, _: usize, e: &FileEntry) -> io::Result<Self::Reader> {
        match self.0.get(&e.name[..]) {
            Some(d) => Ok(io::Cursor::new(d.clone())),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }
}

pub fn push_options(c: &SeedConfig) -> PushOptions {
    let mut o = PushOptions {
        root_mtime: Some(MTIME),
        exit_grace: Duration::from_secs(1),
        ..PushOptions::default()
    };
    o.server.delete = c.delete;
    o
}

pub fn pull_options(c: &SeedConfig) -> PullOptions {
    let mut o = PullOptions {
        protocol: c.protocol,
        exit_grace: Duration::from_secs(1),
        ..PullOptions::default()
    };
    o.sender.recursive = c.recursive;
    o
}

fn push_files() -> Vec<FileEntry> {
    source_tree_ref().iter().map(|(e, _)| e.clone()).collect()
}

// ---------------------------------------------------------------- recording

/// A reader that keeps a copy of everything read through it.
pub struct Tee<R> {
    inner: R,
    log: Arc<Mutex<Vec<u8>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tee<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = buf.filled()[before..].to_vec();
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&new);
        }
        r
    }
}

/// Records every transcript of [`CONFIGS`] with the real `rsync` at
/// `rsync` into `out_dir`. Returns (name, bytes) per transcript.
pub async fn record_corpus(rsync: &std::ffi::OsStr, out_dir: &Path) -> Vec<(String, usize)> {
    std::fs::create_dir_all(out_dir).expect("corpus dir");
    let mut done = Vec::new();
    for c in CONFIGS {
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        write_source_tree(&src).expect("source tree");
        let dest = t.path().join("dest");
        std::fs::create_dir(&dest).expect("dest");
        if c.basis {
            write_basis_tree(&dest).expect("basis");
        }
        if c.delete {
            std::fs::write(dest.join("stale"), b"old").expect("stale");
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let res = match c.target {
            Target::Push => {
                let mut o = push_options(c);
                o.exit_grace = Duration::from_secs(10);
                o.server.extra = vec![format!("--protocol={}", c.protocol).into()];
                let argv = rsync_wire::args::server_args(&o.server, dest.as_os_str().as_bytes())
                    .expect("args");
                let conn = rsync_wire::spawn_local(rsync, &argv).expect("spawn");
                let conn = Connection {
                    reader: Tee {
                        inner: conn.reader,
                        log: log.clone(),
                    },
                    writer: conn.writer,
                    remote: conn.remote,
                };
                rsync_wire::push(conn, push_files(), &mut MemSource::new(), &o, &mut |_| {})
                    .await
                    .map(|s| format!("{s:?}"))
            }
            Target::Pull | Target::List => {
                let mut o = pull_options(c);
                o.exit_grace = Duration::from_secs(10);
                let mut path = src.as_os_str().as_bytes().to_vec();
                path.push(b'/');
                let argv = rsync_wire::args::sender_args(&o.sender, &[&path]).expect("args");
                let conn = rsync_wire::spawn_local(rsync, &argv).expect("spawn");
                let conn = Connection {
                    reader: Tee {
                        inner: conn.reader,
                        log: log.clone(),
                    },
                    writer: conn.writer,
                    remote: conn.remote,
                };
                if c.target == Target::Pull {
                    rsync_wire::pull(conn, &dest, &o, &mut |_| {})
                        .await
                        .map(|s| format!("{s:?}"))
                } else {
                    rsync_wire::list(conn, &o, &mut |_| {})
                        .await
                        .map(|l| format!("{} entries", l.len()))
                }
            }
        };
        if let Err(e) = res {
            panic!("recording {}: {e}", c.name);
        }
        let bytes = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(bytes.len() < 64 * 1024, "{} is too big", c.name);
        std::fs::write(out_dir.join(format!("{}.bin", c.name)), &bytes).expect("write seed");
        done.push((c.name.to_string(), bytes.len()));
    }
    done
}

// ---------------------------------------------------------------- mutation

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The generator of iteration `i` of a run with `seed`.
    pub fn for_iteration(seed: u64, i: u64) -> Self {
        let mut r = Rng(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }

    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

/// Largest mutated input.
pub const MAX_INPUT: usize = 256 * 1024;

const INTERESTING_U8: &[u8] = &[0x00, 0x01, 0x7F, 0x80, 0x81, 0xFE, 0xFF, 0x20, 0x2E, 0x2F];
const INTERESTING_I32: &[i32] = &[
    0,
    1,
    -1,
    -2,
    -3,
    -101,
    2,
    16,
    255,
    256,
    4095,
    4096,
    32767,
    32768,
    65535,
    65536,
    1 << 20,
    (1 << 22) - 1,
    1 << 22,
    0x7F_FFFF,
    0xFF_FFFF,
    0x100_0000,
    1 << 29,
    i32::MAX,
    i32::MIN,
    i32::MIN + 1,
    0o100644,
    0o040755,
    0o120777,
    0o020644,
    0o140644,
];
const INTERESTING_I64: &[i64] = &[
    0,
    -1,
    i64::MAX,
    i64::MIN,
    i64::MIN + 1,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 62,
    253_402_300_800,
    -62_135_596_800,
    u32::MAX as i64,
];

fn rand_pos(r: &mut Rng, len: usize) -> usize {
    if len == 0 { 0 } else { r.below(len + 1) }
}

/// One byte-level mutation of `v` (splicing from `donor`).
pub fn mutate_bytes(v: &mut Vec<u8>, r: &mut Rng, donor: &[u8]) {
    let len = v.len();
    match r.below(14) {
        // Bit flip.
        0 if len > 0 => {
            let i = r.below(len);
            v[i] ^= 1 << r.below(8);
        }
        // Interesting byte.
        1 if len > 0 => {
            let i = r.below(len);
            v[i] = r.pick(INTERESTING_U8);
        }
        // Random byte.
        2 if len > 0 => {
            let i = r.below(len);
            v[i] = r.next() as u8;
        }
        // Small arithmetic on a byte.
        3 if len > 0 => {
            let i = r.below(len);
            let d = (r.below(33) as i32 - 16) as u8;
            v[i] = v[i].wrapping_add(d);
        }
        // Boundary int32 (little endian) overwrite.
        4 if len >= 4 => {
            let i = r.below(len - 3);
            let x = r.pick(INTERESTING_I32);
            v[i..i + 4].copy_from_slice(&x.to_le_bytes());
        }
        // Arithmetic on an int32.
        5 if len >= 4 => {
            let i = r.below(len - 3);
            let x = i32::from_le_bytes(v[i..i + 4].try_into().expect("4"));
            let d = r.below(65) as i32 - 32;
            v[i..i + 4].copy_from_slice(&x.wrapping_add(d).to_le_bytes());
        }
        // Boundary int64 overwrite.
        6 if len >= 8 => {
            let i = r.below(len - 7);
            let x = r.pick(INTERESTING_I64);
            v[i..i + 8].copy_from_slice(&x.to_le_bytes());
        }
        // Insert an encoded varint / varlong of a boundary value.
        7 => {
            let mut e = Vec::new();
            match r.below(3) {
                0 => codec::put_varint(&mut e, r.pick(INTERESTING_I32)),
                1 => codec::put_varlong(&mut e, r.pick(INTERESTING_I64), 3),
                _ => codec::put_varlong(&mut e, r.pick(INTERESTING_I64), 4),
            }
            let at = rand_pos(r, len);
            if r.chance(1, 2) && at + e.len() <= len {
                v[at..at + e.len()].copy_from_slice(&e);
            } else {
                v.splice(at..at, e);
            }
        }
        // Truncate.
        8 if len > 0 => {
            let at = r.below(len);
            v.truncate(at);
        }
        // Delete a range.
        9 if len > 0 => {
            let a = r.below(len);
            let n = 1 + r.below((len - a).min(64));
            v.drain(a..a + n);
        }
        // Duplicate a range somewhere else.
        10 if len > 0 => {
            let a = r.below(len);
            let n = 1 + r.below((len - a).min(256));
            let chunk = v[a..a + n].to_vec();
            let at = rand_pos(r, len);
            v.splice(at..at, chunk);
        }
        // Splice a range of another transcript.
        11 if !donor.is_empty() => {
            let a = r.below(donor.len());
            let n = 1 + r.below((donor.len() - a).min(512));
            let at = rand_pos(r, len);
            if r.chance(1, 2) {
                let end = (at + n).min(len);
                v.splice(at..end, donor[a..a + n].iter().copied());
            } else {
                v.splice(at..at, donor[a..a + n].iter().copied());
            }
        }
        // Insert random bytes.
        12 => {
            let n = 1 + r.below(16);
            let at = rand_pos(r, len);
            let bytes: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
            v.splice(at..at, bytes);
        }
        // Swap two bytes / fill a range with one value.
        _ if len > 1 => {
            let a = r.below(len);
            let n = 1 + r.below((len - a).min(32));
            let b = r.pick(INTERESTING_U8);
            v[a..a + n].fill(b);
        }
        _ => {
            v.push(r.next() as u8);
        }
    }
}

/// Where the handshake ends in a transcript (the multiplexed frames start
/// there), for a client offering `offered`.
pub fn handshake_len(t: &[u8], offered: u32) -> Option<usize> {
    let raw = u32::from_le_bytes(t.get(..4)?.try_into().ok()?);
    let proto = raw.min(offered);
    if proto < 30 {
        return Some(8.min(t.len()));
    }
    let first = *t.get(4)?;
    let n = codec::extra_bytes(first);
    if n > 4 {
        return None;
    }
    let flags = codec::finish_varint(first, t.get(5..5 + n)?).ok()?;
    let mut pos = 5 + n;
    if flags & 0x80 != 0 {
        let mut len = usize::from(*t.get(pos)?);
        pos += 1;
        if len & 0x80 != 0 {
            len = ((len & 0x7F) << 8) | usize::from(*t.get(pos)?);
            pos += 1;
        }
        pos += len;
    }
    pos += 4;
    (pos <= t.len()).then_some(pos)
}

/// A transcript split into handshake, frames and an unparsable tail.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub head: Vec<u8>,
    /// (tag, payload).
    pub frames: Vec<(u8, Vec<u8>)>,
    pub tail: Vec<u8>,
}

pub fn parse(t: &[u8], offered: u32) -> Option<Parsed> {
    let hl = handshake_len(t, offered)?;
    let mut frames = Vec::new();
    let mut pos = hl;
    while pos + 4 <= t.len() {
        let h = u32::from_le_bytes(t[pos..pos + 4].try_into().expect("4"));
        let len = (h & 0xFF_FFFF) as usize;
        let tag = (h >> 24).wrapping_sub(7);
        if tag > 0xFF || pos + 4 + len > t.len() {
            break;
        }
        frames.push((tag as u8, t[pos + 4..pos + 4 + len].to_vec()));
        pos += 4 + len;
    }
    Some(Parsed {
        head: t[..hl].to_vec(),
        frames,
        tail: t[pos..].to_vec(),
    })
}

fn put_frame(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    let h = ((7 + u32::from(tag)) << 24) | (payload.len() as u32 & 0xFF_FFFF);
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(payload);
}

impl Parsed {
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        for (t, p) in &self.frames {
            put_frame(&mut out, *t, p);
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

const KNOWN_TAGS: &[u8] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 22, 33, 42, 86, 100, 101, 102,
];

fn random_message(r: &mut Rng) -> (u8, Vec<u8>) {
    let tag = r.pick(&[
        1u8, 2, 3, 4, 6, 7, 8, 9, 10, 22, 33, 42, 86, 100, 101, 102, 0,
    ]);
    let payload = match tag {
        0 | 42 if r.chance(1, 2) => Vec::new(),
        22 | 33 | 86 | 100 | 102 | 9 | 10 => {
            let mut p = r.pick(INTERESTING_I32).to_le_bytes().to_vec();
            if r.chance(1, 4) {
                p.truncate(r.below(4));
            } else if r.chance(1, 8) {
                p.extend((0..r.below(8)).map(|_| r.next() as u8));
            }
            p
        }
        101 => match r.below(4) {
            0 => b"gone\0".to_vec(),
            1 => b"../../etc/passwd\0".to_vec(),
            2 => Vec::new(),
            _ => vec![0xFF; 1 + r.below(300)],
        },
        _ => match r.below(4) {
            0 => b"rsync: some error\n".to_vec(),
            1 => Vec::new(),
            2 => vec![0xC3; 1 + r.below(200)],
            _ => (0..r.below(64)).map(|_| r.next() as u8).collect(),
        },
    };
    (tag, payload)
}

/// De-multiplexes, mutates the DATA stream, re-frames at random boundaries
/// keeping the other messages at their stream positions.
fn mutate_stream(p: &mut Parsed, r: &mut Rng, donor: &[u8]) {
    let mut stream = Vec::new();
    let mut msgs: Vec<(usize, u8, Vec<u8>)> = Vec::new();
    for (t, pl) in p.frames.drain(..) {
        if t == 0 {
            stream.extend_from_slice(&pl);
        } else {
            msgs.push((stream.len(), t, pl));
        }
    }
    let old_len = stream.len().max(1);
    let rounds = 1 + if r.chance(1, 3) { r.below(4) } else { 0 };
    for _ in 0..rounds {
        // Aim at the start (file list, first requests) or the end
        // (statistics, goodbyes) of the stream as often as anywhere.
        let len = stream.len();
        let (a, b) = match r.below(4) {
            0 if len > 64 => (0, (64 + r.below(1024)).min(len)),
            1 if len > 64 => (len - (16 + r.below(48)), len),
            _ => (0, len),
        };
        if (a, b) == (0, len) {
            mutate_bytes(&mut stream, r, donor);
        } else {
            let tail = stream.split_off(b);
            let mut window = stream.split_off(a);
            mutate_bytes(&mut window, r, donor);
            stream.extend_from_slice(&window);
            stream.extend_from_slice(&tail);
        }
    }
    // Keep message positions proportional if the stream changed size.
    let scale = |off: usize| off * stream.len() / old_len;
    let max_chunk = match r.below(4) {
        0 => 1 + r.below(8),
        1 => 1 + r.below(512),
        _ => 0x7FFF,
    };
    let mut pos = 0;
    let mut mi = 0;
    loop {
        while mi < msgs.len() && scale(msgs[mi].0) <= pos {
            let (_, t, pl) = std::mem::take(&mut msgs[mi]);
            p.frames.push((t, pl));
            mi += 1;
        }
        if pos >= stream.len() {
            break;
        }
        let mut end = (pos + 1 + r.below(max_chunk)).min(stream.len());
        if mi < msgs.len() {
            end = end.min(scale(msgs[mi].0).max(pos + 1));
        }
        p.frames.push((0, stream[pos..end].to_vec()));
        pos = end;
    }
    for m in msgs.drain(mi..) {
        p.frames.push((m.1, m.2));
    }
}

fn mutate_frames(p: &mut Parsed, r: &mut Rng) -> Option<Vec<u8>> {
    let n = p.frames.len();
    match r.below(7) {
        // Insert a message.
        0 => {
            let at = rand_pos(r, n);
            let m = random_message(r);
            p.frames.insert(at, m);
        }
        // Drop a frame.
        1 if n > 0 => {
            p.frames.remove(r.below(n));
        }
        // Duplicate a frame.
        2 if n > 0 => {
            let f = p.frames[r.below(n)].clone();
            let at = rand_pos(r, n);
            p.frames.insert(at, f);
        }
        // Change a frame's tag.
        3 if n > 0 => {
            let i = r.below(n);
            p.frames[i].0 = if r.chance(3, 4) {
                r.pick(KNOWN_TAGS)
            } else {
                r.next() as u8
            };
        }
        // Split a DATA frame (semantically neutral).
        4 if n > 0 => {
            let i = r.below(n);
            if p.frames[i].0 == 0 && p.frames[i].1.len() > 1 {
                let at = 1 + r.below(p.frames[i].1.len() - 1);
                let rest = p.frames[i].1.split_off(at);
                p.frames.insert(i + 1, (0, rest));
            }
        }
        // Corrupt a header in the serialized form (length or raw tag).
        _ if n > 0 => {
            let i = r.below(n);
            let mut before = p.head.clone();
            for (t, pl) in &p.frames[..i] {
                put_frame(&mut before, *t, pl);
            }
            let hpos = before.len();
            let mut out = p.serialize();
            let h = u32::from_le_bytes(out[hpos..hpos + 4].try_into().expect("4"));
            let (tag, len) = (h >> 24, h & 0xFF_FFFF);
            let new = match r.below(6) {
                0 => (tag << 24) | 0xFF_FFFF,
                1 => (tag << 24) | len.wrapping_add(1 + r.below(8) as u32) & 0xFF_FFFF,
                2 => (tag << 24) | len.saturating_sub(1 + r.below(8) as u32),
                3 => (tag << 24) | ((1 << 20) + 1),
                4 => (r.next() as u32 & 0xFF00_0000) | len,
                _ => r.next() as u32,
            };
            out[hpos..hpos + 4].copy_from_slice(&new.to_le_bytes());
            return Some(out);
        }
        _ => {
            p.frames.push(random_message(r));
        }
    }
    None
}

fn mutate_head(head: &mut Vec<u8>, r: &mut Rng, donor: &[u8]) {
    match r.below(4) {
        0 if head.len() >= 4 => {
            let v: i32 = r.pick(&[0, 20, 26, 27, 28, 29, 30, 31, 32, 40, 41, -1, 0x1F]);
            head[..4].copy_from_slice(&v.to_le_bytes());
        }
        1 if head.len() >= 8 => {
            // The seed (last 4 bytes).
            let n = head.len();
            head[n - 4..].copy_from_slice(&r.pick(INTERESTING_I32).to_le_bytes());
        }
        2 if head.len() > 4 => {
            // Compat flags / checksum list.
            let mut rest = head.split_off(4);
            let mut e = Vec::new();
            codec::put_varint(&mut e, r.pick(&[0, 1, 0x80, 0xA0, 0x1FE, 0x1FF, -1, 0x7F]));
            if r.chance(1, 2) {
                let list: &[u8] = r.pick(&[
                    &b"md5"[..],
                    b"md4",
                    b"xxh128 xxh3 xxh64 md5 md4 none",
                    b"none",
                    b"",
                    b"\xFF\xFE md5",
                ]);
                codec::put_vstring(&mut e, list).expect("short");
                e.extend_from_slice(&r.pick(INTERESTING_I32).to_le_bytes());
                rest.clear();
            } else {
                let k = rest.len().min(e.len());
                rest.drain(..k);
            }
            head.extend_from_slice(&e);
            head.extend_from_slice(&rest);
        }
        _ => mutate_bytes(head, r, donor),
    }
}

/// Produces one mutated input from `seed`, splicing from `donor`.
pub fn mutate(seed: &[u8], offered: u32, r: &mut Rng, donor: &[u8]) -> Vec<u8> {
    let mut out = match parse(seed, offered) {
        Some(mut p) => {
            let rounds = 1 + if r.chance(1, 4) { r.below(3) } else { 0 };
            let mut raw = None;
            for _ in 0..rounds {
                if raw.is_some() {
                    break;
                }
                match r.below(20) {
                    0..=11 => mutate_stream(&mut p, r, donor),
                    12..=15 => raw = mutate_frames(&mut p, r),
                    16 | 17 => mutate_head(&mut p.head, r, donor),
                    _ => {
                        let mut v = p.serialize();
                        mutate_bytes(&mut v, r, donor);
                        raw = Some(v);
                    }
                }
            }
            raw.unwrap_or_else(|| p.serialize())
        }
        None => {
            let mut v = seed.to_vec();
            mutate_bytes(&mut v, r, donor);
            v
        }
    };
    out.truncate(MAX_INPUT);
    out
}

// ---------------------------------------------------------------- running

/// The remote's status channel of a replay: exited with 0.
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

/// The server's output from memory, at most `max` bytes per read.
pub struct ChunkedReader {
    data: Vec<u8>,
    pos: usize,
    max: usize,
}

impl AsyncRead for ChunkedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = (self.data.len() - self.pos)
            .min(self.max)
            .min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// A global allocator that remembers the largest single request made on
/// each thread since [`TrackingAlloc::reset`] (declare it with
/// `#[global_allocator]` in the binary using the harness). Catches an
/// allocation sized by a value the peer claimed before the data arrived,
/// which `VmHWM` misses while the pages stay untouched. It also counts the
/// bytes live on the heap (all threads) and their peak since the last
/// reset, so every run's heap high-water mark is checked without reading
/// `/proc`.
pub struct TrackingAlloc;

thread_local! {
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

static TRACKING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK_LIVE: AtomicUsize = AtomicUsize::new(0);

impl TrackingAlloc {
    /// Starts tracking (from the first call on), clears this thread's
    /// maximum and restarts the heap peak from what is live now.
    pub fn reset() {
        TRACKING.store(true, Ordering::Relaxed);
        let _ = LARGEST.try_with(|c| c.set(0));
        PEAK_LIVE.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Largest request on this thread since [`TrackingAlloc::reset`].
    pub fn largest() -> usize {
        LARGEST.try_with(|c| c.get()).unwrap_or(0)
    }

    /// Most bytes live on the heap at once since [`TrackingAlloc::reset`]
    /// (0 when the binary does not install the allocator).
    pub fn peak_live() -> usize {
        PEAK_LIVE.load(Ordering::Relaxed)
    }

    fn note(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        if TRACKING.load(Ordering::Relaxed) {
            PEAK_LIVE.fetch_max(live, Ordering::Relaxed);
            let _ = LARGEST.try_with(|c| {
                if size > c.get() {
                    c.set(size);
                }
            });
        }
    }

    fn freed(size: usize) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.alloc(l) };
        if !p.is_null() {
            Self::note(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: std::alloc::Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { std::alloc::System.alloc_zeroed(l) };
        if !p.is_null() {
            Self::note(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        Self::freed(l.size());
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let q = unsafe { std::alloc::System.realloc(p, l, new) };
        if !q.is_null() {
            Self::freed(l.size());
            Self::note(new);
        }
        q
    }
}

/// Largest single allocation a run may make (the biggest legitimate ones
/// are the 1 MiB message buffer and 64 KiB I/O buffers).
pub const MAX_ALLOCATION: usize = 16 << 20;

/// Peak resident set size of this process in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Per-target counters.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub runs: u64,
    /// Sessions that ended with `Ok`.
    pub ok: u64,
    pub time: Duration,
}

/// Something the fuzzer must report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: String,
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

static HOOK: std::sync::Once = std::sync::Once::new();

fn install_panic_hook() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = format!("{info}");
            let bt = std::backtrace::Backtrace::force_capture();
            let caught = LAST_PANIC.with(|p| {
                let mut p = p.borrow_mut();
                if p.is_some() {
                    // Armed by `Harness::run`: keep it for the report.
                    *p = Some(format!("{msg}\n{bt}"));
                    true
                } else {
                    false
                }
            });
            if !caught {
                prev(info);
            }
        }));
    });
}

/// Runs sessions over in-memory transcripts and checks the invariants.
pub struct Harness {
    work: tempfile::TempDir,
    sandbox: PathBuf,
    rt: tokio::runtime::Runtime,
    pub timeout: Duration,
    pub max_rss_kib: u64,
    pub counts: HashMap<Target, Counts>,
    /// Watchdog: start of the current run (ms since the epoch, 0 = idle).
    run_started: Arc<AtomicU64>,
    run_label: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    pid: String,
    /// Runs so far (for the periodic `VmHWM` check).
    runs: u64,
}

/// `VmHWM` is read every this many runs (and after any finding).
pub const RSS_EVERY: u64 = 64;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

impl Harness {
    /// `timeout`: per-run limit; the watchdog aborts the process after
    /// three times that (a run stuck where the runtime cannot time it out).
    pub fn new(timeout: Duration, max_rss_kib: u64) -> Self {
        install_panic_hook();
        let base = if Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("offsite-rsync-fuzz")
                .tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        };
        let work = base.or_else(|_| tempfile::tempdir()).expect("work dir");
        let sandbox = work.path().join("sandbox");
        std::fs::create_dir(&sandbox).expect("sandbox");
        let run_started = Arc::new(AtomicU64::new(0));
        let run_label = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (started, label, stop) = (run_started.clone(), run_label.clone(), stop.clone());
            let hard = (timeout.as_millis() as u64) * 3 + 2000;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let s = started.load(Ordering::Relaxed);
                    if s != 0 && now_ms().saturating_sub(s) > hard {
                        let l = label.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        eprintln!(
                            "FINDING (hang, not interruptible by the runtime): {l} ran for more than {hard} ms; aborting"
                        );
                        std::process::exit(3);
                    }
                }
            });
        }
        Harness {
            work,
            sandbox,
            rt: runtime(),
            timeout,
            max_rss_kib,
            counts: HashMap::new(),
            run_started,
            run_label,
            stop,
            pid: std::process::id().to_string(),
            runs: 0,
        }
    }

    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Runs `input` as the server's output of a `target` session configured
    /// like `cfg`, reading at most `chunk` bytes at a time. `label` names
    /// the run for the watchdog. Returns whether the session ended `Ok`.
    pub fn run(
        &mut self,
        target: Target,
        cfg: &SeedConfig,
        input: Vec<u8>,
        chunk: usize,
        label: &str,
    ) -> Result<bool, Finding> {
        let dest = self.sandbox.join("dest");
        if target == Target::Pull && cfg.basis {
            write_basis_tree(&dest).map_err(|e| Finding {
                what: format!("harness: writing the basis: {e}"),
            })?;
        }
        *self.run_label.lock().unwrap_or_else(|p| p.into_inner()) = label.to_string();
        let conn = Connection {
            reader: ChunkedReader {
                data: input,
                pos: 0,
                max: chunk.max(1),
            },
            writer: tokio::io::sink(),
            remote: Box::new(FakeRemote) as Box<dyn RemoteEnd>,
        };
        let timeout = self.timeout;
        let cfg = *cfg;
        let t0 = Instant::now();
        self.run_started.store(now_ms(), Ordering::Relaxed);
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(String::from("(no message)")));
        TrackingAlloc::reset();
        let rt = &self.rt;
        let d2 = dest.clone();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async move {
                let mut events = |_: Event<'_>| {};
                let fut: Pin<Box<dyn Future<Output = bool>>> = match target {
                    Target::Push => Box::pin(async move {
                        let o = push_options(&cfg);
                        rsync_wire::push(conn, push_files(), &mut MemSource::new(), &o, &mut events)
                            .await
                            .is_ok()
                    }),
                    Target::Pull => Box::pin(async move {
                        let o = pull_options(&cfg);
                        rsync_wire::pull(conn, &d2, &o, &mut events).await.is_ok()
                    }),
                    Target::List => Box::pin(async move {
                        let o = pull_options(&cfg);
                        rsync_wire::list(conn, &o, &mut events).await.is_ok()
                    }),
                };
                tokio::time::timeout(timeout, fut).await
            })
        }));
        self.run_started.store(0, Ordering::Relaxed);
        let largest = TrackingAlloc::largest();
        let panic_msg = LAST_PANIC.with(|p| p.borrow_mut().take());
        let elapsed = t0.elapsed();
        let c = self.counts.entry(target).or_default();
        c.runs += 1;
        c.time += elapsed;
        let mut finding = None;
        let ok = match res {
            Ok(Ok(ok)) => ok,
            Ok(Err(_)) => {
                finding = Some(format!("hang: no result after {timeout:?}"));
                false
            }
            Err(_) => {
                // The runtime may be in a bad state after a panic.
                self.rt = runtime();
                finding = Some(format!(
                    "panic: {}",
                    panic_msg.unwrap_or_else(|| "(no message)".into())
                ));
                false
            }
        };
        if ok {
            c.ok += 1;
        }
        // One walk of the sandbox checks and cleans it for the next run:
        // nothing but `dest` next to the destination (and that only for a
        // pull), no temporary file of ours anywhere in it.
        let (stray, temp) = check_and_clean(&self.sandbox, target == Target::Pull, &self.pid);
        if finding.is_none()
            && let Some(bad) = stray
        {
            finding = Some(format!("write outside the destination: {bad:?}"));
        }
        if finding.is_none()
            && let Some(t) = temp
        {
            finding = Some(format!("temporary file left behind: {t}"));
        }
        if finding.is_none() && largest > MAX_ALLOCATION {
            finding = Some(format!(
                "allocation of {largest} bytes (limit {MAX_ALLOCATION})"
            ));
        }
        // The heap's high-water mark of this run, every run; the process's
        // (`VmHWM`, which also sees stacks and untracked memory) every
        // `RSS_EVERY` runs and after any finding, as reading `/proc` costs
        // more than many runs do.
        let heap = TrackingAlloc::peak_live() as u64 / 1024;
        if finding.is_none() && heap > self.max_rss_kib {
            finding = Some(format!(
                "heap peak {heap} KiB above the limit of {} KiB",
                self.max_rss_kib
            ));
        }
        self.runs += 1;
        if finding.is_some() || self.runs.is_multiple_of(RSS_EVERY) {
            let rss = peak_rss_kib();
            if finding.is_none() && rss > self.max_rss_kib {
                finding = Some(format!(
                    "peak RSS {rss} KiB above the limit of {} KiB (checked every {RSS_EVERY} runs)",
                    self.max_rss_kib
                ));
            }
        }
        match finding {
            Some(what) => Err(Finding { what }),
            None => Ok(ok),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether `name` is a temporary file of process `pid` (`.NAME.PID.N`).
fn is_temp_name(name: &[u8], pid: &str) -> bool {
    let marker = format!(".{pid}.");
    name.first() == Some(&b'.')
        && name
            .windows(marker.len())
            .rposition(|w| w == marker.as_bytes())
            .is_some_and(|i| {
                i + marker.len() < name.len()
                    && name[i + marker.len()..].iter().all(u8::is_ascii_digit)
            })
}

/// Empties the sandbox `dir` and reports what should not have been there:
/// the first entry other than `dest` (allowed only when `dest_allowed`),
/// and the first temporary file of process `pid` anywhere under `dest`.
fn check_and_clean(dir: &Path, dest_allowed: bool, pid: &str) -> (Option<String>, Option<String>) {
    let mut stray = None;
    let mut temp = None;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return (stray, temp);
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let is_dest = dest_allowed && name.as_bytes() == b"dest";
        if !is_dest && stray.is_none() {
            stray = Some(name.to_string_lossy().into_owned());
        }
        remove_entry(&e, if is_dest { Some(pid) } else { None }, &mut temp);
    }
    (stray, temp)
}

/// Removes `e` (a whole tree for a folder), noting in `temp` the first
/// temporary file of `pid` met on the way (when `pid` is given).
fn remove_entry(e: &std::fs::DirEntry, pid: Option<&str>, temp: &mut Option<String>) {
    use std::os::unix::fs::PermissionsExt;
    let p = e.path();
    if let Some(pid) = pid
        && temp.is_none()
        && is_temp_name(e.file_name().as_bytes(), pid)
    {
        *temp = Some(p.display().to_string());
    }
    if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
        let _ = std::fs::remove_file(&p);
        return;
    }
    let rd = match std::fs::read_dir(&p) {
        Ok(rd) => Ok(rd),
        Err(_) => {
            // A folder the session left without read or search permission.
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
            std::fs::read_dir(&p)
        }
    };
    if let Ok(rd) = rd {
        for c in rd.flatten() {
            remove_entry(&c, pid, temp);
        }
    }
    if std::fs::remove_dir(&p).is_err() {
        // Not empty yet: its entries could not be removed without write permission.
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(&p) {
            for c in rd.flatten() {
                remove_entry(&c, pid, temp);
            }
        }
        let _ = std::fs::remove_dir(&p);
    }
}

// ---------------------------------------------------------------- driver

/// What one iteration ran.
#[derive(Debug, Clone)]
pub struct Case {
    pub seed_index: usize,
    pub target: Target,
    pub chunk: usize,
    pub input: Vec<u8>,
}

/// Builds iteration `i` of a run with `seed` (deterministic).
pub fn make_case(corpus: &[Seed], seed: u64, i: u64) -> Case {
    let mut r = Rng::for_iteration(seed, i);
    let si = r.below(corpus.len());
    let s = &corpus[si];
    let target = match s.config.target {
        Target::Push => Target::Push,
        t => {
            if r.chance(1, 4) {
                if t == Target::Pull {
                    Target::List
                } else {
                    Target::Pull
                }
            } else {
                t
            }
        }
    };
    let donor = &corpus[r.below(corpus.len())].bytes;
    let offered = if s.config.target == Target::Push {
        31
    } else {
        s.config.protocol
    };
    let input = mutate(&s.bytes, offered, &mut r, donor);
    let chunk = match r.below(8) {
        0 => 1,
        1 => 1 + r.below(16),
        2 => 4096,
        _ => usize::MAX,
    };
    Case {
        seed_index: si,
        target,
        chunk,
        input,
    }
}

/// Result of [`fuzz`].
#[derive(Debug, Default)]
pub struct Report {
    pub iterations: u64,
    /// (iteration, seed name, target, finding, input).
    pub findings: Vec<(u64, String, Target, Finding, Vec<u8>)>,
    pub elapsed: Duration,
}

/// Replays every seed unmutated; returns the names that did not end `Ok`.
pub fn replay_seeds(h: &mut Harness, corpus: &[Seed]) -> Vec<String> {
    let mut bad = Vec::new();
    for s in corpus {
        let label = format!("replay of {}", s.config.name);
        match h.run(
            s.config.target,
            &s.config,
            s.bytes.clone(),
            usize::MAX,
            &label,
        ) {
            Ok(true) => {}
            Ok(false) => bad.push(format!("{}: session failed", s.config.name)),
            Err(f) => bad.push(format!("{}: {}", s.config.name, f.what)),
        }
    }
    bad
}

/// Runs iterations `0..` until `max_iterations` ran, `deadline` passed
/// or `max_findings` were found.
pub fn fuzz(
    h: &mut Harness,
    corpus: &[Seed],
    seed: u64,
    max_iterations: u64,
    deadline: Option<Instant>,
    max_findings: usize,
    progress: &mut dyn FnMut(u64, &Harness),
) -> Report {
    let t0 = Instant::now();
    let mut rep = Report::default();
    let mut i = 0;
    while rep.iterations < max_iterations && rep.findings.len() < max_findings {
        if let Some(d) = deadline
            && rep.iterations.is_multiple_of(16)
            && Instant::now() >= d
        {
            break;
        }
        let case = make_case(corpus, seed, i);
        let s = &corpus[case.seed_index];
        let label = format!(
            "seed {seed:#x} iteration {i} ({} on {})",
            case.target.name(),
            s.config.name
        );
        if let Err(f) = h.run(
            case.target,
            &s.config,
            case.input.clone(),
            case.chunk,
            &label,
        ) {
            rep.findings.push((
                i,
                s.config.name.to_string(),
                case.target,
                f,
                case.input.clone(),
            ));
        }
        rep.iterations += 1;
        i += 1;
        if rep.iterations.is_multiple_of(1000) {
            progress(rep.iterations, h);
        }
    }
    rep.elapsed = t0.elapsed();
    rep
}
