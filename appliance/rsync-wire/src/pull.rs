//! The pull and list-only sessions: handshake, filter list, file list, then
//! generator and receiver running side by side, goodbye, exit status.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;

use crate::args::{self, SenderOptions};
use crate::checksum::{ChecksumKind, SumParams};
use crate::dest::Dest;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::filter::{self, FilterRule};
use crate::flist::{self, FileEntry, ListLimits};
use crate::generator::{self, GenCtx, GenReport, Shared};
use crate::handshake::{self, PROTOCOL_VERSION};
use crate::mux::{self, Conn, WireOut};
use crate::receiver::{self, RecvCtx, RecvReport};
use crate::transport::{self, Connection};

/// Options of a pull or a listing.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The remote sender's command line (used by [`pull_local`] /
    /// [`list_local`]; with [`pull`] the caller started the server, and only
    /// `preserve_links` and `timeout_secs` are read from here).
    pub sender: SenderOptions,
    /// Include/exclude rules, sent as the filter list (see
    /// [`FilterRule::only`] to select one file or folder).
    pub filters: Vec<FilterRule>,
    /// Highest protocol to offer (27..=31).
    pub protocol: u32,
    /// Checksums to offer, in order of preference.
    pub checksums: Vec<ChecksumKind>,
    /// Bounds on the received file list.
    pub limits: ListLimits,
    /// How long to wait for the remote to exit at the end.
    pub exit_grace: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            sender: SenderOptions::default(),
            filters: Vec::new(),
            protocol: PROTOCOL_VERSION,
            checksums: vec![ChecksumKind::Xxh128, ChecksumKind::Md5],
            limits: ListLimits::default(),
            exit_grace: Duration::from_secs(30),
        }
    }
}

/// Statistics of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Entries in the received list.
    pub entries: u64,
    /// Files requested in the first pass.
    pub files_requested: u64,
    /// Files received and committed (a redone file counts once).
    pub files_transferred: u64,
    /// Files received again in the redo pass after a checksum mismatch.
    pub files_redone: u64,
    /// Files left alone because size and mtime matched.
    pub files_up_to_date: u64,
    /// Directories created or checked.
    pub dirs: u64,
    /// Symlinks created or checked.
    pub symlinks: u64,
    /// Literal bytes received (all attempts).
    pub literal_bytes: u64,
    /// Bytes copied from local basis files (all attempts).
    pub matched_bytes: u64,
    /// Bytes of file data committed.
    pub total_bytes: u64,
    /// Bytes written to the transport.
    pub bytes_sent: u64,
    /// Protocol bytes received (DATA payload).
    pub bytes_received: u64,
    /// Files the sender could not open (MSG_NO_SEND).
    pub remote_no_send: u64,
    /// Error messages the server sent.
    pub remote_errors: u64,
    /// io_error bits the server reported (list and messages).
    pub remote_io_error: i32,
    /// The sender's total size of the listed files.
    pub remote_total_size: i64,
    /// Negotiated protocol version.
    pub protocol: u32,
    /// Negotiated checksum name.
    pub checksum: &'static str,
}

/// Pulls from a remote `rsync --server --sender` (started with
/// [`args::sender_args`]) into `dest` (created if missing).
///
/// Returns [`Error::PullFailed`] when some entries could not be written
/// (after the session itself ended cleanly), [`Error::RemoteExit`] when the
/// server exited non-zero (e.g. 23 when it could not read some files).
pub async fn pull<R, W>(
    conn: Connection<R, W>,
    dest: &Path,
    opts: &PullOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<PullStats>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    check_opts(opts)?;
    let d = Dest::new(dest).map_err(|source| Error::Io {
        context: "opening the destination directory",
        source,
    })?;
    let (stats, _, failed) = session(conn, Some(d), None, opts, events).await?;
    per_entry_outcome(stats, failed)
}

/// A session that ended cleanly: its statistics, or the entries that failed.
fn per_entry_outcome(stats: PullStats, failed: Vec<(Vec<u8>, String)>) -> Result<PullStats> {
    if failed.is_empty() {
        Ok(stats)
    } else {
        Err(Error::PullFailed {
            failed,
            stats: Box::new(stats),
        })
    }
}

/// Spawns a local `rsync --server --sender` (at `rsync_path`) for
/// `remote_path` and pulls into `dest`.
pub async fn pull_local(
    rsync_path: &OsStr,
    remote_path: &[u8],
    dest: &Path,
    opts: &PullOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<PullStats> {
    check_opts(opts)?;
    let argv = args::sender_args(&opts.sender, &[remote_path])?;
    let conn = transport::spawn_local(rsync_path, &argv)?;
    pull(conn, dest, opts, events).await
}

/// Receives the files of a streaming pull ([`pull_stream`]) instead of a
/// local directory: the caller decides what to request and where each
/// file's bytes go (a verifier, a decryptor, an archive), so nothing has to
/// be written to disk first.
///
/// The calls are made on the session's task, in this order: [`select`]
/// once, then for each requested file [`begin`], [`data`] with its bytes in
/// order, and [`end`]. Files arrive in list order; a file whose whole-file
/// checksum failed in the first pass arrives again in the redo pass. If the
/// session itself fails half-way through a file, `end` is not called: the
/// sink must discard what it got when it is dropped. The methods block the
/// task while they work; a slow sink slows the transfer (backpressure), it
/// never makes memory grow.
///
/// [`select`]: PullSink::select
/// [`begin`]: PullSink::begin
/// [`data`]: PullSink::data
/// [`end`]: PullSink::end
pub trait PullSink: Send {
    /// The received list (sorted and validated as for [`pull`]): returns,
    /// for each entry, whether to request it. Only regular files can be
    /// requested; the answer for other entries is ignored.
    fn select(&mut self, list: &[FileEntry]) -> Vec<bool>;
    /// The data of `list[index]` begins; `redo` is set in the redo pass. An
    /// error skips this attempt: no `data` or `end` calls follow, and the
    /// entry is reported failed.
    fn begin(
        &mut self,
        index: usize,
        entry: &FileEntry,
        redo: bool,
    ) -> std::result::Result<(), String>;
    /// The next bytes of the file. After an error the rest of the file is
    /// read from the wire and dropped, and `end` still follows.
    fn data(&mut self, bytes: &[u8]) -> std::result::Result<(), String>;
    /// The file's data is complete; `digest_ok` says whether rsync's
    /// whole-file checksum matched. If it did not in the first pass, the
    /// file is requested again; in the redo pass it is reported failed.
    fn end(&mut self, digest_ok: bool) -> std::result::Result<(), String>;
}

/// Pulls from a remote `rsync --server --sender` (started with
/// [`args::sender_args`]) into `sink`: no local directory is involved and
/// no basis is used (every requested file comes as literal data).
///
/// Returns [`Error::PullFailed`] when some files failed (a sink error, or a
/// checksum that failed twice) after the session itself ended cleanly.
pub async fn pull_stream<R, W>(
    conn: Connection<R, W>,
    sink: &mut dyn PullSink,
    opts: &PullOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<PullStats>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    check_opts(opts)?;
    let (stats, _, failed) = session(conn, None, Some(sink), opts, events).await?;
    per_entry_outcome(stats, failed)
}

/// Spawns a local `rsync --server --sender` for `remote_path` and pulls
/// into `sink` ([`pull_stream`]).
pub async fn pull_stream_local(
    rsync_path: &OsStr,
    remote_path: &[u8],
    sink: &mut dyn PullSink,
    opts: &PullOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<PullStats> {
    check_opts(opts)?;
    let argv = args::sender_args(&opts.sender, &[remote_path])?;
    let conn = transport::spawn_local(rsync_path, &argv)?;
    pull_stream(conn, sink, opts, events).await
}

/// Lists what a remote `rsync --server --sender` would send (list-only
/// mode: nothing is transferred or written). Start the server with
/// [`args::sender_args`] and `recursive` as wanted (non-recursive: give the
/// directory with a trailing `/` to list its entries). Returns the entries
/// in rsync's order: names, sizes, mtimes, modes, symlink targets.
pub async fn list<R, W>(
    conn: Connection<R, W>,
    opts: &PullOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Vec<FileEntry>>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    check_opts(opts)?;
    let (_, entries, _) = session(conn, None, None, opts, events).await?;
    Ok(entries)
}

/// Spawns a local `rsync --server --sender` and lists `remote_path`.
pub async fn list_local(
    rsync_path: &OsStr,
    remote_path: &[u8],
    recursive: bool,
    opts: &PullOptions,
) -> Result<Vec<FileEntry>> {
    check_opts(opts)?;
    let mut so = opts.sender.clone();
    so.recursive = recursive;
    let argv = args::sender_args(&so, &[remote_path])?;
    let conn = transport::spawn_local(rsync_path, &argv)?;
    list(conn, opts, &mut |_| {}).await
}

fn check_opts(opts: &PullOptions) -> Result<()> {
    if !(handshake::MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&opts.protocol) {
        return Err(Error::InvalidInput(format!(
            "protocol must be {}..={PROTOCOL_VERSION}",
            handshake::MIN_PROTOCOL_VERSION
        )));
    }
    if opts.checksums.is_empty() {
        return Err(Error::InvalidInput(
            "no checksum algorithms to offer".into(),
        ));
    }
    filter::validate(&opts.filters)
}

type Outcome = (PullStats, Vec<FileEntry>, Vec<(Vec<u8>, String)>);

async fn session<R, W>(
    conn: Connection<R, W>,
    dest: Option<Dest>,
    sink: Option<&mut dyn PullSink>,
    opts: &PullOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Outcome>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let Connection {
        reader,
        writer,
        mut remote,
    } = conn;
    let mut messages = transport::MessageLog::default();
    let res = {
        let mut tee = |e: Event<'_>| {
            messages.record(&e);
            events(e);
        };
        run(reader, writer, dest, sink, opts, &mut tee).await
    };
    transport::conclude(res, remote.as_mut(), opts.exit_grace, messages).await
}

async fn run<R, W>(
    reader: R,
    mut writer: W,
    dest: Option<Dest>,
    mut sink: Option<&mut dyn PullSink>,
    opts: &PullOptions,
    events: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Outcome>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut reader = BufReader::new(reader);
    let neg = handshake::client_handshake(&mut reader, &mut writer, opts.protocol, &opts.checksums)
        .await?;
    let proto = neg.protocol;
    let (tx, rx) = mux::channel();
    let demux = mux::demux(reader, tx);
    let params = SumParams {
        kind: neg.checksum,
        seed: neg.seed,
        proper_seed_order: neg.proper_seed_order(),
    };
    let timeout = opts.sender.timeout_secs.map(Duration::from_secs);
    let protocol_side = async move {
        let mut conn = Conn::new(rx, WireOut::new(writer, proto), proto, events, timeout);
        filter::encode(conn.out.buf(), &opts.filters);
        conn.out.flush().await?;
        let list = flist::recv_list(
            &mut conn,
            neg.varint_flist(),
            opts.sender.preserve_links,
            &opts.limits,
        )
        .await?;
        let entries = list.entries;
        let wanted = match sink.as_deref_mut() {
            Some(s) => {
                let w = s.select(&entries);
                if w.len() != entries.len() {
                    return Err(Error::InvalidInput(format!(
                        "the sink selected {} of {} entries",
                        w.len(),
                        entries.len()
                    )));
                }
                Some(w)
            }
            None => None,
        };
        // The generator takes the writer; the receiver keeps reading here.
        let (mut out, mut conn) = conn.replace_out(WireOut::new(tokio::io::sink(), proto));
        let shared = Shared {
            dest: dest.map(Mutex::new),
            requested: Mutex::new(Default::default()),
        };
        let (to_gen, mut from_recv) = mpsc::unbounded_channel();
        let mut gen_report = GenReport::default();
        let mut recv_report = RecvReport::default();
        let gctx = GenCtx {
            list: &entries,
            shared: &shared,
            wanted: wanted.as_deref(),
            params,
            protocol: proto,
            io_timeout: timeout,
        };
        let rctx = RecvCtx {
            list: &entries,
            shared: &shared,
            params,
        };
        let gen_side = async {
            generator::generate(&mut out, &gctx, &mut from_recv, &mut gen_report).await?;
            out.shutdown().await
        };
        let recv_side = async {
            let r = receiver::receive(&mut conn, &rctx, sink, &to_gen, &mut recv_report).await;
            drop(to_gen);
            r?;
            conn.expect_eof().await
        };
        tokio::try_join!(gen_side, recv_side)?;
        // Directory modes and times last: writing into a directory changes
        // its mtime, and a read-only mode would have blocked the writes.
        // The receiver reported its failures as they happened; the
        // generator's and the directories' are reported here.
        let mut local: Vec<(usize, String)> = gen_report.failed;
        if let Some(d) = &shared.dest {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            for (i, e) in entries.iter().enumerate().rev() {
                if e.is_dir()
                    && let Err(err) = d.finish_dir(e)
                {
                    local.push((i, err.to_string()));
                }
            }
        }
        for (i, err) in &local {
            conn.emit(Event::LocalError {
                name: &entries[*i].name,
                error: err.clone(),
            });
        }
        let mut failed = local;
        failed.extend(recv_report.failed);
        failed.sort_by_key(|f| f.0);
        failed.dedup_by_key(|f| f.0);
        let stats = PullStats {
            entries: entries.len() as u64,
            files_requested: gen_report.requested,
            files_transferred: recv_report.files_transferred,
            files_redone: recv_report.files_redone,
            files_up_to_date: gen_report.up_to_date,
            dirs: gen_report.dirs,
            symlinks: gen_report.symlinks,
            literal_bytes: recv_report.literal_bytes,
            matched_bytes: recv_report.matched_bytes,
            total_bytes: recv_report.total_bytes,
            bytes_sent: out.bytes_written,
            bytes_received: conn.bytes_read,
            remote_no_send: conn.msgs.no_send,
            remote_errors: conn.msgs.errors,
            remote_io_error: conn.msgs.io_error | list.io_error,
            remote_total_size: recv_report.remote_stats[2],
            protocol: proto,
            checksum: neg.checksum.name(),
        };
        let failed = failed
            .into_iter()
            .map(|(i, e)| (entries[i].name.to_vec(), e))
            .collect();
        Ok::<_, Error>((stats, entries, failed))
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
