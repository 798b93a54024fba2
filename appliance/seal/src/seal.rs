//! Sealing: plaintext stream in, sealed stream out, in constant memory.
//!
//! The caller's thread reads and chunks; sealing a chunk (compression test, deflate, tag, encryption) is
//! done inline, or by worker threads when asked for ([`Sealer::with_threads`]). Chunks are handed to the
//! workers round-robin and collected in the same order, so the output is byte-for-byte the same either way.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::mpsc;
use std::thread;

use crate::chunker::{MAX_CHUNK, next_chunk_len};
use crate::cipher::ChunkCipher;
use crate::compress::Compressor;
use crate::format::{
    ChunkMac, FLAG_DEFLATE, FLAG_RAW, HEADER_LEN, LEN_LEN, MAX_BODY, TAG_LEN, TAG_PREFIX_LEN,
    file_id, header, prefixed_hasher, tag_prefix,
};
use crate::keys::Keys;
use crate::path::RelPath;

/// Choices that change the sealed bytes (so they must be stable for a share).
#[derive(Clone, Copy, Debug)]
pub struct SealOptions {
    /// Deflate chunks that shrink by at least 1/16 (default on).
    pub compress: bool,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions { compress: true }
    }
}

/// What a finished seal produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealStats {
    pub chunks: u64,
    pub compressed_chunks: u64,
    pub plain_len: u64,
    pub sealed_len: u64,
    /// The trailer MAC (the file's last 32 bytes), once the seal is finished: it authenticates every chunk,
    /// their order, count and length, so it identifies the sealed file (a manifest records it).
    pub mac: [u8; 32],
}

/// Bytes kept free in front of every record buffer: with the record's own length and tag fields, room for
/// the tag prefix (`header ‖ file_id`) right before the body, so the tag is computed in place.
const HEADROOM: usize = TAG_PREFIX_LEN - LEN_LEN - TAG_LEN;

/// Seals single chunks into records; one per thread.
struct ChunkSealer {
    cipher: ChunkCipher,
    compressor: Option<Compressor>,
    mac: ChunkMac,
    /// `header ‖ file_id`: the tag input's first bytes.
    prefix: [u8; TAG_PREFIX_LEN],
}

impl ChunkSealer {
    fn new(
        keys: &crate::keys::KeySet,
        options: SealOptions,
        prefix: &[u8; TAG_PREFIX_LEN],
    ) -> ChunkSealer {
        ChunkSealer {
            cipher: ChunkCipher::new(keys, keys.suite),
            compressor: options.compress.then(Compressor::new),
            mac: ChunkMac::new(&keys.chunk_mac),
            prefix: *prefix,
        }
    }

    /// Appends `len ‖ tag ‖ Enc(flags ‖ payload)` for `chunk` to `out`; returns the tag and whether the
    /// payload is compressed.
    ///
    /// `out` must already hold at least [`HEADROOM`] bytes: the tag's input (`prefix ‖ flags ‖ payload`) is
    /// laid out in place, its prefix over the record's length and tag fields and the `HEADROOM` bytes
    /// before them, which are put back afterwards. The chunk is copied once, into its record.
    fn seal_chunk(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> ([u8; TAG_LEN], bool) {
        debug_assert!(out.len() >= HEADROOM);
        let record = out.len();
        let packed = self.compressor.as_mut().and_then(|c| c.compress(chunk));
        let compressed = packed.is_some();
        let (flag, payload) = match packed {
            Some(p) => (FLAG_DEFLATE, p),
            None => (FLAG_RAW, chunk),
        };
        out.reserve(LEN_LEN + TAG_LEN + 1 + payload.len());
        out.extend_from_slice(&[0u8; LEN_LEN + TAG_LEN]);
        let body = out.len();
        out.push(flag);
        out.extend_from_slice(payload);
        let before = record - HEADROOM;
        let mut kept = [0u8; HEADROOM];
        kept.copy_from_slice(&out[before..record]);
        out[before..body].copy_from_slice(&self.prefix);
        let tag = self.mac.tag(&out[before..]);
        out[before..record].copy_from_slice(&kept);
        let len = (out.len() - body) as u32;
        out[record..record + LEN_LEN].copy_from_slice(&len.to_le_bytes());
        out[record + LEN_LEN..body].copy_from_slice(&tag);
        self.cipher.apply(&tag, &mut out[body..]);
        (tag, compressed)
    }
}

/// Chunks handed to a worker in one message (a handoff between threads costs about as much as sealing
/// a small chunk, so they travel in batches): their plaintext back to back, and their lengths.
struct Job {
    /// Always [`PLAIN_CAP`] bytes long: the input is read straight into it, and its first `Σ lens` bytes
    /// are this job's chunks (what follows them is carried over to the next job).
    plain: Vec<u8>,
    lens: Vec<usize>,
    /// [`HEADROOM`] bytes, then the sealed records back to back (filled by the worker; buffers are recycled).
    records: Vec<u8>,
    /// Per chunk: tag and whether it was compressed.
    tags: Vec<([u8; TAG_LEN], bool)>,
}

/// Plaintext bytes read per batch (beyond the unchunked end of the previous one).
const BATCH_BYTES: usize = 128 * 1024;
/// A batch's plaintext buffer: a full batch plus what the last batch left unchunked (under `MAX_CHUNK`).
const PLAIN_CAP: usize = BATCH_BYTES + MAX_CHUNK;

/// Jobs kept from one sealer to the next: a backup seals large files one after another, and each job
/// holds two buffers of about 200 KiB. Fresh ones per file were `mmap`ed and faulted in, or fragmented
/// the heap once glibc raised its mmap threshold (`docs/BENCHMARKS.md`, eighth session). As many as one
/// sealer with one worker has in flight.
static SPARE_JOBS: crate::spare::Kept<Job> = crate::spare::Kept::new(IN_FLIGHT_PER_WORKER + 1);

impl Job {
    /// A kept job, or a new one.
    fn take() -> Job {
        SPARE_JOBS.take().unwrap_or_else(|| Job {
            plain: vec![0; PLAIN_CAP],
            lens: Vec::new(),
            records: Vec::with_capacity(HEADROOM + PLAIN_CAP + PLAIN_CAP / 64),
            tags: Vec::new(),
        })
    }

    fn seal_all(&mut self, sealer: &mut ChunkSealer) {
        self.records.clear();
        self.records.resize(HEADROOM, 0);
        self.tags.clear();
        let mut at = 0;
        for &n in &self.lens {
            let (tag, compressed) = sealer.seal_chunk(&self.plain[at..at + n], &mut self.records);
            self.tags.push((tag, compressed));
            at += n;
        }
    }
}

struct Worker {
    jobs: mpsc::SyncSender<Job>,
    done: mpsc::Receiver<Job>,
    handle: Option<thread::JoinHandle<()>>,
}

/// A batch on its way to the output; they leave in input order.
enum Pending {
    /// Sent to this worker, whose results come back in the order they were sent.
    Worker(usize),
    /// Sealed: on the caller's thread (every worker had a full backlog), or by a worker and taken back.
    Sealed(Job),
}

/// Batches a worker may have waiting or in progress; with that many, the caller's thread seals the next
/// batch itself instead of waiting.
///
/// The worker's backlog is counted from what it has finished (collected without waiting, before each
/// choice), not from what the caller has taken back in output order. Counted the second way, with two
/// batches the caller sealed about a third of them itself on incompressible data while the worker, done
/// with its queue, waited; now it seals what balances the two threads: few batches when sealing is cheap
/// next to reading and chunking (random data), half when deflate makes it dear (`docs/BENCHMARKS.md`,
/// eleventh session).
const PER_WORKER: usize = 2;

/// Batches between the input and the output per worker (read, queued, sealed or waiting to be handed out
/// in order): what bounds the memory, about 400 KiB each.
const IN_FLIGHT_PER_WORKER: usize = 2 * PER_WORKER;

/// Worker threads, plus the caller's thread sealing the batches no worker has room for: on a box with as
/// many cores as sealing threads, nothing waits for a core (`threads` workers beside a reading thread
/// made one more runnable thread than cores, and each core switched between them).
struct Pool {
    workers: Vec<Worker>,
    /// Per worker: batches sent and not yet taken back.
    queued: Vec<usize>,
    pending: VecDeque<Pending>,
    spare: Vec<Job>,
}

impl Pool {
    fn capacity(&self) -> usize {
        IN_FLIGHT_PER_WORKER * self.workers.len() + 1
    }

    /// Takes back, without waiting, the batches the workers have finished: each replaces its worker's
    /// earliest entry in `pending` (a worker returns batches in the order it got them).
    fn collect_finished(&mut self) -> io::Result<()> {
        for w in 0..self.workers.len() {
            while self.queued[w] > 0 {
                let job = match self.workers[w].done.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Err(worker_gone()),
                };
                let slot = self
                    .pending
                    .iter_mut()
                    .find(|p| matches!(p, Pending::Worker(x) if *x == w))
                    .ok_or_else(worker_gone)?;
                *slot = Pending::Sealed(job);
                self.queued[w] -= 1;
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the job channels ends the workers' loops.
        let handles: Vec<_> = self
            .workers
            .drain(..)
            .filter_map(|mut w| w.handle.take())
            .collect();
        for h in handles {
            let _ = h.join();
        }
        let sealed = self.pending.drain(..).filter_map(|p| match p {
            Pending::Sealed(job) => Some(job),
            Pending::Worker(_) => None,
        });
        SPARE_JOBS.give(self.spare.drain(..).chain(sealed));
    }
}

fn worker_gone() -> io::Error {
    io::Error::other("a sealing worker thread stopped unexpectedly")
}

/// Reads plaintext from `R` and yields the sealed file (`docs/FORMAT.md`) through [`Read`].
///
/// Memory: about 200 KiB of buffers plus the compressor's tables, whatever the file size (plus about
/// 2 MiB of batches in flight with one worker thread ([`Sealer::with_threads`]): `IN_FLIGHT_PER_WORKER` per
/// worker and one more, of about 400 KiB each).
pub struct Sealer<R> {
    input: R,
    keys: Keys,
    options: SealOptions,
    gear: [u64; 256],
    inline: ChunkSealer,
    /// `header ‖ file_id`, for worker threads' sealers.
    tag_prefix: [u8; TAG_PREFIX_LEN],
    pool: Option<Pool>,
    trailer: blake3::Hasher,
    /// Plaintext window: `buf[start..end]` is read but not yet chunked. With worker threads, only what the
    /// last batch left unchunked, carried over to the next.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    input_done: bool,
    /// The record being handed out: `out[out_pos..]` is still to be read (records are sealed after
    /// [`HEADROOM`] bytes, where `out_pos` starts).
    out: Vec<u8>,
    out_pos: usize,
    finished: bool,
    stats: SealStats,
}

impl<R> Drop for Sealer<R> {
    fn drop(&mut self) {
        crate::spare::give_buffer(std::mem::take(&mut self.buf));
        crate::spare::give_buffer(std::mem::take(&mut self.out));
    }
}

impl<R: Read> Sealer<R> {
    pub fn new(keys: &Keys, path: &RelPath, options: SealOptions, input: R) -> Sealer<R> {
        let k = &keys.0;
        let fid = file_id(k, path);
        let head = header(k.suite, k.key_id, &fid);
        let prefix = tag_prefix(&head, &fid);
        let mut out = crate::spare::take_buffer(LEN_LEN + TAG_LEN + MAX_BODY);
        out.extend_from_slice(&head);
        Sealer {
            input,
            keys: keys.clone(),
            options,
            gear: k.gear,
            inline: ChunkSealer::new(k, options, &prefix),
            tag_prefix: prefix,
            pool: None,
            trailer: prefixed_hasher(&k.trailer_mac, &head, &fid),
            // Only `buf[start..end]`, filled from the input, is ever read.
            buf: crate::spare::take_window(2 * MAX_CHUNK),
            start: 0,
            end: 0,
            input_done: false,
            out,
            out_pos: 0,
            finished: false,
            stats: SealStats {
                sealed_len: HEADER_LEN as u64,
                ..SealStats::default()
            },
        }
    }

    /// Seals chunks on `threads` threads: the caller's thread, which also reads and chunks, and
    /// `threads - 1` workers (`0` or `1`: everything on the caller's thread). The output does not change.
    pub fn with_threads(mut self, threads: usize) -> Sealer<R> {
        if threads <= 1 {
            return self;
        }
        let options = self.options;
        let k = &self.keys.0;
        let mut workers = Vec::with_capacity(threads - 1);
        for i in 0..threads - 1 {
            let (job_tx, job_rx) = mpsc::sync_channel::<Job>(PER_WORKER);
            // Unbounded, so a worker never waits to hand a batch back: `Pool::capacity` bounds them.
            let (done_tx, done_rx) = mpsc::channel::<Job>();
            let mut sealer = ChunkSealer::new(k, options, &self.tag_prefix);
            let spawned = thread::Builder::new()
                .name(format!("offsite-seal-{i}"))
                .spawn(move || {
                    while let Ok(mut job) = job_rx.recv() {
                        job.seal_all(&mut sealer);
                        if done_tx.send(job).is_err() {
                            break;
                        }
                    }
                });
            match spawned {
                Ok(handle) => workers.push(Worker {
                    jobs: job_tx,
                    done: done_rx,
                    handle: Some(handle),
                }),
                // No thread to be had: seal with what we have (possibly inline).
                Err(_) => break,
            }
        }
        if !workers.is_empty() {
            self.pool = Some(Pool {
                queued: vec![0; workers.len()],
                workers,
                pending: VecDeque::new(),
                spare: Vec::new(),
            });
        }
        self
    }

    /// Counts so far (final once `read` returned 0).
    pub fn stats(&self) -> SealStats {
        self.stats
    }

    /// Tops the window up to at least `MAX_CHUNK` bytes, or to the end of the input.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= MAX_CHUNK || self.input_done {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < MAX_CHUNK {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.input_done = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk's bounds in `buf`, or `None` at the end of the input.
    fn next_chunk(&mut self) -> io::Result<Option<(usize, usize)>> {
        self.fill()?;
        if self.start == self.end {
            return Ok(None);
        }
        let n = next_chunk_len(&self.gear, &self.buf[self.start..self.end]);
        let at = self.start;
        self.start += n;
        Ok(Some((at, n)))
    }

    /// Accounts for the records now in `out`, after the headroom: per chunk, its tag, plaintext length
    /// and whether it was compressed.
    fn records_done<'t>(
        &mut self,
        chunks: impl IntoIterator<Item = (&'t [u8; TAG_LEN], usize, bool)>,
    ) {
        for (tag, plain, compressed) in chunks {
            self.trailer.update(tag);
            self.stats.chunks += 1;
            self.stats.compressed_chunks += u64::from(compressed);
            self.stats.plain_len += plain as u64;
        }
        self.stats.sealed_len += (self.out.len() - HEADROOM) as u64;
        self.out_pos = HEADROOM;
    }

    /// Reads the next batch into `job.plain`, after what the last one left unchunked, and cuts it into
    /// chunks. A chunk whose end is not known yet (no cut point before the end of what was read, and less
    /// than `MAX_CHUNK` of it) stays for the next batch.
    fn fill_job(&mut self, job: &mut Job) -> io::Result<()> {
        job.lens.clear();
        let carried = self.end - self.start;
        job.plain[..carried].copy_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = 0;
        let mut filled = carried;
        if !self.input_done {
            let room = PLAIN_CAP - carried;
            let got = crate::read_full(&mut self.input, &mut job.plain[carried..])?;
            filled += got;
            self.input_done = got < room;
        }
        let mut at = 0;
        while at < filled {
            let rest = &job.plain[at..filled];
            let n = next_chunk_len(&self.gear, rest);
            if n == rest.len() && rest.len() < MAX_CHUNK && !self.input_done {
                break;
            }
            job.lens.push(n);
            at += n;
        }
        self.end = filled - at;
        self.buf[..self.end].copy_from_slice(&job.plain[at..filled]);
        Ok(())
    }

    /// Puts the next record (a chunk, or the trailer at the end) into `out`.
    fn next_record(&mut self) -> io::Result<()> {
        if self.pool.is_some() {
            return self.next_record_pooled();
        }
        match self.next_chunk()? {
            Some((at, n)) => {
                self.out.clear();
                self.out.resize(HEADROOM, 0);
                let (tag, compressed) =
                    self.inline.seal_chunk(&self.buf[at..at + n], &mut self.out);
                self.records_done([(&tag, n, compressed)]);
            }
            None => self.write_trailer(),
        }
        Ok(())
    }

    /// Fills `out` with the next batch of records from the workers (or the trailer at the end).
    fn next_record_pooled(&mut self) -> io::Result<()> {
        // Keep the workers busy: submit batches until the pipeline is full or the input ends.
        while !self.input_done || self.start < self.end {
            let Some(pool) = self.pool.as_mut() else {
                break;
            };
            if pool.pending.len() >= pool.capacity() {
                break;
            }
            let mut job = pool.spare.pop().unwrap_or_else(Job::take);
            self.fill_job(&mut job)?;
            let Some(pool) = self.pool.as_mut() else {
                break;
            };
            if job.lens.is_empty() {
                pool.spare.push(job);
                break;
            }
            pool.collect_finished()?;
            match pool.queued.iter().position(|&q| q < PER_WORKER) {
                Some(w) => {
                    pool.workers[w].jobs.send(job).map_err(|_| worker_gone())?;
                    pool.queued[w] += 1;
                    pool.pending.push_back(Pending::Worker(w));
                }
                None => {
                    job.seal_all(&mut self.inline);
                    pool.pending.push_back(Pending::Sealed(job));
                }
            }
        }
        let Some(pool) = self.pool.as_mut() else {
            return Err(worker_gone());
        };
        let mut job = match pool.pending.pop_front() {
            None => {
                self.write_trailer();
                return Ok(());
            }
            Some(Pending::Sealed(job)) => job,
            Some(Pending::Worker(w)) => {
                pool.queued[w] -= 1;
                pool.workers[w].done.recv().map_err(|_| worker_gone())?
            }
        };
        std::mem::swap(&mut self.out, &mut job.records);
        self.records_done(
            job.tags
                .iter()
                .zip(&job.lens)
                .map(|((tag, compressed), &n)| (tag, n, *compressed)),
        );
        if let Some(pool) = self.pool.as_mut() {
            pool.spare.push(job);
        }
        Ok(())
    }

    fn write_trailer(&mut self) {
        self.out.clear();
        self.out_pos = 0;
        self.trailer.update(&self.stats.chunks.to_le_bytes());
        self.trailer.update(&self.stats.plain_len.to_le_bytes());
        let mac = self.trailer.finalize();
        self.out.extend_from_slice(&0u32.to_le_bytes());
        self.out.extend_from_slice(&self.stats.chunks.to_le_bytes());
        self.out
            .extend_from_slice(&self.stats.plain_len.to_le_bytes());
        self.out.extend_from_slice(mac.as_bytes());
        self.stats.mac = *mac.as_bytes();
        self.stats.sealed_len += self.out.len() as u64;
        self.finished = true;
        // Workers are no longer needed.
        self.pool = None;
    }
}

impl<R: Read> Read for Sealer<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        let sealed = io::BufRead::fill_buf(self)?;
        let n = dst.len().min(sealed.len());
        dst[..n].copy_from_slice(&sealed[..n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// The sealed bytes without a copy: `fill_buf` hands out the sealer's own record buffer (a whole batch of
/// records with worker threads).
impl<R: Read> io::BufRead for Sealer<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.out_pos == self.out.len() {
            if self.finished {
                return Ok(&[]);
            }
            self.next_record()?;
        }
        Ok(&self.out[self.out_pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.out_pos = (self.out_pos + amount).min(self.out.len());
    }
}

/// Seals `input` into `output` on the caller's thread; returns the counts.
pub fn seal(
    keys: &Keys,
    path: &RelPath,
    options: SealOptions,
    input: impl Read,
    output: impl io::Write,
) -> io::Result<SealStats> {
    seal_with_threads(keys, path, options, 1, input, output)
}

/// Seals `input` into `output`, sealing chunks on `threads` worker threads; returns the counts.
pub fn seal_with_threads(
    keys: &Keys,
    path: &RelPath,
    options: SealOptions,
    threads: usize,
    input: impl Read,
    mut output: impl io::Write,
) -> io::Result<SealStats> {
    let mut sealer = Sealer::new(keys, path, options, input).with_threads(threads);
    loop {
        let sealed = io::BufRead::fill_buf(&mut sealer)?;
        if sealed.is_empty() {
            break;
        }
        output.write_all(sealed)?;
        let n = sealed.len();
        io::BufRead::consume(&mut sealer, n);
    }
    output.flush()?;
    Ok(sealer.stats())
}

/// An upper bound of the sealed length of any `plain_len` bytes, known before they are read: every chunk
/// but the last is longer than [`MIN_CHUNK`](crate::chunker::MIN_CHUNK) (so there are at most
/// `⌈plain_len / (MIN_CHUNK + 1)⌉` chunks), and a chunk's payload is never longer than the chunk (deflate is
/// kept only where it saves). A sender may announce it in an rsync file list instead of the exact length,
/// which [`sealed_len`] learns only at the price of a pass over the file.
pub fn sealed_len_bound(plain_len: u64) -> u64 {
    let chunks = plain_len.div_ceil(crate::chunker::MIN_CHUNK as u64 + 1);
    let per_chunk = (LEN_LEN + TAG_LEN + 1) as u64;
    ((HEADER_LEN + crate::format::TRAILER_LEN) as u64)
        .saturating_add(plain_len)
        .saturating_add(chunks.saturating_mul(per_chunk))
}

/// The sealed length, without compression ([`SealOptions`] `compress: false`), of a stream given piece by
/// piece: a writer of a file that is sealed later learns its sealed length as it writes, instead of
/// [`sealed_len`]'s pass over the file. It cuts the chunks the sealer will cut (the chunk count is all
/// the length needs without compression) and holds at most twice [`MAX_CHUNK`] bytes plus the last piece.
pub struct SealedLenCounter {
    keys: Keys,
    /// Bytes given but not cut into chunks yet (the last chunk's end is not known before the stream's).
    pending: Vec<u8>,
    plain_len: u64,
    chunks: u64,
}

impl SealedLenCounter {
    pub fn new(keys: &Keys) -> SealedLenCounter {
        SealedLenCounter {
            keys: keys.clone(),
            pending: Vec::new(),
            plain_len: 0,
            chunks: 0,
        }
    }

    /// The stream's next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.plain_len += data.len() as u64;
        self.pending.extend_from_slice(data);
        // Cut only with twice the largest chunk at hand, and only while a whole largest chunk is left:
        // a cut found then is final (the sealer cuts the same with all of the stream), and each byte is
        // scanned about once however small the pieces.
        if self.pending.len() < 2 * MAX_CHUNK {
            return;
        }
        let gear = &self.keys.0.gear;
        let mut at = 0;
        while self.pending.len() - at >= MAX_CHUNK {
            at += next_chunk_len(gear, &self.pending[at..]);
            self.chunks += 1;
        }
        self.pending.drain(..at);
    }

    /// The sealed length of what was given, as if the stream ended here.
    pub fn sealed_len(&self) -> u64 {
        let gear = &self.keys.0.gear;
        let mut chunks = self.chunks;
        let mut rest = &self.pending[..];
        while !rest.is_empty() {
            let n = next_chunk_len(gear, rest);
            chunks += 1;
            rest = &rest[n..];
        }
        (HEADER_LEN + crate::format::TRAILER_LEN) as u64
            + self.plain_len
            + chunks * (LEN_LEN + TAG_LEN + 1) as u64
    }
}

/// The exact sealed length of `input`, without sealing it: chunking and the compression decision (and
/// deflate, for compressible chunks only) run, the MAC and the cipher do not. For incompressible data this
/// costs a fraction of a seal, which is what lets a sender announce a file's sealed size in an rsync file
/// list before producing its bytes.
pub fn sealed_len(
    keys: &Keys,
    path: &RelPath,
    options: SealOptions,
    input: impl Read,
) -> io::Result<u64> {
    let mut sizer = Sealer::new(keys, path, options, input);
    let mut total = (HEADER_LEN + crate::format::TRAILER_LEN) as u64;
    while let Some((at, n)) = sizer.next_chunk()? {
        let chunk = &sizer.buf[at..at + n];
        let payload = sizer
            .inline
            .compressor
            .as_mut()
            .and_then(|c| c.compress(chunk))
            .map_or(n, <[u8]>::len);
        total += (LEN_LEN + TAG_LEN + 1 + payload) as u64;
    }
    Ok(total)
}
