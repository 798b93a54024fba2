//! The push session: handshake, filter list, file list, sending, goodbye.

use std::ffi::OsStr;
use std::path::Path;
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
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
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
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    C: ContentSource,
{
    push_list_deferred(conn, flist, content, opts, events)
        .await
        .finish()
        .await
}

/// A push whose protocol exchange is over; the remote's exit status is still to be collected with
/// [`PendingExit::finish`]. A caller running many sessions in a row can start the next one meanwhile: the
/// rsync server takes tens of milliseconds to exit (it polls for its child every 20 ms).
pub struct PendingExit {
    result: Result<PushStats>,
    remote: Box<dyn transport::RemoteEnd>,
    grace: std::time::Duration,
    messages: transport::MessageLog,
}

impl PendingExit {
    /// Waits for the remote to exit; the session's result, as [`push_list`] returns it.
    pub async fn finish(mut self) -> Result<PushStats> {
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
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
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
    PendingExit {
        result,
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
) -> Result<PushStats>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    C: ContentSource,
{
    let mut reader = BufReader::new(reader);
    let neg = handshake::client_handshake(&mut reader, &mut writer, opts.protocol, &opts.checksums)
        .await?;
    let proto = neg.protocol;
    let resorted = flist.for_protocol(proto);
    let flist = resorted.as_ref().unwrap_or(flist);
    let (tx, rx) = mux::channel();
    let demux = mux::demux(reader, tx);
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
        flist.encode(
            conn.out.buf(),
            proto,
            neg.varint_flist(),
            opts.server.preserve_links,
        );
        conn.out.flush().await?;
        sender::send_files(&mut conn, flist, content, &params, &limits, &mut stats).await?;
        conn.out.shutdown().await?;
        // Collect the server's last messages until it closes its output;
        // a server that lingers is left to `RemoteEnd::finish`.
        if let Ok(r) = tokio::time::timeout(opts.exit_grace, conn.expect_eof()).await {
            r?;
        }
        stats.bytes_sent = conn.out.bytes_written;
        stats.keepalives_sent = conn.out.keepalives;
        stats.bytes_received = conn.bytes_read;
        stats.deleted = conn.msgs.deleted;
        stats.remote_errors = conn.msgs.errors;
        stats.remote_io_error = conn.msgs.io_error;
        Ok::<_, Error>(stats)
    };
    tokio::pin!(demux);
    tokio::pin!(protocol_side);
    let mut demux_done = false;
    loop {
        tokio::select! {
            r = &mut protocol_side => return r,
            _ = &mut demux, if !demux_done => demux_done = true,
        }
    }
}
