//! File contents as the rsync sender asks for them: read from the share, sealed on the fly (encrypted
//! shares) or passed through (plain shares), hashed for the manifest, and checked against what was
//! announced in the file list.
//!
//! Reading and sealing run on a blocking thread; the bytes reach the protocol task through a small bounded
//! channel, so sealing and the rsync delta run on two cores at once and memory stays at a few chunks per
//! file, whatever its size. Small files are read and sealed in one blocking call (a thread round trip per
//! small read would dominate).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rsync_wire::FileEntry;
use seal::{Keys, RelPath, SealOptions, Sealer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::walk::Stat;

/// Threads sealing the chunks of one large file: the reading thread and `SEAL_THREADS - 1` workers.
const SEAL_THREADS: usize = 2;

/// Files up to this size are produced in one blocking call.
const SMALL: u64 = 256 * 1024;
/// Size of the pieces sent through the channel, and how many may wait in it.
const PIECE: usize = 64 * 1024;
const QUEUE: usize = 4;

/// Where one entry's content comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Folders and symlinks sent as links: no content.
    None,
    /// Bytes already in memory (long-name side files, sealed symlink targets).
    Inline(Arc<[u8]>),
    /// A file of the share (boxed: most entries of a night are unchanged files or folders, and a
    /// batch holds thousands of slots).
    File(Box<FileSpec>),
    /// A share file whose index record matches what the walk saw: its entry announces the recorded size
    /// and time, and the receiver links it from the previous snapshot without asking for its content.
    /// Its [`FileSpec`] is made from the walk's entry only if it is asked for all the same (see
    /// [`Sources`]): most are never read, and a path per file was a tenth of an unchanged night's
    /// memory per entry.
    Unchanged,
    /// A share file that kept changing while it was read: its entry stands for the version the previous
    /// snapshot holds (that version's size and time), which the receiver links from there. There is no
    /// content to send: if the receiver asks for it all the same, the file fails.
    Previous,
}

/// A share file to read, and how.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: PathBuf,
    /// What the walk saw: the file must still look like this when it is read.
    pub stat: Stat,
    /// For sealed content, where in `path` the identity it is sealed under starts (its path relative to
    /// the share; see [`FileSpec::sealed_as`]). An offset, not a copy: most files of a night are never
    /// read.
    pub sealed_from: Option<usize>,
    /// The size announced in the file list.
    pub remote_size: RemoteSize,
}

impl FileSpec {
    /// A share file at `root`/`rel`, sealed under `rel` when `sealed`.
    pub fn in_share(
        root: &Path,
        rel: &[u8],
        sealed: bool,
        stat: Stat,
        remote_size: RemoteSize,
    ) -> Self {
        // At its final size at once (`Path::join` grows a copy of the root: a reallocation per file).
        let mut path = PathBuf::with_capacity(root.as_os_str().len() + 1 + rel.len());
        path.push(root);
        path.push(OsStr::from_bytes(rel));
        let sealed_from = sealed.then(|| path.as_os_str().len() - rel.len());
        FileSpec {
            path,
            stat,
            sealed_from,
            remote_size,
        }
    }

    /// Whether the content is sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealed_from.is_some()
    }

    /// The identity sealed content is sealed under; `None` for plain content.
    pub fn sealed_as(&self) -> Option<io::Result<RelPath>> {
        let from = self.sealed_from?;
        let rel = self
            .path
            .as_os_str()
            .as_bytes()
            .get(from..)
            .unwrap_or_default();
        Some(
            RelPath::new(rel)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
        )
    }
}

/// The size a file's entry announces in the rsync file list.
///
/// A stock receiver writes what the data stream carries, whatever the list said (`receive_data` in
/// rsync's `receiver.c` has no length check; rsync's own sender sends a file that grew or shrank since the
/// list was made as it is then): the list's size matters to the receiver's quick check (size and mtime)
/// against the previous snapshot's copy, and to nothing else. So a sealed file whose copy cannot pass that
/// check may announce an upper bound and be read and sealed once, while it is sent; its real size is
/// learned then, and is what the index and the manifest record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteSize {
    /// Not known yet: the batch's sizing step learns it.
    Unknown,
    /// The content's size, to the byte (plain files; sealed files from the index or a sizing pass).
    Exact(u64),
    /// At most this ([`seal::sealed_len_bound`] of the plain size).
    AtMost(u64),
}

impl RemoteSize {
    /// The size to put in the file list.
    pub fn announced(self) -> u64 {
        match self {
            RemoteSize::Unknown => u64::MAX,
            RemoteSize::Exact(n) | RemoteSize::AtMost(n) => n,
        }
    }
}

/// What happened to one entry's content.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What was produced: its length, and its trailer MAC (sealed) or BLAKE3 (plain).
    pub produced: Option<(u64, [u8; 32])>,
    /// The last attempt failed, with this reason.
    pub error: Option<String>,
}

/// What happened to a batch's entries' content, by slot: only the entries whose content was asked for
/// have one (an unchanged night asks for none; a slot each was 72 bytes an entry).
#[derive(Debug, Clone, Default)]
pub struct Outcomes(std::collections::HashMap<usize, Outcome>);

/// The outcome of a slot whose content nobody asked for.
static NO_OUTCOME: Outcome = Outcome {
    produced: None,
    error: None,
};

impl std::ops::Index<usize> for Outcomes {
    type Output = Outcome;
    fn index(&self, slot: usize) -> &Outcome {
        self.0.get(&slot).unwrap_or(&NO_OUTCOME)
    }
}

/// A slot's outcome, made (empty) when it has none yet.
impl std::ops::IndexMut<usize> for Outcomes {
    fn index_mut(&mut self, slot: usize) -> &mut Outcome {
        self.0.entry(slot).or_default()
    }
}

/// Counters shared with the blocking threads.
#[derive(Debug, Default)]
pub struct ReadCounters {
    pub files_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_produced: AtomicU64,
}

impl ReadCounters {
    /// Adds the read counts of `c` (reads done on another thread, e.g. while sizing).
    pub fn add(&self, c: &crate::progress::Counters) {
        self.files_read.fetch_add(c.files_read, Ordering::Relaxed);
        self.bytes_read.fetch_add(c.bytes_read, Ordering::Relaxed);
        self.bytes_produced
            .fetch_add(c.bytes_produced, Ordering::Relaxed);
    }
}

/// How the reason for a file that changed while it was read begins.
pub const CHANGED: &str = "the file changed";

fn changed(what: &str) -> io::Error {
    io::Error::other(format!("{CHANGED} {what}"))
}

/// Whether a failure's reason is a file that changed while it was read (worth another try).
pub fn is_changed(why: &str) -> bool {
    why.starts_with(CHANGED)
}

fn same_file(meta: &std::fs::Metadata, stat: &Stat) -> bool {
    meta.len() == stat.size
        && meta.mtime() == stat.mtime
        && u32::try_from(meta.mtime_nsec()).unwrap_or(0) == stat.mtime_nsec
}

/// Opens a share file and checks it is still the file the walk saw.
fn open_checked(spec: &FileSpec) -> io::Result<File> {
    let file = File::open(&spec.path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("no longer a regular file"));
    }
    if !same_file(&meta, &spec.stat) {
        return Err(changed("since it was scanned"));
    }
    Ok(file)
}

/// Opens a share file for reading (checked as in [`open_checked`]) and counts it as read.
fn open_counted(spec: &FileSpec, counters: &ReadCounters) -> io::Result<File> {
    let file = open_checked(spec)?;
    counters.files_read.fetch_add(1, Ordering::Relaxed);
    Ok(file)
}

/// The identity a sealed share file is sealed under.
fn sealed_identity(spec: &FileSpec) -> io::Result<RelPath> {
    spec.sealed_as()
        .unwrap_or_else(|| Err(io::Error::other("not a sealed file")))
}

/// Counts plaintext bytes as they are read.
struct Counted<'a, R> {
    inner: R,
    counters: &'a ReadCounters,
    total: u64,
}

impl<'a, R> Counted<'a, R> {
    fn new(inner: R, counters: &'a ReadCounters) -> Self {
        Counted {
            inner,
            counters,
            total: 0,
        }
    }
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        self.counters
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads `spec` and hands the bytes to be sent to `sink`, piece by piece; returns their length and hash.
/// Fails if the file changed while being read, or if the result does not fit the announced size.
pub fn produce(
    spec: &FileSpec,
    keys: &Keys,
    options: SealOptions,
    counters: &ReadCounters,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(u64, [u8; 32])> {
    let file = open_counted(spec, counters)?;
    let input = Counted::new(&file, counters);
    PIECE_BUF.with_borrow_mut(|buf| {
        if buf.len() < PIECE {
            buf.resize(PIECE, 0);
        }
        produce_with(spec, keys, options, counters, sink, &file, input, buf)
    })
}

thread_local! {
    /// One piece buffer per reading thread, reused file after file.
    static PIECE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[allow(clippy::too_many_arguments)]
fn produce_with(
    spec: &FileSpec,
    keys: &Keys,
    options: SealOptions,
    counters: &ReadCounters,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    file: &File,
    mut input: Counted<'_, &File>,
    buf: &mut [u8],
) -> io::Result<(u64, [u8; 32])> {
    let limit = spec.remote_size.announced();
    let (produced, hash) = match spec.sealed_as().transpose()? {
        Some(rel) => {
            // Large files seal on two threads: this one, which also reads and chunks, and a worker (same
            // output).
            let threads = if spec.stat.size > SMALL {
                SEAL_THREADS
            } else {
                1
            };
            let mut sealer = Sealer::new(keys, &rel, options, &mut input).with_threads(threads);
            let produced = pass_on(&mut sealer, buf, limit, sink, |_| {})?;
            (produced, sealer.stats().mac)
        }
        None => {
            let mut hasher = blake3::Hasher::new();
            let produced = pass_on(&mut input, buf, limit, sink, |b| {
                hasher.update(b);
            })?;
            (produced, *hasher.finalize().as_bytes())
        }
    };
    counters
        .bytes_produced
        .fetch_add(produced, Ordering::Relaxed);
    let after = file.metadata()?;
    let fits = match spec.remote_size {
        RemoteSize::Exact(n) => produced == n,
        RemoteSize::AtMost(n) => produced <= n,
        RemoteSize::Unknown => false,
    };
    if !fits || !same_file(&after, &spec.stat) || input.total != spec.stat.size {
        return Err(changed("while it was read"));
    }
    Ok((produced, hash))
}

/// Copies `src` to `sink` through `buf`, showing each piece to `seen`; fails once more than `limit`
/// bytes come (the file grew since it was sized). Returns the byte count.
fn pass_on(
    src: &mut dyn Read,
    buf: &mut [u8],
    limit: u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    mut seen: impl FnMut(&[u8]),
) -> io::Result<u64> {
    let mut produced = 0u64;
    loop {
        let n = src.read(buf)?;
        if n == 0 {
            return Ok(produced);
        }
        produced += n as u64;
        if produced > limit {
            return Err(changed("while it was read"));
        }
        seen(&buf[..n]);
        sink(&buf[..n])?;
    }
}

/// Seals a small share file into memory; returns the sealed bytes and the trailer MAC. Fails if the file
/// changed while it was read.
pub fn seal_small(
    spec: &FileSpec,
    keys: &Keys,
    options: SealOptions,
    counters: &ReadCounters,
) -> io::Result<(Vec<u8>, [u8; 32])> {
    let rel = sealed_identity(spec)?;
    let file = open_counted(spec, counters)?;
    let mut input = Counted::new(&file, counters);
    let mut out = Vec::with_capacity(spec.stat.size as usize + 256);
    let stats = seal::seal(keys, &rel, options, &mut input, &mut out)?;
    let after = file.metadata()?;
    if !same_file(&after, &spec.stat) || input.total != spec.stat.size {
        return Err(changed("while it was read"));
    }
    counters
        .bytes_produced
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    Ok((out, stats.mac))
}

/// The sealed size of a share file: chunking and the compression decisions, without the cipher.
pub fn sealed_size(
    spec: &FileSpec,
    keys: &Keys,
    options: SealOptions,
    counters: &ReadCounters,
) -> io::Result<u64> {
    let rel = sealed_identity(spec)?;
    let file = open_counted(spec, counters)?;
    let input = Counted::new(&file, counters);
    seal::sealed_len(keys, &rel, options, input)
}

/// A batch's sources, slot by slot, as its content source reads them.
pub trait Sources: Send + Sync {
    /// Where the content of `slot` comes from; a [`Source::Unchanged`] file comes back as a
    /// [`Source::File`], its spec made now.
    fn source(&self, slot: usize) -> Option<Cow<'_, Source>>;
}

/// Sources kept as they are (no [`Source::Unchanged`] among them).
impl Sources for Vec<Source> {
    fn source(&self, slot: usize) -> Option<Cow<'_, Source>> {
        self.get(slot).map(Cow::Borrowed)
    }
}

/// The content of one batch, as the rsync sender asks for it.
pub struct BatchContent {
    pub sources: Arc<dyn Sources>,
    pub outcomes: Arc<Mutex<Outcomes>>,
    pub keys: Keys,
    pub options: SealOptions,
    pub counters: Arc<ReadCounters>,
}

fn record(outcomes: &Mutex<Outcomes>, index: usize, result: &io::Result<(u64, [u8; 32])>) {
    if let Ok(mut o) = outcomes.lock() {
        let slot = &mut o[index];
        match result {
            Ok(p) => {
                slot.produced = Some(*p);
                slot.error = None;
            }
            Err(e) => slot.error = Some(e.to_string()),
        }
    }
}

enum Piece {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// Reads the pieces a producer thread sends; the stream is only complete with its end marker.
pub struct PieceReader {
    rx: mpsc::Receiver<Piece>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl AsyncRead for PieceReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.remaining().min(self.cur.len() - self.pos);
                let pos = self.pos;
                buf.put_slice(&self.cur[pos..pos + n]);
                self.pos += n;
                return Poll::Ready(Ok(()));
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Piece::Data(v))) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Poll::Ready(Some(Piece::End)) => self.done = true,
                Poll::Ready(Some(Piece::Failed(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::other(
                        "the reading thread stopped before the end of the file",
                    )));
                }
            }
        }
    }
}

impl rsync_wire::ContentSource for BatchContent {
    type Reader = Pin<Box<dyn AsyncRead + Send>>;

    async fn open(&mut self, index: usize, _entry: &FileEntry) -> io::Result<Self::Reader> {
        let spec = match self.sources.source(index).map(Cow::into_owned) {
            Some(Source::Inline(bytes)) => {
                return Ok(Box::pin(io::Cursor::new(bytes)));
            }
            Some(Source::File(spec)) => *spec,
            Some(Source::Previous) => {
                const WHY: &str =
                    "the target has no copy of its previous version to keep (it was asked for)";
                record(&self.outcomes, index, &Err(io::Error::other(WHY)));
                return Err(io::Error::other(WHY));
            }
            _ => return Err(io::Error::other("no content for this entry")),
        };
        let keys = self.keys.clone();
        let options = self.options;
        let counters = self.counters.clone();
        let outcomes = self.outcomes.clone();
        if spec.stat.size <= SMALL {
            let data = tokio::task::spawn_blocking(move || {
                let mut out =
                    Vec::with_capacity(spec.remote_size.announced().min(2 * SMALL) as usize);
                let r = produce(&spec, &keys, options, &counters, &mut |b| {
                    out.extend_from_slice(b);
                    Ok(())
                });
                record(&outcomes, index, &r);
                r.map(|_| out)
            })
            .await
            .map_err(io::Error::other)??;
            return Ok(Box::pin(io::Cursor::new(data)));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::task::spawn_blocking(move || {
            let r = produce(&spec, &keys, options, &counters, &mut |b| {
                tx.blocking_send(Piece::Data(b.to_vec()))
                    .map_err(|_| io::Error::other("the transfer stopped reading"))
            });
            record(&outcomes, index, &r);
            let _ = tx.blocking_send(match r {
                Ok(_) => Piece::End,
                Err(e) => Piece::Failed(e),
            });
        });
        Ok(Box::pin(PieceReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }))
    }
}
