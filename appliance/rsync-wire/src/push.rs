//! The push session: handshake, filter list, file list, sending, goodbye.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use crate::args::{self, ServerOptions};
use crate::checksum::{ChecksumKind, MAX_BLOCK_SIZE, SumParams};
use crate::codec;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::filter::FilterRule;

use crate::flist::{FileEntry, FileList};
use crate::handshake::{self, PROTOCOL_VERSION};
use crate::mux::{self, Conn, WireOut};
use crate::sender::{self, ContentSource, Limits, PushStats};
use crate::transport::{self, Connection};

/// Options of a push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// What goes on the server's command line (delete, link-dest, ...).
    pub server: ServerOptions,
    /// Exclude patterns sent as `- PATTERN` filter rules (only with
    /// `server.delete`; they protect matching destination items).
    pub excludes: Vec<Vec<u8>>,
    /// Include/exclude rules sent before `excludes` (only with
    /// `server.delete`): e.g. `+ /old/***` then `- *` deletes exactly `old`.
    pub filters: Vec<FilterRule>,
    /// Highest protocol to offer (27..=31).
    pub protocol: u32,
    /// Checksums to offer, in order of preference.
    pub checksums: Vec<ChecksumKind>,
    /// Largest block-sum table accepted per file (memory bound: about
    /// 32 bytes per entry).
    pub max_block_sums: u32,
    /// mtime of the destination directory when the list has no `.` entry
    /// (default: now).
    pub root_mtime: Option<i64>,
    /// How long to wait for the remote to exit at the end.
    pub exit_grace: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            server: ServerOptions::default(),
            excludes: Vec::new(),
            filters: Vec::new(),
            protocol: PROTOCOL_VERSION,
            checksums: vec![ChecksumKind::Xxh128, ChecksumKind::Md5],
            max_block_sums: 4 << 20,
            root_mtime: None,
            exit_grace: Duration::from_secs(30),
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Validates the options and the list; returns the sorted list.
pub fn prepare(files: Vec<FileEntry>, opts: &PushOptions) -> Result<FileList> {
    if !(handshake::MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&opts.protocol) {
        return Err(Error::InvalidInput(format!(
            "protocol must be {}..={PROTOCOL_VERSION}",
            handshake::MIN_PROTOCOL_VERSION
        )));
    }
    if (!opts.excludes.is_empty() || !opts.filters.is_empty()) && !opts.server.delete {
        return Err(Error::InvalidInput(
            "exclude patterns are only sent with --delete".into(),
        ));
    }
    crate::filter::validate(&opts.filters)?;
    for p in &opts.excludes {
        if p.is_empty() || p.contains(&0) || p.contains(&b'\n') || p.len() > 4096 {
            return Err(Error::InvalidInput("invalid exclude pattern".into()));
        }
    }
    if opts.checksums.is_empty() {
        return Err(Error::InvalidInput(
            "no checksum algorithms to offer".into(),
        ));
    }
    FileList::new(files, opts.root_mtime.unwrap_or_else(now))
}

/// Pushes `files` over an established connection to a remote
/// `rsync --server` started with [`args::server_args`] of `opts.server`.
///
/// `content` is asked for a file's data only when the receiver wants it.
/// `events` receives server messages, deletions and per-file progress.
pub async fn push<R, W, C>(
    conn: Connection<R, W>,
    files: Vec<FileEntry>,
    content: &mut C,
    opts: &PushOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<PushStats>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    C: ContentSource,
{
    let flist = prepare(files, opts)?;
    push_list(conn, &flist, content, opts, events).await
}

/// Like [`push`] with an already validated list.
pub async fn push_list<R, W, C>(
    conn: Connection<R, W>,
    flist: &FileList,
    content: &mut C,
    opts: &PushOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<PushStats>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    C: ContentSource,
{
    push_list_deferred(conn, flist, content, opts, events)
        .await
        .finish()
        .await
}

/// A push whose protocol exchange is over; the end of the session is still to be collected with
/// [`PendingExit::finish`]: the server's last messages up to its EOF, and its exit status. A caller running
/// many sessions in a row can start the next one meanwhile: after its goodbye the rsync server takes tens
/// of milliseconds to close (its generator polls for the receiver's exit every 20 ms), which made about a
/// third of each 1,024-file session of an unchanged backup.
///
/// Messages the server sends after the goodbye reach the result (a failed session quotes them), not the
/// caller's event sink, which is no longer borrowed.
pub struct PendingExit {
    result: Result<PushStats>,
    tail: Option<Tail>,
    remote: Box<dyn transport::RemoteEnd>,
    grace: std::time::Duration,
    messages: transport::MessageLog,
}

/// Reads the server's output up to its EOF; DATA bytes read in all and the messages' side effects.
type Drain =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u64, mux::MsgState)>> + Send>>;

/// The end of a session: reads the server's output up to its EOF.
struct Tail {
    drain: Drain,
    messages: Arc<Mutex<transport::MessageLog>>,
}

impl PendingExit {
    /// Waits for the end of the server's output and for its exit; the session's result, as
    /// [`push_list`] returns it.
    pub async fn finish(mut self) -> Result<PushStats> {
        if let Some(tail) = self.tail.take() {
            let drained = tail.drain.await;
            if let Ok(mut log) = tail.messages.lock() {
                self.messages.append(std::mem::take(&mut *log));
            }
            match (&mut self.result, drained) {
                (Ok(stats), Ok((bytes_read, msgs))) => {
                    stats.bytes_received = bytes_read;
                    stats.deleted = msgs.deleted;
                    stats.remote_errors = msgs.errors;
                    stats.remote_io_error = msgs.io_error;
                }
                (Ok(_), Err(e)) => self.result = Err(e),
                (Err(_), _) => {}
            }
        }
        transport::conclude(self.result, self.remote.as_mut(), self.grace, self.messages).await
    }
}

/// Like [`push_list`], returning once the protocol exchange is over (see [`PendingExit`]).
pub async fn push_list_deferred<R, W, C>(
    conn: Connection<R, W>,
    flist: &FileList,
    content: &mut C,
    opts: &PushOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> PendingExit
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    C: ContentSource,
{
    let Connection {
        reader,
        writer,
        remote,
    } = conn;
    // Keep the server's error/warning texts for the error value too.
    let mut messages = transport::MessageLog::default();
    let result = {
        let mut tee = |e: Event<'_>| {
            messages.record(&e);
            events(e);
        };
        run(reader, writer, flist, content, opts, &mut tee).await
    };
    let (result, tail) = match result {
        Ok((stats, tail)) => (Ok(stats), Some(tail)),
        Err(e) => (Err(e), None),
    };
    PendingExit {
        result,
        tail,
        remote,
        grace: opts.exit_grace,
        messages,
    }
}

/// Spawns a local `rsync --server` (at `rsync_path`) writing into `dest`
/// and pushes to it.
pub async fn push_local<C: ContentSource>(
    rsync_path: &OsStr,
    dest: &Path,
    files: Vec<FileEntry>,
    content: &mut C,
    opts: &PushOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<PushStats> {
    use std::os::unix::ffi::OsStrExt;
    let flist = prepare(files, opts)?;
    let argv = args::server_args(&opts.server, dest.as_os_str().as_bytes())?;
    let conn = transport::spawn_local(rsync_path, &argv)?;
    push_list(conn, &flist, content, opts, events).await
}

async fn run<R, W, C>(
    reader: R,
    mut writer: W,
    flist: &FileList,
    content: &mut C,
    opts: &PushOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<(PushStats, Tail)>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    C: ContentSource,
{
    let mut reader = BufReader::new(reader);
    let neg = handshake::client_handshake(&mut reader, &mut writer, opts.protocol, &opts.checksums)
        .await?;
    let proto = neg.protocol;
    let resorted = flist.for_protocol(proto);
    let flist = resorted.as_ref().unwrap_or(flist);
    let (tx, rx) = mux::channel();
    // Boxed: it outlives this function in the session's `Tail`.
    let mut demux = Box::pin(mux::demux(reader, tx));
    let params = SumParams {
        kind: neg.checksum,
        seed: neg.seed,
        proper_seed_order: neg.proper_seed_order(),
    };
    let limits = Limits {
        max_block_sums: opts.max_block_sums,
        max_block_length: if proto >= 30 { MAX_BLOCK_SIZE } else { 1 << 24 },
    };
    let timeout = opts.server.timeout_secs.map(Duration::from_secs);
    let protocol_side = async move {
        let mut conn = Conn::new(rx, WireOut::new(writer, proto), proto, events, timeout);
        let mut stats = PushStats {
            protocol: proto,
            checksum: neg.checksum.name(),
            ..PushStats::default()
        };
        // Filter list: only when the receiver expects one.
        if opts.server.delete {
            let out = conn.out.buf();
            let mut rules: Vec<Vec<u8>> = opts.filters.iter().map(FilterRule::text).collect();
            rules.extend(opts.excludes.iter().map(|p| [&b"- "[..], p].concat()));
            if let Some(pd) = &opts.server.partial_dir
                && pd.first() != Some(&b'/')
            {
                let prefix: &[u8] = if proto >= 30 { b"-p " } else { b"- " };
                rules.push([prefix, pd, b"/"].concat());
            }
            for r in &rules {
                codec::put_i32(out, r.len() as i32);
                out.extend_from_slice(r);
            }
            codec::put_i32(out, 0);
        }
        // In pieces of the output buffer's size, each written out before the next is encoded: the
        // whole encoded list of a 5,000-entry batch is about 500 KiB.
        let mut list = flist.encoder(proto, neg.varint_flist(), opts.server.preserve_links);
        while list.encode_until(conn.out.buf(), mux::OUT_FLUSH_AT) {
            conn.out.maybe_flush().await?;
        }
        conn.out.flush().await?;
        sender::send_files(&mut conn, flist, content, &params, &limits, &mut stats).await?;
        conn.out.shutdown().await?;
        // What was received and the messages' counts are taken at the end (`PendingExit::finish`).
        stats.bytes_sent = conn.out.bytes_written;
        stats.keepalives_sent = conn.out.keepalives;
        Ok::<_, Error>((stats, conn))
    };
    tokio::pin!(protocol_side);
    let mut demux_done = false;
    let (stats, conn) = loop {
        tokio::select! {
            r = &mut protocol_side => break r?,
            _ = &mut demux, if !demux_done => demux_done = true,
        }
    };
    // The server's last messages until it closes its output, read beside the demultiplexer; a server
    // that lingers is left to `RemoteEnd::finish`.
    let messages = Arc::new(Mutex::new(transport::MessageLog::default()));
    let log = messages.clone();
    let mut conn = conn.detach(Box::new(move |e: Event<'_>| {
        if let Ok(mut log) = log.lock() {
            log.record(&e);
        }
    }));
    let grace = opts.exit_grace;
    let drain = async move {
        let to_eof = async {
            if let Ok(r) = tokio::time::timeout(grace, conn.expect_eof()).await {
                r?;
            }
            Ok::<_, Error>(())
        };
        {
            tokio::pin!(to_eof);
            loop {
                tokio::select! {
                    r = &mut to_eof => break r?,
                    _ = &mut demux, if !demux_done => demux_done = true,
                }
            }
        }
        Ok((conn.bytes_read, conn.msgs))
    };
    Ok((
        stats,
        Tail {
            drain: Box::pin(drain),
            messages,
        },
    ))
}
