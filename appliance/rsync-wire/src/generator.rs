//! The generating side of a pull (rsync `generator.c`): walks the received
//! list in index order, creates directories and symlinks, skips files that
//! are up to date (same size and mtime), and asks the sender for the others
//! with the block sums of the local basis file (or an empty sum head), then
//! runs the phase sequence (redo requests, `NDX_DONE`s, final goodbye).
//!
//! It owns the writer and runs concurrently with the receiver
//! ([`crate::receiver`]), which tells it about redo requests and phase ends
//! through a channel: the server streams file data while we still send
//! requests, so neither side may wait for the other while holding data.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use crate::checksum::{SumParams, block_sum, checksum1, sum_sizes_sqroot};
use crate::codec::{self, NDX_DONE, NdxState};
use crate::dest::Dest;
use crate::error::{Error, Result};
use crate::flist::{EntryKind, FileEntry};
use crate::mux::WireOut;

/// `ITEM_TRANSFER`.
pub(crate) const ITEM_TRANSFER: u16 = 1 << 15;

/// The sum head sent for one request (`write_sum_head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SumHead {
    pub count: i32,
    pub blength: i32,
    pub s2length: i32,
    pub remainder: i32,
}

/// State shared by generator and receiver (never locked across an await).
#[derive(Debug)]
pub(crate) struct Shared {
    /// The destination (`None` in list-only mode).
    pub dest: Option<Mutex<Dest>>,
    /// Sum heads of requests the sender has not answered yet, by index.
    pub requested: Mutex<HashMap<usize, SumHead>>,
}

/// What the receiver tells the generator.
#[derive(Debug)]
pub(crate) enum ToGen {
    /// The file at this index failed its checksum in the first pass.
    Redo(usize),
    /// The receiver saw the end of this phase (1 = first pass done, ...).
    PhaseDone(u32),
}

/// What the generator did locally.
#[derive(Debug, Default)]
pub(crate) struct GenReport {
    /// Files requested in the first pass.
    pub requested: u64,
    /// Files found up to date.
    pub up_to_date: u64,
    /// Directories created or checked.
    pub dirs: u64,
    /// Symlinks created or found correct.
    pub symlinks: u64,
    /// Local failures: (index, error text).
    pub failed: Vec<(usize, String)>,
}

/// Inputs of [`generate`].
pub(crate) struct GenCtx<'a> {
    pub list: &'a [FileEntry],
    pub shared: &'a Shared,
    /// Streaming pull: the files to request (no destination, no basis).
    pub wanted: Option<&'a [bool]>,
    pub params: SumParams,
    pub protocol: u32,
    pub io_timeout: Option<Duration>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads as much of `buf` as the file still has; the rest is zeroed (a
/// basis that shrank meanwhile only makes the checksum fail, then redo).
fn read_block(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<()> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[n..].fill(0);
    Ok(())
}

async fn request<W: AsyncWrite + Unpin>(
    out: &mut WireOut<W>,
    ndx_out: &mut NdxState,
    ctx: &GenCtx<'_>,
    idx: usize,
    redo: bool,
) -> Result<()> {
    let e = &ctx.list[idx];
    let proto = ctx.protocol;
    let digest_len = ctx.params.kind.digest_len();
    let mut basis = match &ctx.shared.dest {
        Some(d) => lock(d).basis(&e.name).ok().flatten(),
        None => None,
    };
    let mut head = SumHead::default();
    if let Some(f) = &basis {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let (blength, s2) = sum_sizes_sqroot(len, proto, digest_len);
        let count = len.div_ceil(u64::from(blength));
        if len > 0 && count <= i32::MAX as u64 {
            head = SumHead {
                count: count as i32,
                blength: blength as i32,
                s2length: if redo { digest_len as i32 } else { s2 as i32 },
                remainder: (len % u64::from(blength)) as i32,
            };
        }
    }
    if head.count == 0 {
        basis = None;
    }
    lock(&ctx.shared.requested).insert(idx, head);
    let b = out.buf();
    if proto >= 30 {
        ndx_out.encode(b, idx as i32);
    } else {
        codec::put_i32(b, idx as i32);
    }
    if proto >= 29 {
        codec::put_u16(b, ITEM_TRANSFER);
    }
    codec::put_i32(b, head.count);
    codec::put_i32(b, head.blength);
    codec::put_i32(b, head.s2length);
    codec::put_i32(b, head.remainder);
    if let Some(mut f) = basis {
        let mut block = vec![0u8; head.blength as usize];
        let s2 = head.s2length as usize;
        for i in 0..head.count {
            let len = if i + 1 == head.count && head.remainder != 0 {
                head.remainder as usize
            } else {
                head.blength as usize
            };
            let data = &mut block[..len];
            read_block(&mut f, data).map_err(Error::io("reading a basis file"))?;
            let b = out.buf();
            codec::put_i32(b, checksum1(data) as i32);
            b.extend_from_slice(&block_sum(&ctx.params, data)[..s2]);
            out.maybe_flush().await?;
        }
    }
    out.maybe_flush().await
}

/// Waits for the receiver's next message, sending keepalives while idle.
async fn next_msg<W: AsyncWrite + Unpin>(
    out: &mut WireOut<W>,
    rx: &mut mpsc::UnboundedReceiver<ToGen>,
    io_timeout: Option<Duration>,
) -> Result<ToGen> {
    out.flush().await?;
    let gone = || Error::protocol("the receiving side stopped early");
    let Some(limit) = io_timeout else {
        return rx.recv().await.ok_or_else(gone);
    };
    let half = (limit / 2).max(Duration::from_millis(100));
    loop {
        match tokio::time::timeout(half, rx.recv()).await {
            Ok(m) => return m.ok_or_else(gone),
            Err(_) => out.keepalive().await?,
        }
    }
}

/// Runs the generator until the final goodbye has been written.
pub(crate) async fn generate<W: AsyncWrite + Unpin>(
    out: &mut WireOut<W>,
    ctx: &GenCtx<'_>,
    rx: &mut mpsc::UnboundedReceiver<ToGen>,
    report: &mut GenReport,
) -> Result<()> {
    let proto = ctx.protocol;
    let mut ndx_out = NdxState::default();
    let put_done = |out: &mut WireOut<W>, st: &mut NdxState| {
        if proto >= 30 {
            st.encode(out.buf(), NDX_DONE);
        } else {
            codec::put_i32(out.buf(), NDX_DONE);
        }
    };
    if let Some(dest) = &ctx.shared.dest {
        for (i, e) in ctx.list.iter().enumerate() {
            let res = match &e.kind {
                EntryKind::Dir => {
                    report.dirs += 1;
                    lock(dest).make_dir(&e.name, e.perms)
                }
                EntryKind::Symlink { target } => {
                    report.symlinks += 1;
                    lock(dest).make_symlink(&e.name, target, e.mtime, e.mtime_nsec)
                }
                EntryKind::File { size } => {
                    let fresh = {
                        let d = lock(dest);
                        d.up_to_date(e, *size, proto >= 31) && d.fix_perms(e).is_ok()
                    };
                    if fresh {
                        report.up_to_date += 1;
                    } else {
                        report.requested += 1;
                        request(out, &mut ndx_out, ctx, i, false).await?;
                    }
                    Ok(())
                }
            };
            if let Err(err) = res {
                report.failed.push((i, err.to_string()));
            }
        }
    } else if let Some(wanted) = ctx.wanted {
        for (i, e) in ctx.list.iter().enumerate() {
            if wanted[i] && matches!(e.kind, EntryKind::File { .. }) {
                report.requested += 1;
                request(out, &mut ndx_out, ctx, i, false).await?;
            }
        }
    }
    put_done(out, &mut ndx_out);
    // Redo requests arrive before the receiver's end of the first pass.
    let mut redo = Vec::new();
    while let ToGen::Redo(i) = next_msg(out, rx, ctx.io_timeout).await? {
        redo.push(i);
    }
    for i in redo {
        request(out, &mut ndx_out, ctx, i, true).await?;
    }
    put_done(out, &mut ndx_out); // end of the redo phase
    if proto >= 29 {
        put_done(out, &mut ndx_out); // no --delay-updates: sent early
    }
    if proto >= 31 {
        put_done(out, &mut ndx_out); // no delete-after: sent early
    }
    let max_phase = if proto >= 29 { 2 } else { 1 };
    loop {
        if let ToGen::PhaseDone(p) = next_msg(out, rx, ctx.io_timeout).await?
            && p > max_phase
        {
            break;
        }
    }
    put_done(out, &mut ndx_out); // final goodbye
    out.flush().await
}
