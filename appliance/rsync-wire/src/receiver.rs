//! The receiving side of a pull (rsync `receiver.c`: `recv_files`,
//! `receive_data`): reads the sender's answer to each request (the echoed
//! index and sum head, literal and block-match tokens, the whole-file
//! digest), rebuilds the file into a temporary file next to it, verifies the
//! digest, and renames it into place with its mode and mtime. A failed
//! digest in the first pass is sent back to the generator for the redo pass;
//! a second failure is reported.
//!
//! Memory is independent of the file size: literal data streams through a
//! fixed buffer and the basis is read one block at a time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use crate::checksum::{FileHasher, SumParams};
use crate::codec::NDX_DONE;
use crate::error::{Error, Result};
use crate::events::{Event, FileProgress};
use crate::flist::{EntryKind, FileEntry, MAX_PATH, read_varlong30};
use crate::generator::{ITEM_TRANSFER, Shared, SumHead, ToGen};
use crate::mux::Conn;
use crate::pull::PullSink;

/// `ITEM_BASIS_TYPE_FOLLOWS`.
const ITEM_BASIS_TYPE_FOLLOWS: u16 = 1 << 11;
/// `ITEM_XNAME_FOLLOWS`.
const ITEM_XNAME_FOLLOWS: u16 = 1 << 12;
/// Literal data is copied through a buffer of this size.
const COPY_BUF: usize = 64 * 1024;

/// What the receiver counted.
#[derive(Debug, Default)]
pub(crate) struct RecvReport {
    /// Files committed.
    pub files_transferred: u64,
    /// Files received in the redo pass (committed or not).
    pub files_redone: u64,
    pub literal_bytes: u64,
    pub matched_bytes: u64,
    pub total_bytes: u64,
    /// Files that failed for good: (index, error text).
    pub failed: Vec<(usize, String)>,
    /// The sender's statistics: total read, total written, total size.
    pub remote_stats: [i64; 3],
}

/// Inputs of [`receive`].
pub(crate) struct RecvCtx<'a> {
    pub list: &'a [FileEntry],
    pub shared: &'a Shared,
    pub params: SumParams,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the temporary file when dropped, unless it was committed (also
/// when the session fails half-way through a file).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where one file's data goes while it is received.
struct Target {
    out: BufWriter<File>,
    tmp: TempGuard,
    basis: Option<File>,
}

/// Outcome of one file's data.
struct Received {
    literal: u64,
    matched: u64,
    /// `Err` for a local failure (the data was still consumed).
    local: std::result::Result<(), String>,
    digest_ok: bool,
    target: Option<Target>,
}

async fn recv_data<W: AsyncWrite + Unpin>(
    conn: &mut Conn<'_, W>,
    ctx: &RecvCtx<'_>,
    head: &SumHead,
    mut target: Option<Target>,
    mut local: std::result::Result<(), String>,
    mut sink: Option<&mut (dyn PullSink + '_)>,
) -> Result<Received> {
    let mut hasher = FileHasher::new(&ctx.params);
    let mut buf = vec![0u8; COPY_BUF.max(head.blength as usize)];
    let mut r = Received {
        literal: 0,
        matched: 0,
        local: Ok(()),
        digest_ok: false,
        target: None,
    };
    let fail = |t: &mut Option<Target>, local: &mut std::result::Result<(), String>, e: String| {
        if local.is_ok() {
            *local = Err(e);
        }
        // Dropping the target removes its temporary file.
        t.take();
    };
    loop {
        let tok = conn.read_i32().await?;
        if tok == 0 {
            break;
        }
        if tok > 0 {
            let mut left = tok as usize;
            while left > 0 {
                let k = left.min(COPY_BUF);
                conn.read_exact(&mut buf[..k]).await?;
                hasher.update(&buf[..k]);
                if local.is_ok()
                    && let Some(s) = sink.as_deref_mut()
                    && let Err(e) = s.data(&buf[..k])
                {
                    local = Err(e);
                }
                if let Some(t) = target.as_mut()
                    && let Err(e) = t.out.write_all(&buf[..k])
                {
                    fail(&mut target, &mut local, format!("writing: {e}"));
                }
                left -= k;
            }
            r.literal += tok as u64;
        } else {
            let i = -(i64::from(tok) + 1);
            if i >= i64::from(head.count) {
                return Err(Error::range("block index", i, format!("0..{}", head.count)));
            }
            let i = i as i32;
            let len = if i + 1 == head.count && head.remainder != 0 {
                head.remainder as usize
            } else {
                head.blength as usize
            };
            let off = i as u64 * head.blength as u64;
            let data = &mut buf[..len];
            let got = match target.as_ref().and_then(|t| t.basis.as_ref()) {
                Some(b) => b.read_exact_at(data, off).map_err(|e| e.to_string()),
                None => Err("no basis file".to_string()),
            };
            match got {
                Ok(()) => {
                    hasher.update(data);
                    if let Some(t) = target.as_mut()
                        && let Err(e) = t.out.write_all(data)
                    {
                        fail(&mut target, &mut local, format!("writing: {e}"));
                    }
                }
                Err(e) => {
                    if target.is_some() {
                        fail(&mut target, &mut local, format!("reading the basis: {e}"));
                    }
                }
            }
            r.matched += len as u64;
        }
    }
    let mut theirs = [0u8; 16];
    let dl = ctx.params.kind.digest_len();
    conn.read_exact(&mut theirs[..dl]).await?;
    let ours = hasher.finish();
    r.digest_ok = ours[..dl] == theirs[..dl];
    r.local = local;
    r.target = target;
    Ok(r)
}

/// Opens the temporary file and the basis for entry `idx`.
fn open_target(
    ctx: &RecvCtx<'_>,
    idx: usize,
    head: &SumHead,
) -> std::result::Result<Target, String> {
    let dest = ctx.shared.dest.as_ref().ok_or("list-only session")?;
    let mut d = lock(dest);
    let name = &ctx.list[idx].name;
    let basis = if head.count > 0 {
        Some(
            d.basis(name)
                .map_err(|e| e.to_string())?
                .ok_or("the basis file disappeared")?,
        )
    } else {
        None
    };
    let (f, tmp) = d
        .temp_file(name)
        .map_err(|e| format!("creating a temporary file: {e}"))?;
    Ok(Target {
        out: BufWriter::with_capacity(COPY_BUF, f),
        tmp: TempGuard {
            path: tmp,
            armed: true,
        },
        basis,
    })
}

/// Reads file data until the sender's last `NDX_DONE`, then its statistics
/// and (protocol 31) its answer to our first goodbye.
pub(crate) async fn receive<W: AsyncWrite + Unpin>(
    conn: &mut Conn<'_, W>,
    ctx: &RecvCtx<'_>,
    mut sink: Option<&mut dyn PullSink>,
    to_gen: &mpsc::UnboundedSender<ToGen>,
    report: &mut RecvReport,
) -> Result<()> {
    let proto = conn.protocol;
    let max_phase = if proto >= 29 { 2 } else { 1 };
    let n = ctx.list.len();
    let mut phase = 0u32;
    let tell = |m: ToGen| {
        // The generator only stops early on an error, which is reported there.
        let _ = to_gen.send(m);
    };
    loop {
        let ndx = conn.read_ndx().await?;
        if ndx == NDX_DONE {
            phase += 1;
            tell(ToGen::PhaseDone(phase));
            if phase > max_phase {
                break;
            }
            continue;
        }
        if ndx < 0 || ndx as usize >= n {
            return Err(Error::range("file index", ndx.into(), format!("0..{n}")));
        }
        let idx = ndx as usize;
        let iflags = if proto >= 29 {
            conn.read_u16().await?
        } else {
            ITEM_TRANSFER
        };
        if iflags & ITEM_BASIS_TYPE_FOLLOWS != 0 {
            conn.read_u8().await?;
        }
        if iflags & ITEM_XNAME_FOLLOWS != 0 {
            conn.read_vstring(MAX_PATH).await?;
        }
        if iflags & ITEM_TRANSFER == 0 {
            continue;
        }
        // Phase 0 is the first pass, phase 1 the redo pass (at every
        // protocol); later phases carry no data.
        if phase > 1 {
            return Err(Error::protocol("file data after the redo phase"));
        }
        let entry = &ctx.list[idx];
        let EntryKind::File { .. } = entry.kind else {
            return Err(Error::protocol(format!(
                "sender sent data for non-regular file #{ndx}"
            )));
        };
        let Some(want) = lock(&ctx.shared.requested).remove(&idx) else {
            return Err(Error::protocol(format!(
                "sender sent file #{ndx}, which we did not request"
            )));
        };
        let mut got = SumHead {
            count: conn.read_i32().await?,
            blength: conn.read_i32().await?,
            ..SumHead::default()
        };
        got.s2length = conn.read_i32().await?;
        got.remainder = conn.read_i32().await?;
        if got != want {
            return Err(Error::protocol(format!(
                "sender echoed sum head {got:?} for file #{ndx}, we sent {want:?}"
            )));
        }
        let redo = phase > 0;
        let (target, local) = match sink.as_deref_mut() {
            Some(s) => (None, s.begin(idx, entry, redo)),
            None => match open_target(ctx, idx, &want) {
                Ok(t) => (Some(t), Ok(())),
                Err(e) => (None, Err(e)),
            },
        };
        let began = local.is_ok();
        let to_sink = if began { sink.as_deref_mut() } else { None };
        let mut r = recv_data(conn, ctx, &want, target, local, to_sink).await?;
        if began && let Some(s) = sink.as_deref_mut() {
            let end = s.end(r.digest_ok);
            if r.local.is_ok() {
                r.local = end;
            }
        }
        if redo {
            report.files_redone += 1;
        }
        report.literal_bytes += r.literal;
        report.matched_bytes += r.matched;
        let total = r.literal + r.matched;
        let mut outcome: std::result::Result<(), String> = r.local;
        if outcome.is_ok() && !r.digest_ok {
            drop(r.target.take());
            if !redo {
                tell(ToGen::Redo(idx));
                continue;
            }
            outcome = Err("whole-file checksum mismatch in the redo pass".into());
        }
        if outcome.is_ok()
            && let Some(mut t) = r.target.take()
        {
            let res = t
                .out
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| {
                    let dest = ctx.shared.dest.as_ref().expect("target implies dest");
                    lock(dest).commit_file(f, &t.tmp.path, entry)
                });
            match res {
                Ok(()) => t.tmp.armed = false,
                Err(e) => outcome = Err(format!("finishing: {e}")),
            }
        }
        match outcome {
            Ok(()) => {
                report.files_transferred += 1;
                report.total_bytes += total;
                conn.emit(Event::FileDone(FileProgress {
                    index: idx,
                    name: &entry.name,
                    literal_bytes: r.literal,
                    matched_bytes: r.matched,
                    total_bytes: total,
                    redo,
                }));
            }
            Err(e) => {
                conn.emit(Event::LocalError {
                    name: &entry.name,
                    error: e.clone(),
                });
                report.failed.push((idx, e));
            }
        }
    }
    // handle_stats: total_written and total_read swap meaning here.
    let written = read_varlong30(conn, 3).await?;
    let read = read_varlong30(conn, 3).await?;
    let size = read_varlong30(conn, 3).await?;
    if proto >= 29 {
        read_varlong30(conn, 3).await?; // flist build time
        read_varlong30(conn, 3).await?; // flist transfer time
    }
    report.remote_stats = [read, written, size];
    if proto >= 31 {
        let last = conn.read_ndx().await?;
        if last != NDX_DONE {
            return Err(Error::protocol(format!(
                "invalid packet at end of run ({last})"
            )));
        }
    }
    Ok(())
}
