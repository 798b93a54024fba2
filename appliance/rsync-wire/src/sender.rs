//! The sending side of a push (rsync `sender.c`, `match.c`, `token.c`).
//!
//! For every file the receiver asks for we read its block-sum table, stream
//! the caller's data through a rolling window, emit literal runs (<= 32 KiB)
//! and block-match tokens, and finish with the whole-file digest. Memory per
//! file is the sum table plus a window of about `2 * blength + 96 KiB`.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::checksum::{FileHasher, Rolling, SumParams, block_sum};
use crate::codec::{self, NDX_DEL_STATS, NDX_DONE};
use crate::error::{Error, Result};
use crate::events::{Event, FileProgress};
use crate::flist::{EntryKind, FileEntry, FileList, MAX_PATH};
use crate::mux::{Conn, tag};

/// Most block sums reserved before they arrive (the table then grows with
/// the data received).
const SUMS_PREALLOC: usize = 64 * 1024;
/// Longest literal run in one token (`CHUNK_SIZE`).
pub const CHUNK_SIZE: usize = 32 * 1024;
/// How much we read from the content provider at once.
const READ_CHUNK: usize = 64 * 1024;

/// `ITEM_BASIS_TYPE_FOLLOWS`.
const ITEM_BASIS_TYPE_FOLLOWS: u16 = 1 << 11;
/// `ITEM_XNAME_FOLLOWS`.
const ITEM_XNAME_FOLLOWS: u16 = 1 << 12;
/// `ITEM_IS_NEW`.
const ITEM_IS_NEW: u16 = 1 << 13;
/// `ITEM_TRANSFER`.
const ITEM_TRANSFER: u16 = 1 << 15;
/// `IOERR_GENERAL`.
const IOERR_GENERAL: i32 = 1;

/// Supplies file contents on demand.
///
/// `open` is called lazily, only when the receiver asks for a file, and may
/// be called a second time for the same file in the redo pass. The reader is
/// consumed front to back once.
pub trait ContentSource: Send {
    /// The reader returned by [`ContentSource::open`].
    type Reader: AsyncRead + Unpin + Send;
    /// Opens the content of `entry`, which is `index` in the caller's list.
    fn open(
        &mut self,
        index: usize,
        entry: &FileEntry,
    ) -> impl Future<Output = io::Result<Self::Reader>> + Send;
}

/// Limits applied to what the server sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest block-sum count accepted for one file.
    pub max_block_sums: u32,
    /// Largest block length accepted.
    pub max_block_length: u32,
}

/// Statistics of a push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Files whose data was sent (a redone file counts once per pass).
    pub files_transferred: u64,
    /// Of those, sends in the redo pass.
    pub files_redone: u64,
    /// Literal bytes sent.
    pub literal_bytes: u64,
    /// Bytes the receiver copied from its basis files.
    pub matched_bytes: u64,
    /// Bytes read from the content provider.
    pub source_bytes: u64,
    /// Bytes written to the transport.
    pub bytes_sent: u64,
    /// Keepalives we sent (with `--timeout`, protocol >= 30).
    pub keepalives_sent: u64,
    /// Protocol bytes received (DATA payload).
    pub bytes_received: u64,
    /// Items the receiver reported deleted (MSG_DELETED).
    pub deleted: u64,
    /// Deletion counts from NDX_DEL_STATS: files, dirs, symlinks, devices, specials.
    pub del_stats: [u64; 5],
    /// Files skipped because the content provider failed.
    pub content_errors: u64,
    /// Error messages the server sent.
    pub remote_errors: u64,
    /// io_error bits the server reported.
    pub remote_io_error: i32,
    /// Negotiated protocol version.
    pub protocol: u32,
    /// Negotiated checksum name.
    pub checksum: &'static str,
}

/// A block-sum table as sent by the receiver's generator.
struct Sums {
    count: u32,
    blength: u32,
    s2length: usize,
    remainder: u32,
    sum1: Vec<u32>,
    sum2: Vec<u8>,
    /// (sum1, block index) grouped by hash bucket of sum1.
    order: Vec<(u32, u32)>,
    /// Presence bits (16 per block) checked before touching the buckets.
    filter: Vec<u64>,
    /// 32 - log2(filter bits).
    filter_shift: u32,
    /// `order[bucket_start[b]..bucket_start[b + 1]]` is bucket `b`.
    bucket_start: Vec<u32>,
    /// 32 - log2(bucket count).
    shift: u32,
}

impl Sums {
    fn block_len(&self, i: u32) -> usize {
        if i + 1 == self.count && self.remainder != 0 {
            self.remainder as usize
        } else {
            self.blength as usize
        }
    }

    #[inline]
    fn bucket(&self, s: u32) -> usize {
        (s.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    #[inline]
    fn maybe(&self, s: u32) -> bool {
        let h = (s.wrapping_mul(0x85EB_CA77) >> self.filter_shift) as usize;
        self.filter[h / 64] & (1 << (h % 64)) != 0
    }

    /// Builds the lookup structures: a presence filter (16 bits per block,
    /// so most positions are rejected from cache) and hash buckets (about
    /// two per block) holding (sum1, index) pairs.
    fn index(&mut self) {
        let fbits = (self.count as usize)
            .saturating_mul(16)
            .min(1 << 28)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(12, 28);
        self.filter_shift = 32 - fbits;
        self.filter = vec![0u64; (1usize << fbits) / 64];
        for i in 0..self.sum1.len() {
            let h = (self.sum1[i].wrapping_mul(0x85EB_CA77) >> self.filter_shift) as usize;
            self.filter[h / 64] |= 1 << (h % 64);
        }
        let want = (self.count as usize)
            .saturating_mul(2)
            .min(1 << 22)
            .next_power_of_two();
        let bits = want.trailing_zeros().clamp(10, 22);
        self.shift = 32 - bits;
        let nb = 1usize << bits;
        let mut start = vec![0u32; nb + 1];
        for &s in &self.sum1 {
            start[self.bucket(s) + 1] += 1;
        }
        for b in 0..nb {
            start[b + 1] += start[b];
        }
        let mut pos = start[..nb].to_vec();
        let mut order = vec![(0u32, 0u32); self.sum1.len()];
        for (i, &s) in self.sum1.iter().enumerate() {
            let b = self.bucket(s);
            order[pos[b] as usize] = (s, i as u32);
            pos[b] += 1;
        }
        self.order = order;
        self.bucket_start = start;
    }

    #[inline]
    fn candidates(&self, s: u32) -> &[(u32, u32)] {
        let b = self.bucket(s);
        &self.order[self.bucket_start[b] as usize..self.bucket_start[b + 1] as usize]
    }
}

async fn read_sum_head<W: AsyncWrite + Unpin>(
    conn: &mut Conn<'_, W>,
    limits: &Limits,
    digest_len: usize,
) -> Result<Sums> {
    let count = conn.read_i32().await?;
    if count < 0 || count as u32 > limits.max_block_sums {
        return Err(Error::range(
            "block-sum count",
            count.into(),
            format!(
                "0..={} (PushOptions::max_block_sums)",
                limits.max_block_sums
            ),
        ));
    }
    let blength = conn.read_i32().await?;
    if blength < 0 || blength as u32 > limits.max_block_length {
        return Err(Error::range(
            "block length",
            blength.into(),
            format!("0..={}", limits.max_block_length),
        ));
    }
    if count > 0 && blength == 0 {
        return Err(Error::protocol(
            "zero block length with a non-empty sum table",
        ));
    }
    let s2length = if conn.protocol >= 27 {
        conn.read_i32().await?
    } else {
        2
    };
    if s2length < 0 || s2length as usize > digest_len {
        return Err(Error::range(
            "strong checksum length",
            s2length.into(),
            format!("0..={digest_len}"),
        ));
    }
    let remainder = conn.read_i32().await?;
    if remainder < 0 || remainder > blength {
        return Err(Error::range(
            "remainder length",
            remainder.into(),
            format!("0..={blength}"),
        ));
    }
    let (count, s2length) = (count as u32, s2length as usize);
    // The tables grow as the sums arrive: a claimed count alone (16 bytes
    // from the peer) must not reserve tens of MiB.
    let prealloc = (count as usize).min(SUMS_PREALLOC);
    let mut sums = Sums {
        count,
        blength: blength as u32,
        s2length,
        remainder: remainder as u32,
        sum1: Vec::with_capacity(prealloc),
        sum2: Vec::with_capacity(prealloc * s2length),
        order: Vec::new(),
        filter: Vec::new(),
        filter_shift: 31,
        bucket_start: Vec::new(),
        shift: 31,
    };
    let mut s2 = [0u8; 16];
    for _ in 0..count {
        let s1 = conn.read_i32().await? as u32;
        sums.sum1.push(s1);
        conn.read_exact(&mut s2[..s2length]).await?;
        sums.sum2.extend_from_slice(&s2[..s2length]);
    }
    if count > 0 {
        sums.index();
    }
    Ok(sums)
}

fn put_literal(out: &mut Vec<u8>, data: &[u8]) {
    for chunk in data.chunks(CHUNK_SIZE) {
        codec::put_i32(out, chunk.len() as i32);
        out.extend_from_slice(chunk);
    }
}

/// Reads from the content provider; while it is slow, keeps the server from
/// timing out by sending keepalives every half `--timeout`.
async fn read_with_keepalive<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    conn: &mut Conn<'_, W>,
    src: &mut R,
    buf: &mut [u8],
) -> Result<io::Result<usize>> {
    let Some(limit) = conn.io_timeout else {
        return Ok(src.read(buf).await);
    };
    let half = (limit / 2).max(std::time::Duration::from_millis(100));
    loop {
        // The read future is recreated after a timeout; tokio readers keep
        // no partial state across a cancelled `read`.
        match tokio::time::timeout(half, src.read(buf)).await {
            Ok(r) => return Ok(r),
            Err(_) => conn.out.keepalive().await?,
        }
    }
}

/// Result of sending one file's delta.
struct Delta {
    literal: u64,
    matched: u64,
    total: u64,
    read_error: Option<io::Error>,
}

/// Streams `src` against `sums`, writing tokens, and returns the counts.
/// The whole-file digest is written too (corrupted on a read error, so the
/// receiver discards the file and asks again).
async fn send_delta<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    conn: &mut Conn<'_, W>,
    sums: &Sums,
    params: &SumParams,
    src: &mut R,
) -> Result<Delta> {
    let mut hasher = FileHasher::new(params);
    let mut d = Delta {
        literal: 0,
        matched: 0,
        total: 0,
        read_error: None,
    };
    let blen = sums.blength as usize;
    let use_sums = sums.count > 0;
    // The window grows with the data actually read, up to `bound`: a peer's
    // block length alone (up to 16 MiB before protocol 30) must not reserve
    // memory for a file smaller than one block.
    let bound = CHUNK_SIZE + blen.max(1) + READ_CHUNK;
    let mut buf: Vec<u8> = Vec::with_capacity(bound.min(CHUNK_SIZE + 2 * READ_CHUNK));
    let mut start = 0usize; // first byte of the pending literal
    let mut win = 0usize; // first byte of the window
    let mut eof = false;
    let mut roll: Option<(Rolling, usize)> = None;
    let mut want: u32 = 0; // block expected after the previous match
    let need = if use_sums { blen } else { 1 };
    loop {
        // Refill so that the window is complete or the source is exhausted.
        if !eof && buf.len() - win < need.max(1) {
            if start > 0 {
                buf.drain(..start);
                win -= start;
                start = 0;
            }
            let old = buf.len();
            if buf.capacity() < old + READ_CHUNK {
                // Geometric growth, capped at the window's bound.
                let cap = (buf.capacity() * 2).clamp(old + READ_CHUNK, bound.max(old + READ_CHUNK));
                buf.reserve_exact(cap - old);
            }
            buf.resize(old + READ_CHUNK, 0);
            // The window never holds more than one pending literal run, one
            // block and one read: memory does not depend on the file size.
            debug_assert!(buf.len() <= CHUNK_SIZE + blen.max(1) + READ_CHUNK);
            let r = read_with_keepalive(conn, src, &mut buf[old..]).await?;
            match r {
                Ok(0) => {
                    buf.truncate(old);
                    eof = true;
                }
                Ok(n) => {
                    buf.truncate(old + n);
                    d.total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(old),
                Err(e) => {
                    buf.truncate(old);
                    d.read_error = Some(e);
                    eof = true;
                }
            }
            continue;
        }
        let avail = buf.len() - win;
        if avail == 0 {
            break;
        }
        if !use_sums {
            // Everything is literal: send whole chunks as they arrive.
            if win - start + avail >= CHUNK_SIZE || eof {
                let end = buf.len();
                let take = if eof {
                    end
                } else {
                    start + (end - start) / CHUNK_SIZE * CHUNK_SIZE
                };
                hasher.update(&buf[start..take]);
                put_literal(conn.out.buf(), &buf[start..take]);
                d.literal += (take - start) as u64;
                conn.out.maybe_flush().await?;
                start = take;
                win = take;
                if eof && win == buf.len() {
                    break;
                }
            } else {
                win = buf.len();
            }
            continue;
        }
        let k = blen.min(avail);
        let (r, wlen) = match roll.as_mut() {
            Some(x) => x,
            None => {
                roll = Some((Rolling::new(&buf[win..win + k]), k));
                roll.as_mut().expect("just set")
            }
        };
        while *wlen < k {
            r.push(buf[win + *wlen]);
            *wlen += 1;
        }
        let s1 = r.value();
        let mut hit: Option<u32> = None;
        let cands: &[(u32, u32)] = if sums.maybe(s1) {
            sums.candidates(s1)
        } else {
            &[]
        };
        if !cands.is_empty() {
            let mut strong: Option<[u8; 16]> = None;
            for &(sum1, i) in cands {
                if sum1 != s1 || sums.block_len(i) != k {
                    continue;
                }
                let st = strong.get_or_insert_with(|| block_sum(params, &buf[win..win + k]));
                let off = i as usize * sums.s2length;
                if sums.sum2[off..off + sums.s2length] == st[..sums.s2length] {
                    if hit.is_none() || i == want {
                        hit = Some(i);
                    }
                    if i == want {
                        break;
                    }
                }
            }
        }
        if let Some(i) = hit {
            hasher.update(&buf[start..win + k]);
            let out = conn.out.buf();
            put_literal(out, &buf[start..win]);
            codec::put_i32(out, -(i as i32 + 1));
            d.literal += (win - start) as u64;
            d.matched += k as u64;
            conn.out.maybe_flush().await?;
            win += k;
            start = win;
            roll = None;
            want = i + 1;
            continue;
        }
        if win - start >= CHUNK_SIZE {
            hasher.update(&buf[start..win]);
            put_literal(conn.out.buf(), &buf[start..win]);
            d.literal += (win - start) as u64;
            conn.out.maybe_flush().await?;
            start = win;
        }
        r.pop(buf[win]);
        *wlen -= 1;
        win += 1;
    }
    if start < buf.len() {
        hasher.update(&buf[start..]);
        put_literal(conn.out.buf(), &buf[start..]);
        d.literal += (buf.len() - start) as u64;
    }
    let out = conn.out.buf();
    codec::put_i32(out, 0);
    let mut digest = hasher.finish();
    if d.read_error.is_some() {
        for b in &mut digest {
            *b = !*b;
        }
    }
    out.extend_from_slice(&digest[..params.kind.digest_len()]);
    conn.out.maybe_flush().await?;
    Ok(d)
}

/// Reads the next index, consuming NDX_DEL_STATS records on the way.
async fn read_ndx<W: AsyncWrite + Unpin>(
    conn: &mut Conn<'_, W>,
    stats: &mut PushStats,
) -> Result<i32> {
    loop {
        let ndx = conn.read_ndx().await?;
        if ndx == NDX_DEL_STATS && conn.protocol >= 30 {
            for slot in stats.del_stats.iter_mut() {
                let v = conn.read_varint().await?;
                if v < 0 {
                    return Err(Error::range("deletion count", v.into(), ">= 0"));
                }
                *slot = v as u64;
            }
            continue;
        }
        if ndx < 0 && ndx != NDX_DONE {
            return Err(Error::protocol(format!(
                "invalid file index {ndx} from the receiver"
            )));
        }
        return Ok(ndx);
    }
}

/// Runs the sending phases until the final goodbye.
pub(crate) async fn send_files<W: AsyncWrite + Unpin, C: ContentSource>(
    conn: &mut Conn<'_, W>,
    flist: &FileList,
    content: &mut C,
    params: &SumParams,
    limits: &Limits,
    stats: &mut PushStats,
) -> Result<()> {
    let proto = conn.protocol;
    let max_phase = if proto >= 29 { 2 } else { 1 };
    let mut phase = 0;
    let mut sent_once = vec![false; flist.entries.len()];
    let mut io_error = 0i32;
    let n = flist.entries.len();
    loop {
        let ndx = read_ndx(conn, stats).await?;
        if ndx == NDX_DONE {
            phase += 1;
            if phase > max_phase {
                break;
            }
            conn.put_ndx(NDX_DONE);
            continue;
        }
        let iflags: u16 = if proto >= 29 {
            conn.read_u16().await?
        } else {
            ITEM_TRANSFER
        };
        if proto < 30 && ndx as usize == n && iflags == ITEM_IS_NEW {
            // Protocol-29 keepalive.
            continue;
        }
        let idx = ndx as usize;
        if idx >= n {
            return Err(Error::range("file index", ndx.into(), format!("0..{n}")));
        }
        let basis = if iflags & ITEM_BASIS_TYPE_FOLLOWS != 0 {
            Some(conn.read_u8().await?)
        } else {
            None
        };
        let xname = if iflags & ITEM_XNAME_FOLLOWS != 0 {
            Some(conn.read_vstring(MAX_PATH).await?)
        } else {
            None
        };
        let echo = |conn: &mut Conn<'_, W>| -> Result<()> {
            conn.put_ndx(ndx);
            if proto >= 29 {
                let out = conn.out.buf();
                codec::put_u16(out, iflags);
                if let Some(b) = basis {
                    out.push(b);
                }
                if let Some(x) = &xname {
                    codec::put_vstring(out, x)?;
                }
            }
            Ok(())
        };
        if iflags & ITEM_TRANSFER == 0 {
            echo(conn)?;
            conn.out.maybe_flush().await?;
            continue;
        }
        if phase == 2 {
            return Err(Error::protocol("transfer request in the final phase"));
        }
        let entry = &flist.entries[idx];
        let EntryKind::File { .. } = entry.kind else {
            return Err(Error::protocol(format!(
                "receiver asked to transfer non-regular file #{ndx}"
            )));
        };
        let caller_idx = flist.caller_index[idx].expect("regular files come from the caller");
        let sums = read_sum_head(conn, limits, params.kind.digest_len()).await?;
        let opened = {
            let fut = content.open(caller_idx, entry);
            tokio::pin!(fut);
            match conn.io_timeout {
                None => fut.await,
                Some(limit) => {
                    let half = (limit / 2).max(std::time::Duration::from_millis(100));
                    loop {
                        match tokio::time::timeout(half, &mut fut).await {
                            Ok(r) => break r,
                            Err(_) => conn.out.keepalive().await?,
                        }
                    }
                }
            }
        };
        let mut src = match opened {
            Ok(r) => r,
            Err(e) => {
                io_error |= IOERR_GENERAL;
                stats.content_errors += 1;
                if proto < 30 {
                    return Err(Error::Content {
                        name: String::from_utf8_lossy(&entry.name).into_owned(),
                        source: e,
                    });
                }
                conn.emit(Event::ContentError {
                    index: caller_idx,
                    error: e.to_string(),
                });
                conn.out.msg(tag::NO_SEND, &ndx.to_le_bytes()).await?;
                continue;
            }
        };
        echo(conn)?;
        let out = conn.out.buf();
        codec::put_i32(out, sums.count as i32);
        codec::put_i32(out, sums.blength as i32);
        if proto >= 27 {
            codec::put_i32(out, sums.s2length as i32);
        }
        codec::put_i32(out, sums.remainder as i32);
        let d = send_delta(conn, &sums, params, &mut src).await?;
        drop(sums);
        let redo = sent_once[idx];
        sent_once[idx] = true;
        stats.files_transferred += 1;
        if redo {
            stats.files_redone += 1;
        }
        stats.literal_bytes += d.literal;
        stats.matched_bytes += d.matched;
        stats.source_bytes += d.total;
        if let Some(e) = d.read_error {
            io_error |= IOERR_GENERAL;
            stats.content_errors += 1;
            conn.emit(Event::ContentError {
                index: caller_idx,
                error: e.to_string(),
            });
        }
        conn.emit(Event::FileDone(FileProgress {
            index: caller_idx,
            name: &entry.name,
            literal_bytes: d.literal,
            matched_bytes: d.matched,
            total_bytes: d.total,
            redo,
        }));
    }
    if io_error != 0 && proto >= 30 {
        conn.out.msg(tag::IO_ERROR, &io_error.to_le_bytes()).await?;
    }
    conn.put_ndx(NDX_DONE);
    // read_final_goodbye
    let last = if proto < 29 {
        conn.read_i32().await?
    } else {
        let mut i = read_ndx(conn, stats).await?;
        if proto >= 31 && i == NDX_DONE {
            conn.put_ndx(NDX_DONE);
            i = read_ndx(conn, stats).await?;
        }
        i
    };
    if last != NDX_DONE {
        return Err(Error::protocol(format!(
            "invalid packet at end of run ({last})"
        )));
    }
    conn.out.flush().await?;
    Ok(())
}
