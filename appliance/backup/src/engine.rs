//! One backup run: every selected share into a new snapshot on the target.
//!
//! Per share:
//! 1. list the share's snapshots on the target (creating the share's folder on the first run);
//! 2. walk the share in walk order, merging the previous index: a file whose size, mtime, ctime and inode
//!    match its index record is taken as is (sealed size and hash from the index, nothing read);
//! 3. every [`BackupOptions::batch_entries`] entries (five times as many while none of them is
//!    to be read), push the batch into the new snapshot folder in one
//!    rsync session with `--link-dest` to the previous snapshot (and to newer incomplete ones, so an
//!    interrupted run's work is reused). Changed files of sealed shares are read once to learn their sealed
//!    size (the file list needs it before any data is sent) and once more, sealed, when the receiver asks
//!    for them — the receiver does not ask when the previous snapshot already has them;
//! 4. push the sealed manifest last: its presence marks the snapshot complete;
//! 5. commit the new index, then delete what the retention policy no longer keeps.
//!
//! An interrupted run leaves an incomplete snapshot (no manifest) whose files are whole (rsync writes each
//! file to a temporary name and renames it); the next run links to it and finishes the work, and the
//! incomplete folder is removed once a newer complete snapshot exists.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use jiff::Timestamp;
use remote::Remote;
use rsync_wire::{AltDest, Event, FileEntry, FileList, MessageKind, PushOptions};
use seal::names::{SealedName, is_short_form, seal_name};
use seal::{Keys, MasterKey, RelPath, SealOptions};

use crate::Error;
use crate::arena::{Arena, Span, TooLong};
use crate::config::{Config, ShareConfig};
use crate::content::{
    BatchContent, FileSpec, Outcome, Outcomes, ReadCounters, RemoteSize, Source, Sources,
};
use crate::index::{
    INDEX_FORMAT, IndexEntry, IndexHeader, IndexReader, IndexRecord, IndexWriter, RecordSpan,
    index_path,
};
use crate::manifest::{
    EntryKind, MANIFEST_FORMAT, MANIFEST_NAME, ManifestEntryOf, ManifestHeader, ManifestWriter,
    sealed_identity,
};
use crate::progress::{Counters, Progress};
use crate::remote_ops::{self, ShareOnTarget};
use crate::report::{RunReport, ShareReport, ShareStatus};
use crate::snapshot::{self, SnapshotId};
use crate::walk::{self, Kind, Stat, Walker};

/// Choices for one run.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Shares to back up (all when empty).
    pub shares: Vec<String>,
    /// Walk and compare, list the target, plan retention; write nothing anywhere.
    pub dry_run: bool,
    /// Entries per rsync session, five times as many when none is to be read (bounds memory: below
    /// 1 KiB each, up to two batches at once).
    pub batch_entries: usize,
    /// Passphrase of a wrapped key file.
    pub passphrase: Option<Vec<u8>>,
    /// The run's start time (default: now); names the snapshots.
    pub now: Option<Timestamp>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            shares: Vec::new(),
            dry_run: false,
            batch_entries: 1024,
            passphrase: None,
            now: None,
        }
    }
}

type ProgressFn<'p> = dyn FnMut(&Progress<'_>) + Send + 'p;

/// Runs a backup of the selected shares. Never fails as a whole: problems are in the report.
pub async fn run_backup(
    config: &Config,
    opts: &BackupOptions,
    progress: &mut ProgressFn<'_>,
) -> RunReport {
    let now = opts.now.unwrap_or_else(Timestamp::now);
    let mut report = RunReport {
        started: now.to_string(),
        target: remote_ops::describe(&config.target),
        shares: Vec::new(),
        error: None,
    };
    if let Err(e) = run(config, opts, now, progress, &mut report).await {
        report.error = Some(e.to_string());
    }
    if !opts.dry_run
        && let Err(e) = save_report(&config.state_dir, &report)
    {
        report.error.get_or_insert(e.to_string());
    }
    report
}

/// Writes the report as JSON into `<state_dir>/reports/`, for the history.
fn save_report(state_dir: &Path, report: &RunReport) -> Result<(), Error> {
    let dir = state_dir.join("reports");
    let ctx = || format!("saving the run report in {}", dir.display());
    fs::create_dir_all(&dir).map_err(|e| Error::new(ctx(), e))?;
    let name = report.started.replace(':', "");
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::new(ctx(), e))?;
    crate::replace_durably(&dir.join(format!("{name}.json")), &json)
        .map_err(|e| Error::new(ctx(), e))
}

async fn run(
    config: &Config,
    opts: &BackupOptions,
    now: Timestamp,
    progress: &mut ProgressFn<'_>,
    report: &mut RunReport,
) -> Result<(), Error> {
    let shares = config
        .select_shares(&opts.shares)
        .map_err(|e| Error::new("choosing shares", e))?;
    let _lock = if opts.dry_run {
        None
    } else {
        Some(crate::lock::StateLock::acquire_within(&config.state_dir, crate::lock::GRACE).await?)
    };
    if !opts.dry_run {
        // What a killed run left there is of no use (and nobody else's while the folder is locked). Left
        // in place it costs room, not correctness: the run goes on.
        let tmp = config.state_dir.join("tmp");
        if let Err(e) = crate::manifest::remove_stale(&tmp) {
            tracing::warn!(folder = %tmp.display(), error = %e, "stale manifest files not removed");
        }
    }
    let key = MasterKey::load(&config.key_file, opts.passphrase.as_deref())
        .map_err(|e| Error::new(format!("key file {}", config.key_file.display()), e))?;
    let keys = key.derive_keys();
    let target = remote_ops::remote_target(&config.target);
    let remote = Remote::connect(&target).await.map_err(|e| {
        Error::new(
            format!("connecting to {}", remote_ops::describe(&config.target)),
            e,
        )
    })?;
    for share in shares {
        let ctx = Ctx {
            config,
            keys: &keys,
            remote: &remote,
            opts,
            now,
        };
        let r = backup_share(&ctx, share, progress).await;
        progress(&Progress::ShareFinished { report: &r });
        report.shares.push(r);
    }
    let _ = remote.close().await;
    Ok(())
}

struct Ctx<'a> {
    config: &'a Config,
    keys: &'a Keys,
    remote: &'a Remote,
    opts: &'a BackupOptions,
    now: Timestamp,
}

async fn backup_share(
    ctx: &Ctx<'_>,
    share: &ShareConfig,
    progress: &mut ProgressFn<'_>,
) -> ShareReport {
    let started = Instant::now();
    let mut report = ShareReport::new(&share.name);
    let result = share_run(ctx, share, &mut report, progress).await;
    match result {
        Err(e) => {
            report.status = ShareStatus::Failed;
            report.error = Some(e.to_string());
        }
        Ok(()) if ctx.opts.dry_run => report.status = ShareStatus::DryRun,
        Ok(()) if report.counters.failed > 0 => report.status = ShareStatus::Partial,
        Ok(()) => report.status = ShareStatus::Ok,
    }
    report.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        share = %share.name,
        status = ?report.status,
        files = report.counters.files,
        read = report.counters.bytes_read,
        literal = report.counters.literal_bytes,
        failed = report.counters.failed,
        seconds = report.seconds,
        "share finished"
    );
    report
}

/// Maps plaintext paths to the names used on the target, folder by folder (the walk is depth-first, so
/// the folders above the current entry are a stack).
struct Names {
    keys: Option<Keys>,
    /// (plaintext path, target path, the folder's list entry) of the folders above the current entry.
    stack: Vec<(Vec<u8>, Vec<u8>, FileEntry)>,
}

/// Why a path that does not fit a batch's strings ([`Arena`]) is skipped.
fn too_long(_: TooLong) -> String {
    "the path is too long".into()
}

/// A long name's side file: its target path and content.
type SideFile = (Vec<u8>, Vec<u8>);

impl Names {
    /// The target path of `rel` (written into `out`, where `rel` is at `rel_at`), and its long name's
    /// side file if it has one. `cached` is the sealed name the index kept for `rel` (see
    /// [`IndexEntry::sealed_name`]): used instead of sealing the name again when it has the right form.
    fn map(
        &mut self,
        rel: &[u8],
        rel_at: Span,
        cached: Option<&[u8]>,
        out: &mut Arena,
    ) -> Result<(Span, Option<SideFile>), String> {
        let (parent, name) = match memchr::memrchr(b'/', rel) {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        while let Some(top) = self.stack.last() {
            if top.0 == parent {
                break;
            }
            self.stack.pop();
        }
        let remote_parent: &[u8] = match self.stack.last() {
            Some(top) => &top.1,
            None if parent.is_empty() => b"",
            None => return Err("its folder is not in the backup".into()),
        };
        let Some(keys) = &self.keys else {
            return Ok((rel_at, None));
        };
        if let Some(component) = cached.filter(|c| is_short_form(name.len(), c)) {
            let remote = out.push_child(remote_parent, component).map_err(too_long)?;
            return Ok((remote, None));
        }
        let sealed = seal_name(keys, parent, name).map_err(|e| e.to_string())?;
        let remote = out
            .push_child(remote_parent, sealed.component().as_bytes())
            .map_err(too_long)?;
        let side = match &sealed {
            SealedName::Long {
                side_file,
                side_content,
                ..
            } => Some((
                if remote_parent.is_empty() {
                    side_file.as_bytes().to_vec()
                } else {
                    [remote_parent, b"/", side_file.as_bytes()].concat()
                },
                side_content.as_bytes().to_vec(),
            )),
            SealedName::Short(_) => None,
        };
        Ok((remote, side))
    }

    /// Enters folder `rel`, whose target path is `remote` and list entry `entry` (without its name).
    fn push_dir(&mut self, rel: &[u8], remote: &[u8], entry: &FileEntry) {
        let entry = FileEntry {
            name: Bytes::copy_from_slice(remote),
            ..entry.clone()
        };
        self.stack.push((rel.to_vec(), remote.to_vec(), entry));
    }
}

/// An entry of the walk, kept until its batch is pushed.
#[derive(Clone)]
struct Walked {
    /// Cut out of its batch's strings when the batch is complete ([`Batch::cut_strings`]).
    rel: Bytes,
    kind: EntryKind,
    stat: Stat,
    /// Target size and hash, when known before the push (index, inline content, folders).
    known: Option<(u64, [u8; 32])>,
    /// What few entries have, boxed: most entries of a night are unchanged files, and up to two
    /// batches of thousands are alive at once.
    rare: Option<Box<Rare>>,
    /// An unchanged file whose new index record is its old one byte for byte: where that is in the old
    /// index (see [`IndexWriter::push_same`]).
    same_record: Option<RecordSpan>,
}

/// The fields of a [`Walked`] entry that few entries have.
#[derive(Clone, Default)]
struct Rare {
    /// A symlink's target.
    link: Vec<u8>,
    /// Changed files: how the index recorded it last time (the version the previous snapshot holds).
    recorded: Option<IndexEntry>,
    /// Set when the file kept changing while it was read and the entry stands for the previous version:
    /// why (reported, and the run is partial).
    kept_previous: Option<String>,
}

impl Walked {
    /// A walked entry; its path is given when its batch is complete ([`Batch::cut_strings`]).
    fn new(kind: EntryKind, stat: Stat, known: Option<(u64, [u8; 32])>) -> Walked {
        Walked {
            rel: Bytes::new(),
            kind,
            stat,
            known,
            rare: None,
            same_record: None,
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    fn recorded(&self) -> Option<&IndexEntry> {
        self.rare.as_ref()?.recorded.as_ref()
    }

    fn kept_previous(&self) -> Option<&String> {
        self.rare.as_ref()?.kept_previous.as_ref()
    }
}

/// How many more times a file that changed while it was read is tried in the same run, each in a small
/// session of its own, before it keeps its previous version.
const CHANGED_RETRIES: usize = 2;

/// Makes an entry stand for the version of a file the index recorded, which is the one the previous
/// snapshot holds: the receiver links it from there (same size and time) without asking for content.
/// `None` (nothing changed) when the index has no record of the file.
fn keep_previous(entry: &mut FileEntry, walked: &mut Walked, why: &str) -> Option<Source> {
    let rec = walked.recorded()?;
    entry.kind = rsync_wire::EntryKind::File {
        size: rec.remote_size,
    };
    entry.mtime = rec.mtime;
    entry.mtime_nsec = rec.mtime_nsec;
    let stat = Stat {
        size: rec.size,
        mtime: rec.mtime,
        mtime_nsec: rec.mtime_nsec,
        ctime: rec.ctime,
        ctime_nsec: rec.ctime_nsec,
        ino: rec.ino,
        dev: walked.stat.dev,
        perms: walked.stat.perms,
    };
    let known = Some((rec.remote_size, rec.hash));
    walked.stat = stat;
    walked.known = known;
    walked.rare_mut().kept_previous = Some(format!(
        "{why}; this snapshot keeps the version of the previous backup"
    ));
    Some(Source::Previous)
}

/// One rsync session's worth of entries.
#[derive(Default)]
struct Batch {
    entries: Vec<FileEntry>,
    sources: Vec<Source>,
    /// For entries of the walk (not repeated parent folders or side files): what goes to the manifest.
    walked: Vec<Option<Walked>>,
    walked_count: usize,
    /// How many of its files are to be read (not known from the index) when pushed, as they were added.
    to_read: usize,
    /// The target paths and walked paths of its entries as they are walked, and where each is:
    /// `name_at[i]` for `entries[i]` (`None`: the entry has its name), `rel_at[i]` for `walked[i]`. Cut
    /// into the entries once the batch is complete ([`Batch::cut_strings`]).
    strings: Arena,
    name_at: Vec<Option<Span>>,
    rel_at: Vec<Option<Span>>,
}

impl Batch {
    /// An empty batch with room for `n` entries: the vectors are allocated once at their final size (a
    /// batch of `batch_entries` walked entries plus its parent folders went just over a power of two, and
    /// doubling left most of a second batch's worth unused, several batches at a time).
    fn with_capacity(n: usize) -> Batch {
        Batch {
            entries: Vec::with_capacity(n),
            sources: Vec::with_capacity(n),
            walked: Vec::with_capacity(n),
            walked_count: 0,
            to_read: 0,
            strings: Arena::default(),
            name_at: Vec::with_capacity(n),
            rel_at: Vec::with_capacity(n),
        }
    }

    /// Adds an entry whose name is in the batch's strings at `name_at`, and whose walked path (if it is
    /// an entry of the walk) at `rel_at`.
    fn push_at(
        &mut self,
        entry: FileEntry,
        name_at: Span,
        source: Source,
        walked: Option<(Walked, Span)>,
    ) {
        let (walked, rel_at) = walked.unzip();
        self.add(entry, Some(name_at), source, walked, rel_at);
    }

    /// Gives the entries their names and walked paths, cut out of the batch's strings.
    fn cut_strings(&mut self) {
        let strings = std::mem::take(&mut self.strings).cut();
        for (entry, at) in self
            .entries
            .iter_mut()
            .zip(std::mem::take(&mut self.name_at))
        {
            if let Some(at) = at {
                entry.name = strings.get(at);
            }
        }
        for (walked, at) in self.walked.iter_mut().zip(std::mem::take(&mut self.rel_at)) {
            if let (Some(w), Some(at)) = (walked, at) {
                w.rel = strings.get(at);
            }
        }
    }

    /// Adds an entry that has its name.
    fn push(&mut self, entry: FileEntry, source: Source, walked: Option<Walked>) {
        self.add(entry, None, source, walked, None);
    }

    fn add(
        &mut self,
        entry: FileEntry,
        name_at: Option<Span>,
        source: Source,
        walked: Option<Walked>,
        rel_at: Option<Span>,
    ) {
        self.name_at.push(name_at);
        self.rel_at.push(rel_at);
        if walked.is_some() {
            self.walked_count += 1;
        }
        if matches!(source, Source::File(_)) && walked.as_ref().is_none_or(|w| w.known.is_none()) {
            self.to_read += 1;
        }
        self.entries.push(entry);
        self.sources.push(source);
        self.walked.push(walked);
    }
}

/// A fresh look at a file that changed while it was read: its stat now and its size on the target (see
/// [`remote_size`]); and the nanoseconds to send (one off when the time equals the recorded one, as in
/// [`add_entry`]).
fn look_again(
    spec: &FileSpec,
    recorded: Option<&IndexEntry>,
    sizing: Sizing,
    keys: &Keys,
    options: SealOptions,
    counters: &ReadCounters,
) -> std::io::Result<(FileSpec, u32)> {
    let meta = fs::symlink_metadata(&spec.path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("no longer a regular file"));
    }
    let stat = Stat::of(&meta);
    let nsec = nsec_to_send(recorded, &stat);
    let mut fresh = FileSpec {
        path: spec.path.clone(),
        stat,
        sealed_from: spec.sealed_from,
        remote_size: RemoteSize::Unknown,
    };
    fresh.remote_size = match remote_size(&fresh.stat, fresh.is_sealed(), sizing) {
        RemoteSize::Unknown => RemoteSize::Exact(crate::content::sealed_size(
            &fresh, keys, options, counters,
        )?),
        known => known,
    };
    Ok((fresh, nsec))
}

/// How a run announces the size of a changed sealed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sizing {
    /// An upper bound, and the file is read once. Right when no copy on the target can pass the receiver's
    /// quick check: the previous snapshot holds what the index recorded, and a changed file is sent with
    /// another mtime than that (see [`nsec_to_send`]), a new file has no copy there at all.
    Bound,
    /// The exact sealed size, learned by a sizing pass before the push. Needed where the target may hold
    /// this very version already, with its size and mtime: after an interrupted run (its incomplete
    /// snapshot is a basis) or when the index is lost. The quick check then links that copy instead of
    /// receiving the file again.
    Exact,
}

/// Which [`Sizing`] a share's run takes: exact where the target has snapshots that the index may not
/// describe (one is incomplete, or there is no usable index).
fn sizing_for(on_target: &ShareOnTarget, index_usable: bool) -> Sizing {
    let unknown_copies = on_target.snapshots.iter().any(|s| !s.1)
        || (!index_usable && !on_target.snapshots.is_empty());
    if unknown_copies {
        Sizing::Exact
    } else {
        Sizing::Bound
    }
}

/// The size a changed file's entry announces, before any read: a plain file's own size; for a sealed
/// file, the bound, or [`RemoteSize::Unknown`] when the sizing pass must learn it.
fn remote_size(st: &Stat, sealed: bool, sizing: Sizing) -> RemoteSize {
    match (sealed, sizing) {
        (false, _) => RemoteSize::Exact(st.size),
        (true, Sizing::Bound) => RemoteSize::AtMost(seal::sealed_len_bound(st.size)),
        (true, Sizing::Exact) => RemoteSize::Unknown,
    }
}

/// The nanoseconds of a changed file's mtime to send: its own, or one off when they equal the recorded
/// ones (`recorded` is the index's record of a file that changed), so that the receiver's quick check
/// against the previous snapshot's copy fails and it asks for the new content (see [`add_entry`]).
fn nsec_to_send(recorded: Option<&IndexEntry>, st: &Stat) -> u32 {
    match recorded {
        Some(ix) if ix.mtime == st.mtime && ix.mtime_nsec == st.mtime_nsec => st.mtime_nsec ^ 1,
        _ => st.mtime_nsec,
    }
}

/// Points a file's entry at what a fresh look found (size on the target, time, permissions).
fn point_at(entry: &mut FileEntry, fresh: &FileSpec, nsec: u32) {
    entry.kind = rsync_wire::EntryKind::File {
        size: fresh.remote_size.announced(),
    };
    entry.mtime = fresh.stat.mtime;
    entry.mtime_nsec = nsec;
    entry.perms = fresh.stat.perms;
}

/// Whether folder `dir` lies above `path` (both `/`-separated, relative to the snapshot).
fn is_ancestor(dir: &[u8], path: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

fn root_entry(stat: &Stat) -> FileEntry {
    FileEntry::dir(".", stat.mtime, stat.perms).with_nsec(stat.mtime_nsec)
}

/// Everything one share's run carries from batch to batch.
struct ShareRun<'a> {
    ctx: &'a Ctx<'a>,
    share: &'a ShareConfig,
    snapshot: String,
    link_dest: Vec<Vec<u8>>,
    root: Stat,
    seal_options: SealOptions,
    counters: Arc<ReadCounters>,
    index: Option<IndexWriter>,
    manifest: Option<ManifestWriter>,
    sizing: Sizing,
}

async fn share_run(
    ctx: &Ctx<'_>,
    share: &ShareConfig,
    report: &mut ShareReport,
    progress: &mut ProgressFn<'_>,
) -> Result<(), Error> {
    let cfg = ctx.config;
    let name = &share.name;
    let walker = Walker::new(&share.path, share.excludes.clone())
        .map_err(|e| Error::new(format!("share {name}: {}", share.path.display()), e))?;
    let on_target = remote_ops::list_share(ctx.remote, &cfg.target, name).await?;
    let mut snap = SnapshotId::at(ctx.now);
    if let Some(last) = on_target.snapshots.last()
        && snap <= last.0
    {
        snap = last.0.next();
    }
    let snapshot = snap.to_string();
    let header = IndexHeader {
        format: INDEX_FORMAT,
        key_id: ctx.keys.key_id(),
        encrypt: share.encrypt,
        encrypt_names: share.encrypt_names,
        compress: share.compress,
    };
    let index_file = index_path(&cfg.state_dir, name);
    let mut old_index = IndexReader::open(&index_file, &header);
    let sizing = sizing_for(&on_target, old_index.is_usable());
    if ctx.opts.dry_run {
        progress(&Progress::ShareStarted {
            share: name,
            snapshot: None,
        });
        dry_run(
            share,
            walker,
            &mut old_index,
            &on_target,
            snap,
            report,
            progress,
        );
        return Ok(());
    }
    report.snapshot = Some(snapshot.clone());
    tracing::info!(share = %name, %snapshot, snapshots = on_target.snapshots.len(), "backing up");
    progress(&Progress::ShareStarted {
        share: name,
        snapshot: Some(&snapshot),
    });
    if !on_target.exists {
        remote_ops::create_share_dir(ctx.remote, &cfg.target, name, ctx.now.as_second()).await?;
    }
    // Link to the newest complete snapshot and to newer incomplete ones (an interrupted run's files).
    let newest_complete = on_target.newest_complete();
    let mut link_dest: Vec<Vec<u8>> = Vec::new();
    for (id, complete) in on_target.snapshots.iter().rev() {
        if link_dest.len() >= rsync_wire::args::MAX_BASIS_DIRS {
            break;
        }
        if Some(*id) == newest_complete || (!complete && Some(*id) > newest_complete) {
            link_dest.push(remote_ops::link_dest_path(&cfg.target, name, id));
        }
    }
    let state_ctx =
        |e: std::io::Error| Error::new(format!("state folder {}", cfg.state_dir.display()), e);
    let mut run = ShareRun {
        ctx,
        share,
        snapshot: snapshot.clone(),
        link_dest,
        root: walker.root.clone(),
        seal_options: SealOptions {
            compress: share.compress,
        },
        counters: Arc::new(ReadCounters::default()),
        sizing,
        index: Some(IndexWriter::create(&index_file, &header).map_err(state_ctx)?),
        manifest: Some(
            ManifestWriter::create(
                &cfg.state_dir.join("tmp"),
                &ManifestHeader {
                    format: MANIFEST_FORMAT,
                    share: name.clone(),
                    snapshot: snapshot.clone(),
                    encrypt: share.encrypt,
                    encrypt_names: share.encrypt_names,
                },
                ctx.keys,
            )
            .map_err(state_ctx)?,
        ),
    };
    if let Some(p) = &old_index.problem {
        report.notes.push(format!("index: {p}"));
    }
    let preparer = Preparer {
        share: share.clone(),
        keys: ctx.keys.clone(),
        seal_options: run.seal_options,
        names: Names {
            keys: share.encrypt_names.then(|| ctx.keys.clone()),
            stack: Vec::new(),
        },
        old_index,
        walker: Some(walker),
        batch_entries: ctx.opts.batch_entries.max(1),
        last_read_nothing: false,
        sizing,
    };
    // The walk (stat, index merge, sizing of changed files) runs one batch ahead of the push, on its own
    // thread: the target works on one batch while the next is prepared, and the walk starts a batch only
    // once the one before it was taken, so that two batches are alive at most (see `light_batch_entries`).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Prepared>(1);
    let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
    let walk_thread = std::thread::Builder::new()
        .name("offsite-walk".into())
        .spawn(move || preparer.run(tx, taken_rx))
        .map_err(|e| Error::new(format!("share {name}: starting the walk"), e))?;
    // One batch a session. A batch is recorded (index, manifest; files that changed while read tried
    // again) at its session's goodbye, when its outcomes are final; its server exits while the next batch
    // is pushed (see `rsync_wire::PendingExit`), and a failed exit fails the share, which then commits
    // neither.
    let mut outcome = Ok(());
    let mut exiting: Option<Started> = None;
    loop {
        let Some(first) = rx.recv().await else {
            // Every session is ended, also after one failed: none is left half-closed.
            if let Some(prev) = exiting.take() {
                let ended = prev.end().await;
                if outcome.is_ok() {
                    outcome = ShareRun::settle(ended, report);
                }
            }
            break;
        };
        // The walk may prepare the next batch now (a walk that has ended does not listen).
        let _ = taken_tx.send(());
        let batch = accept_batch(first, &run, report, progress, name);
        let prev = exiting.take();
        let end_prev = async move {
            match prev {
                Some(started) => Some(started.end().await),
                None => None,
            }
        };
        let begin = run.begin_batch(batch);
        let (ended, started) = tokio::join!(end_prev, begin);
        let mut failed = None;
        if let Some(ended) = ended
            && let Err(e) = ShareRun::settle(ended, report)
        {
            failed = Some(e);
        }
        let current = match started {
            Ok(mut cur) => {
                cur.started.report(name, report, progress);
                if failed.is_none()
                    && let Err(e) = run.record_batch(cur.record, report, progress).await
                {
                    failed = Some(e);
                }
                Some(cur.started)
            }
            Err(e) => {
                failed.get_or_insert(e);
                None
            }
        };
        if let Some(e) = failed {
            if let Some(started) = current {
                started.end().await;
            }
            outcome = Err(e);
            break;
        }
        exiting = current;
    }
    // A walk waiting to be told its batch was taken, or to hand one over, stops.
    drop(rx);
    drop(taken_tx);
    let walked = walk_thread.join();
    outcome?;
    if walked.is_err() {
        return Err(Error::new(
            format!("share {name}"),
            "the walk thread failed",
        ));
    }
    run.push_manifest(report).await?;
    if let Some(index) = run.index.take() {
        index.commit().map_err(state_ctx)?;
    }
    let prune = prune_plan(&on_target, snap, share);
    if !prune.is_empty() {
        match remote_ops::delete_snapshots(
            ctx.remote,
            &cfg.target,
            name,
            &prune,
            ctx.now.as_second(),
        )
        .await
        {
            Ok(()) => {
                tracing::info!(share = %name, pruned = prune.len(), "retention applied");
                report.pruned = prune.iter().map(ToString::to_string).collect();
            }
            Err(e) => {
                tracing::warn!(share = %name, error = %e, "retention failed");
                report.notes.push(format!("retention: {e}"));
            }
        }
    }
    Ok(())
}

/// Counts a prepared batch into the report (its entries, and what the walk skipped); the batch to push.
fn accept_batch(
    p: Prepared,
    run: &ShareRun<'_>,
    report: &mut ShareReport,
    progress: &mut ProgressFn<'_>,
    share: &str,
) -> Batch {
    report.counters.entries += p.counts.entries;
    report.counters.files += p.counts.files;
    report.counters.bytes += p.counts.bytes;
    report.counters.unchanged += p.counts.unchanged;
    // Reads for sizing count as reads of the share.
    run.counters.add(&p.counts);
    for (rel, reason) in p.skips {
        skipped(report, progress, share, &rel, reason);
    }
    tracing::debug!(share, entries = p.batch.entries.len(), "pushing a batch");
    p.batch
}

/// An entry that is not backed up: an event for whoever shows progress, and a line in the report.
fn skipped(
    report: &mut ShareReport,
    progress: &mut ProgressFn<'_>,
    share: &str,
    rel: &[u8],
    reason: String,
) {
    progress(&Progress::Skipped {
        share,
        path: rel,
        reason: &reason,
    });
    report.skip(rel, reason);
}

/// What retention removes once `snap` is complete: complete snapshots by the share's policy, and the
/// incomplete ones `snap` supersedes; oldest first.
fn prune_plan(on_target: &ShareOnTarget, snap: SnapshotId, share: &ShareConfig) -> Vec<SnapshotId> {
    let mut complete: Vec<SnapshotId> = on_target
        .snapshots
        .iter()
        .filter(|s| s.1)
        .map(|s| s.0)
        .collect();
    complete.push(snap);
    let mut prune = snapshot::to_delete(&complete, &share.retention);
    prune.extend(on_target.snapshots.iter().filter(|s| !s.1).map(|s| s.0));
    prune.retain(|s| *s != snap);
    prune.sort();
    prune
}

/// Adds one walked entry to the batch; an error names the entry and why it is skipped.
fn add_entry(
    prep: &mut Preparer,
    batch: &mut Batch,
    e: walk::EntryRef<'_>,
    counts: &mut Counters,
) -> Result<(), (Vec<u8>, String)> {
    let share = &prep.share;
    let names = &mut prep.names;
    let old_index = &mut prep.old_index;
    let rel = e.rel;
    let fail = |why: String| (rel.to_vec(), why);
    if !share.encrypt_names && !rel.contains(&b'/') && rel.starts_with(b".offsite") {
        return Err(fail(
            "names starting with .offsite at the top of a share are reserved for the snapshot's own files".into(),
        ));
    }
    // A file's record in the index, looked up first: it may hold the file's sealed name.
    let (recorded, span) = match e.kind {
        Kind::File => old_index.lookup_spanned(rel).unzip(),
        _ => (None, None),
    };
    let cached = recorded
        .map(|r| &r.sealed_name[..])
        .filter(|n| !n.is_empty());
    let rel_at = batch.strings.push(&[rel]).map_err(too_long).map_err(fail)?;
    let (remote_at, side) = names
        .map(rel, rel_at, cached, &mut batch.strings)
        .map_err(fail)?;
    let st = &e.stat;
    if let Some((side_name, content)) = side {
        let len = content.len() as u64;
        batch.push(
            FileEntry::file(side_name, len, st.mtime, 0o600),
            Source::Inline(content.into()),
            None,
        );
    }
    match e.kind {
        Kind::Dir => {
            let entry = FileEntry::dir(Bytes::new(), st.mtime, st.perms).with_nsec(st.mtime_nsec);
            names.push_dir(rel, batch.strings.get(remote_at), &entry);
            let walked = Walked::new(EntryKind::Dir, e.stat, Some((0, [0; 32])));
            batch.push_at(entry, remote_at, Source::None, Some((walked, rel_at)));
        }
        Kind::Symlink(target) => {
            if share.encrypt {
                // The target is a path of the share: sealed like file content, restored as a link.
                let sealed_as = RelPath::new(rel.to_vec()).map_err(|x| fail(x.to_string()))?;
                let mut sealed = Vec::new();
                let stats = seal::seal(
                    &prep.keys,
                    &sealed_as,
                    prep.seal_options,
                    &target[..],
                    &mut sealed,
                )
                .map_err(|x| fail(x.to_string()))?;
                let len = sealed.len() as u64;
                batch.push_at(
                    FileEntry::file(Bytes::new(), len, st.mtime, 0o600).with_nsec(st.mtime_nsec),
                    remote_at,
                    Source::Inline(sealed.into()),
                    Some((
                        Walked {
                            rare: Some(Box::new(Rare {
                                link: target,
                                ..Rare::default()
                            })),
                            ..Walked::new(EntryKind::Symlink, e.stat, Some((len, stats.mac)))
                        },
                        rel_at,
                    )),
                );
            } else {
                let entry = FileEntry::symlink(Bytes::new(), target.clone(), st.mtime)
                    .with_nsec(st.mtime_nsec);
                batch.push_at(
                    entry,
                    remote_at,
                    Source::None,
                    Some((
                        Walked {
                            rare: Some(Box::new(Rare {
                                link: target,
                                ..Rare::default()
                            })),
                            ..Walked::new(EntryKind::Symlink, e.stat, Some((0, [0; 32])))
                        },
                        rel_at,
                    )),
                );
            }
        }
        Kind::File => {
            counts.files += 1;
            counts.bytes += st.size;
            let (known, same_record) = match recorded {
                Some(ix) if ix.matches(st) => {
                    counts.unchanged += 1;
                    // Path, stat fields, target size and hash as recorded; with the same sealed name
                    // kept, the new record is the old one.
                    let same_name = ix.sealed_name
                        == name_to_keep(share.encrypt_names, rel, batch.strings.get(remote_at));
                    (Some((ix.remote_size, ix.hash)), span.filter(|_| same_name))
                }
                _ => (None, None),
            };
            // The record is kept for a changed file only: it is also what the file falls back to if it
            // keeps changing while read.
            let recorded = if known.is_none() {
                recorded.cloned()
            } else {
                None
            };
            // A changed file whose mtime is the recorded one to the nanosecond (a write that put the
            // old mtime back, or two writes within one tick of a coarse clock) would pass rsync's quick
            // check against the previous snapshot's copy (same size and time) and be linked to the old
            // content. The target's copy gets a time one nanosecond off instead: the receiver then asks
            // for it. Restores take times from the manifest, which keeps the real one.
            let sent_nsec = nsec_to_send(recorded.as_ref(), st);
            let remote_size = match &known {
                Some((size, _)) => RemoteSize::Exact(*size),
                None => remote_size(st, share.encrypt, prep.sizing),
            };
            let entry = FileEntry::file(Bytes::new(), remote_size.announced(), st.mtime, st.perms)
                .with_nsec(sent_nsec);
            // A file to read must have a path it can be sealed under (checked now, so a bad one is
            // skipped before the push; a file known from the index passed this when it was read).
            if share.encrypt && known.is_none() {
                RelPath::new(rel).map_err(|x| fail(x.to_string()))?;
            }
            // An unchanged file's spec is made only if the receiver asks for it (`Slots`).
            let source = if known.is_some() {
                Source::Unchanged
            } else {
                Source::File(Box::new(FileSpec::in_share(
                    &share.path,
                    rel,
                    share.encrypt,
                    e.stat.clone(),
                    remote_size,
                )))
            };
            batch.push_at(
                entry,
                remote_at,
                source,
                Some((
                    Walked {
                        rare: recorded.map(|r| {
                            Box::new(Rare {
                                recorded: Some(r),
                                ..Rare::default()
                            })
                        }),
                        same_record,
                        ..Walked::new(EntryKind::File, e.stat, known)
                    },
                    rel_at,
                )),
            );
        }
    }
    Ok(())
}

/// What follows a path's last `/` (all of it without one). `memrchr`, not a byte loop: a sealed name is
/// 52 bytes or more, and this runs for every file.
fn last_component(p: &[u8]) -> &[u8] {
    memchr::memrchr(b'/', p).map_or(p, |i| &p[i + 1..])
}

/// The sealed name a file's index record keeps (see [`IndexEntry::sealed_name`]), for its path `rel` and
/// its target path `remote`: the last component of `remote`, as sealed or checked by `Names::map`, for a
/// short name of a share that seals names; none otherwise (a long name also needs its side file, and is
/// sealed again).
fn name_to_keep<'a>(encrypt_names: bool, rel: &[u8], remote: &'a [u8]) -> &'a [u8] {
    if encrypt_names && last_component(rel).len() <= seal::names::MAX_SHORT_NAME {
        last_component(remote)
    } else {
        &[]
    }
}

/// A session whose protocol exchange is over.
struct Started {
    exit: rsync_wire::PendingExit,
    content_errors: u64,
    what: String,
    literal: u64,
    matched: u64,
    /// The server's warnings and errors, shown once the exchange is over.
    remote_texts: Vec<String>,
}

/// A session whose server has exited: its result, and what [`ShareRun::settle`] needs to judge it.
struct Ended {
    result: rsync_wire::Result<rsync_wire::PushStats>,
    content_errors: u64,
    what: String,
}

impl Started {
    /// Waits for the server's exit.
    async fn end(self) -> Ended {
        Ended {
            result: self.exit.finish().await,
            content_errors: self.content_errors,
            what: self.what,
        }
    }

    /// Adds the session to the report and shows the server's messages.
    fn report(&mut self, share: &str, report: &mut ShareReport, progress: &mut ProgressFn<'_>) {
        report.sessions += 1;
        report.counters.literal_bytes += self.literal;
        report.counters.matched_bytes += self.matched;
        for text in self.remote_texts.drain(..) {
            progress(&Progress::Remote { share, text: &text });
        }
    }
}

/// A batch at its session's goodbye: the session's pending exit, and what recording the batch needs.
struct InFlight {
    started: Started,
    record: BatchRecord,
}

/// How many entries a batch that reads no file may hold, for `batch_entries` of a batch that reads some.
/// On an unchanged night every batch is such a batch, and the server's start and exit per session, not
/// the entries, set the pace: measured on 100,000 unchanged files, 1,024 entries a session took 4.3-4.5 s,
/// 2,048 3.3-3.6 s, 4,096 2.4-2.6 s (stock `rsync --link-dest`: 4.0-4.3 s), and a session costs the
/// client about 1.4 ms of CPU (2.2 ms before the async tasks shared one thread). Memory sets the limit:
/// two batches can be alive at once (one pushed, the next being walked; the session still exiting keeps
/// none), about 640 bytes an unchanged file (its file list entry and target path are most of it). Five
/// times: 5,120 entries for the default 1,024, 10,240 alive at most, which a share of 10,000 files
/// reaches too, so that the peak grows by less than 2 MiB from 10,000 files to 100,000 (BENCHMARKS.md,
/// fourteenth and fifteenth sessions).
fn light_batch_entries(batch_entries: usize) -> usize {
    batch_entries.saturating_mul(5)
}

/// What [`ShareRun::record_batch`] needs of a pushed batch.
struct BatchRecord {
    /// The file list as pushed (for another try of files that changed while read; kept as it is,
    /// not as a copy in walk order, which most batches never need).
    list: FileList,
    slots: Arc<Slots>,
    outcomes: Arc<Mutex<Outcomes>>,
}

/// A pushed batch's entries, slot by slot as in its file list's caller order (slot 0 is the share's
/// root): where their content comes from, and what the walk saw (`walked[slot - 1]`). Shared with the
/// session's content source, which makes an unchanged file's spec from its walked entry if asked.
#[derive(Clone)]
struct Slots {
    sources: Vec<Source>,
    walked: Vec<Option<Walked>>,
    /// The share's folder, and whether its files are sealed.
    root: PathBuf,
    sealed: bool,
}

/// The spec to read a file of a batch by: its own, or an unchanged file's, made from its walked entry
/// (what the walk saw, sized as recorded) in the share at `root`.
fn spec_of<'a>(
    source: &'a Source,
    walked: Option<&Walked>,
    root: &Path,
    sealed: bool,
) -> Option<Cow<'a, FileSpec>> {
    match source {
        Source::File(spec) => Some(Cow::Borrowed(&**spec)),
        Source::Unchanged => {
            let w = walked?;
            let (size, _) = w.known?;
            let stat = w.stat.clone();
            let spec = FileSpec::in_share(root, &w.rel, sealed, stat, RemoteSize::Exact(size));
            Some(Cow::Owned(spec))
        }
        _ => None,
    }
}

impl Sources for Slots {
    fn source(&self, slot: usize) -> Option<Cow<'_, Source>> {
        let source = self.sources.get(slot)?;
        if !matches!(source, Source::Unchanged) {
            return Some(Cow::Borrowed(source));
        }
        let walked = self.walked.get(slot.checked_sub(1)?)?.as_ref();
        let spec = spec_of(source, walked, &self.root, self.sealed)?;
        Some(Cow::Owned(Source::File(Box::new(spec.into_owned()))))
    }
}

/// Files up to this size are sealed while sizing and kept in memory until pushed...
const KEEP_SEALED_MAX: u64 = 64 * 1024;
/// ...up to this many plaintext bytes per batch (a few batches are in memory at once).
const KEEP_SEALED_BUDGET: u64 = 512 * 1024;

/// What sizing learned about a changed file.
enum Sized {
    /// Its sealed length (it is sealed again when the receiver asks for it).
    Len(u64),
    /// It is small: its sealed bytes and trailer MAC.
    Sealed(Vec<u8>, [u8; 32]),
}

/// A batch ready to push, with what the walk found on the way.
struct Prepared {
    batch: Batch,
    skips: Vec<(Vec<u8>, String)>,
    counts: Counters,
}

/// Walks the share and fills batches, on its own thread.
struct Preparer {
    share: ShareConfig,
    keys: Keys,
    seal_options: SealOptions,
    names: Names,
    old_index: IndexReader,
    walker: Option<Walker>,
    batch_entries: usize,
    /// Whether the previous batch read nothing: the next one is likely to be alike (an unchanged night),
    /// and is then allocated at the larger size at once (growing its vectors on the way left the smaller
    /// ones as holes in the heap: 2 MiB more at the peak, measured).
    last_read_nothing: bool,
    sizing: Sizing,
}

impl Preparer {
    /// Sends batches until the walk ends (always at least one, so the snapshot folder is made).
    /// `taken` says when the engine took the batch sent last: the next one is walked only then.
    fn run(
        mut self,
        tx: tokio::sync::mpsc::Sender<Prepared>,
        taken: std::sync::mpsc::Receiver<()>,
    ) {
        loop {
            let (p, more) = self.next_batch();
            if tx.blocking_send(p).is_err() || !more || taken.recv().is_err() {
                return;
            }
        }
    }

    fn next_batch(&mut self) -> (Prepared, bool) {
        // Room for the walked entries, the parent folders repeated in front and a few long-name side files.
        let walked_room = if self.last_read_nothing {
            light_batch_entries(self.batch_entries)
        } else {
            self.batch_entries
        };
        let room = walked_room + self.names.stack.len() + 16;
        let mut p = Prepared {
            batch: Batch::with_capacity(room),
            skips: Vec::new(),
            counts: Counters::default(),
        };
        // A batch starts with the folders above the next entry.
        for (_, _, dir) in &self.names.stack {
            p.batch.push(dir.clone(), Source::None, None);
        }
        let mut walker = match self.walker.take() {
            Some(w) => w,
            None => return (p, false),
        };
        let mut more = false;
        while let Some(item) = walker.next_ref() {
            match item {
                walk::ItemRef::Skipped { rel, reason } => p.skips.push((rel.to_vec(), reason)),
                walk::ItemRef::Entry(e) => {
                    p.counts.entries += 1;
                    if let Err(skip) = add_entry(self, &mut p.batch, e, &mut p.counts) {
                        p.skips.push(skip);
                    }
                }
            }
            // A batch that reads nothing may grow further: its session's time is mostly the server's
            // start and exit, and its entries are lean (see `light_batch_entries`).
            let cap = if p.batch.to_read == 0 {
                light_batch_entries(self.batch_entries)
            } else {
                self.batch_entries
            };
            if p.batch.walked_count >= cap {
                more = true;
                break;
            }
        }
        if more {
            self.walker = Some(walker);
        }
        self.last_read_nothing = p.batch.to_read == 0;
        p.batch.cut_strings();
        self.size_files(&mut p);
        (p, more)
    }

    /// Seals the batch's small changed sealed files and learns the sealed size of those announced as
    /// [`RemoteSize::Unknown`] (on up to two threads), dropping the ones that cannot be read.
    fn size_files(&self, p: &mut Prepared) {
        // Small files are sealed right away and kept (within a budget per batch): one read, and no thread
        // hop when the receiver asks for them. `(index, keep)`
        let mut budget = KEEP_SEALED_BUDGET;
        let mut work: Vec<(usize, bool)> = Vec::new();
        for (i, source) in p.batch.sources.iter().enumerate() {
            let Source::File(spec) = source else { continue };
            if matches!(spec.remote_size, RemoteSize::Exact(_)) {
                continue;
            }
            let keep = spec.stat.size <= KEEP_SEALED_MAX && spec.stat.size <= budget;
            if keep {
                budget -= spec.stat.size;
            }
            if keep || spec.remote_size == RemoteSize::Unknown {
                work.push((i, keep));
            }
        }
        if work.is_empty() {
            return;
        }
        let counters = ReadCounters::default();
        let size = |(i, keep): (usize, bool)| -> (usize, std::io::Result<Sized>) {
            let Source::File(spec) = &p.batch.sources[i] else {
                return (i, Err(std::io::Error::other("not a file")));
            };
            let r = if keep {
                crate::content::seal_small(spec, &self.keys, self.seal_options, &counters)
                    .map(|(bytes, mac)| Sized::Sealed(bytes, mac))
            } else {
                crate::content::sealed_size(spec, &self.keys, self.seal_options, &counters)
                    .map(Sized::Len)
            };
            (i, r)
        };
        let results: Vec<(usize, std::io::Result<Sized>)> = if work.len() < 16 {
            work.iter().map(|&w| size(w)).collect()
        } else {
            let (a, b) = work.split_at(work.len() / 2);
            std::thread::scope(|scope| {
                let other = scope.spawn(|| a.iter().map(|&w| size(w)).collect::<Vec<_>>());
                let mut mine: Vec<_> = b.iter().map(|&w| size(w)).collect();
                let mut all = other.join().unwrap_or_default();
                all.append(&mut mine);
                all
            })
        };
        let mut dropped = Vec::new();
        let mut sized = 0;
        for (i, r) in results {
            match r {
                Ok(Sized::Len(size)) => {
                    if let Source::File(spec) = &mut p.batch.sources[i] {
                        spec.remote_size = RemoteSize::Exact(size);
                    }
                    p.batch.entries[i].kind = rsync_wire::EntryKind::File { size };
                    sized += 1;
                }
                Ok(Sized::Sealed(bytes, mac)) => {
                    let size = bytes.len() as u64;
                    p.batch.sources[i] = Source::Inline(bytes.into());
                    p.batch.entries[i].kind = rsync_wire::EntryKind::File { size };
                    if let Some(w) = p.batch.walked[i].as_mut() {
                        w.known = Some((size, mac));
                    }
                    sized += 1;
                }
                Err(e) => dropped.push((i, e.to_string())),
            }
        }
        // Anything still unsized (a failed thread) is dropped too.
        if sized + dropped.len() < work.len() {
            for &(i, _) in &work {
                if let Source::File(spec) = &p.batch.sources[i]
                    && spec.remote_size == RemoteSize::Unknown
                    && !dropped.iter().any(|d| d.0 == i)
                {
                    dropped.push((i, "its size could not be computed".into()));
                }
            }
        }
        dropped.sort_by_key(|d| std::cmp::Reverse(d.0));
        // A file that changed since the walk saw it keeps the previous snapshot's version, when there is
        // one, rather than vanishing from this snapshot (a file written all night long would otherwise be
        // in no snapshot at all once the older ones are pruned).
        dropped.retain_mut(|(i, why)| {
            let i = *i;
            if !crate::content::is_changed(why) {
                return true;
            }
            let Some(w) = p.batch.walked[i].as_mut() else {
                return true;
            };
            // First another look or two: a file saved once during the run is simply taken as it is now.
            if let Source::File(spec) = &p.batch.sources[i] {
                let spec = spec.clone();
                for _ in 0..CHANGED_RETRIES {
                    match look_again(
                        &spec,
                        w.recorded(),
                        self.sizing,
                        &self.keys,
                        self.seal_options,
                        &counters,
                    ) {
                        Ok((fresh, nsec)) => {
                            point_at(&mut p.batch.entries[i], &fresh, nsec);
                            w.stat = fresh.stat.clone();
                            p.batch.sources[i] = Source::File(Box::new(fresh));
                            return false;
                        }
                        Err(e) if crate::content::is_changed(&e.to_string()) => {
                            *why = e.to_string();
                        }
                        Err(e) => {
                            *why = e.to_string();
                            return true;
                        }
                    }
                }
            }
            match keep_previous(&mut p.batch.entries[i], w, why) {
                Some(source) => {
                    p.batch.sources[i] = source;
                    false
                }
                None => true,
            }
        });
        p.counts.files_read += counters.files_read.into_inner();
        p.counts.bytes_read += counters.bytes_read.into_inner();
        p.counts.bytes_produced += counters.bytes_produced.into_inner();
        for (i, why) in dropped {
            if let Some(w) = p.batch.walked.remove(i) {
                p.skips.push((w.rel.to_vec(), why));
                p.batch.walked_count -= 1;
            }
            p.batch.entries.remove(i);
            p.batch.sources.remove(i);
        }
    }
}

impl ShareRun<'_> {
    fn publish(&self, report: &mut ShareReport, progress: &mut ProgressFn<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        report.counters.files_read = self.counters.files_read.load(Relaxed);
        report.counters.bytes_read = self.counters.bytes_read.load(Relaxed);
        report.counters.bytes_produced = self.counters.bytes_produced.load(Relaxed);
        progress(&Progress::Counters {
            share: &self.share.name,
            counters: report.counters,
        });
    }

    fn server_options(&self) -> PushOptions {
        let mut opts = PushOptions::default();
        opts.server.timeout_secs = Some(self.ctx.config.target.timeout_secs);
        if !self.link_dest.is_empty() {
            opts.server.alt_dest = Some(AltDest::Link(self.link_dest.clone()));
        }
        opts
    }

    /// Opens a session and runs the protocol exchange; the server's exit is collected later
    /// ([`Started::end`], judged by [`ShareRun::settle`]), so the next session can start meanwhile.
    /// Borrows nothing mutable of the run (two sessions can be under way at once): what it learned is in
    /// [`Started`], for [`Started::report`].
    async fn start_push(
        &self,
        flist: &FileList,
        content: &mut BatchContent,
    ) -> Result<Started, Error> {
        let cfg = self.ctx.config;
        let opts = self.server_options();
        let dest = remote_ops::share_path(&cfg.target, &self.share.name, &[&self.snapshot]);
        let what = format!(
            "share {}: pushing to {} on {}",
            self.share.name,
            String::from_utf8_lossy(&dest),
            self.ctx.remote.describe()
        );
        let argv = rsync_wire::args::server_args(&opts.server, &dest)
            .map_err(|e| Error::new(what.clone(), e))?;
        let session = self
            .ctx
            .remote
            .open(&argv)
            .await
            .map_err(|e| Error::new(what.clone(), e))?;
        let mut literal = 0u64;
        let mut matched = 0u64;
        let mut content_errors = 0u64;
        let mut remote_texts = Vec::new();
        let mut on_event = |e: Event<'_>| match e {
            Event::FileDone(p) => {
                literal += p.literal_bytes;
                matched += p.matched_bytes;
            }
            Event::ContentError { .. } => content_errors += 1,
            // Bounded: a server that floods warnings does not grow memory.
            Event::Message { kind, text }
                if kind != MessageKind::Info && remote_texts.len() < 100 =>
            {
                remote_texts.push(text.to_owned());
            }
            _ => {}
        };
        let session = remote::limit_rate(session, cfg.target.bwlimit_kbps);
        let exit =
            rsync_wire::push_list_deferred(session, flist, content, &opts, &mut on_event).await;
        Ok(Started {
            exit,
            content_errors,
            what,
            literal,
            matched,
            remote_texts,
        })
    }

    /// The outcome of a finished session.
    fn settle(ended: Ended, report: &mut ShareReport) -> Result<(), Error> {
        let Ended {
            result,
            content_errors,
            what,
        } = ended;
        match result {
            Ok(stats) => {
                report.bytes_sent += stats.bytes_sent;
                Ok(())
            }
            // Files we could not read make the receiver exit with "partial transfer"; those files are
            // reported by the caller, the rest of the batch is in place.
            Err(rsync_wire::Error::RemoteExit { code: 23, .. }) if content_errors > 0 => Ok(()),
            Err(e) => Err(Error::new(what, e)),
        }
    }

    async fn push(
        &self,
        flist: &FileList,
        content: &mut BatchContent,
        report: &mut ShareReport,
        progress: &mut ProgressFn<'_>,
    ) -> Result<(), Error> {
        let mut started = self.start_push(flist, content).await?;
        started.report(&self.share.name, report, progress);
        Self::settle(started.end().await, report)
    }

    /// Pushes a batch up to its session's goodbye; [`ShareRun::record_batch`] records it then, and the
    /// session's end is settled later.
    async fn begin_batch(&self, mut batch: Batch) -> Result<InFlight, Error> {
        let mut entries = Vec::with_capacity(batch.entries.len() + 1);
        entries.push(root_entry(&self.root));
        entries.append(&mut batch.entries);
        let mut sources = Vec::with_capacity(entries.len());
        sources.push(Source::None);
        sources.append(&mut batch.sources);
        let flist = FileList::new(entries, self.root.mtime).map_err(|e| {
            Error::new(
                format!("share {}: building the file list", self.share.name),
                e,
            )
        })?;
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let slots = Arc::new(Slots {
            sources,
            walked: batch.walked,
            root: self.share.path.clone(),
            sealed: self.share.encrypt,
        });
        let mut content = BatchContent {
            sources: slots.clone(),
            outcomes: outcomes.clone(),
            keys: self.ctx.keys.clone(),
            options: self.seal_options,
            counters: self.counters.clone(),
        };
        let started = self.start_push(&flist, &mut content).await?;
        Ok(InFlight {
            record: BatchRecord {
                list: flist,
                slots,
                outcomes,
            },
            started,
        })
    }

    /// Records a batch whose session has reached its goodbye (its outcomes are final): tries again the files
    /// that changed while read, then writes each entry to the index and the manifest, in walk order.
    async fn record_batch(
        &mut self,
        batch: BatchRecord,
        report: &mut ShareReport,
        progress: &mut ProgressFn<'_>,
    ) -> Result<(), Error> {
        let BatchRecord {
            list,
            slots,
            outcomes,
        } = batch;
        // Alone at the goodbye: the session's content source is gone.
        let Slots {
            sources,
            mut walked,
            ..
        } = Arc::try_unwrap(slots).unwrap_or_else(|shared| Slots::clone(&shared));
        // Final at the goodbye: nothing writes them any more.
        let mut outcomes = match outcomes.lock() {
            Ok(mut o) => std::mem::take(&mut *o),
            Err(_) => return Err(Error::new("internal", "content outcomes unavailable")),
        };
        // The entries as listed, in the batch's order (`entries[slot]` is `walked[slot - 1]`'s).
        let entries = list.caller_order();
        self.retry_changed(
            &entries,
            &sources,
            &mut walked,
            &mut outcomes,
            report,
            progress,
        )
        .await?;
        // Record what is now in the snapshot, in walk order.
        for (i, walked) in walked.into_iter().enumerate() {
            let Some(w) = walked else { continue };
            let slot = i + 1;
            let outcome = &outcomes[slot];
            let (remote_size, hash) = match (&w.known, &sources[slot], outcome) {
                (
                    _,
                    _,
                    Outcome {
                        error: Some(why), ..
                    },
                ) => {
                    skipped(report, progress, &self.share.name, &w.rel, why.clone());
                    continue;
                }
                (Some(k), _, _) => {
                    if let Some(why) = w.kept_previous() {
                        skipped(report, progress, &self.share.name, &w.rel, why.clone());
                    }
                    *k
                }
                (
                    None,
                    Source::File(_),
                    Outcome {
                        produced: Some(p), ..
                    },
                ) => *p,
                (None, Source::File(spec), _) => {
                    // The target already had it (same size and mtime), so it was not read: hash it now.
                    match self.hash_now(spec).await {
                        Ok(x) => x,
                        Err(e) => {
                            skipped(report, progress, &self.share.name, &w.rel, e.to_string());
                            continue;
                        }
                    }
                }
                (None, _, _) => (0, [0; 32]),
            };
            let st = &w.stat;
            let same_record = match (w.same_record, self.index.as_mut()) {
                // Only a file that kept its recorded version has one (not one read again).
                (Some(span), Some(index)) if w.known == Some((remote_size, hash)) => index
                    .push_same(span)
                    .map_err(|e| Error::new("writing the index", e))?,
                _ => false,
            };
            if w.kind == EntryKind::File
                && !same_record
                && let Some(index) = self.index.as_mut()
            {
                let sealed_name = entries.get(slot).map_or(&[][..], |entry| {
                    name_to_keep(self.share.encrypt_names, &w.rel, &entry.name)
                });
                index
                    .push(
                        &IndexRecord::new(&w.rel, st, remote_size, hash),
                        sealed_name,
                    )
                    .map_err(|e| Error::new("writing the index", e))?;
            }
            if let Some(m) = self.manifest.as_mut() {
                m.push(ManifestEntryOf {
                    path: &w.rel,
                    kind: w.kind,
                    size: if w.kind == EntryKind::File {
                        st.size
                    } else {
                        0
                    },
                    mtime: st.mtime,
                    mtime_nsec: st.mtime_nsec,
                    perms: st.perms,
                    remote_size,
                    hash,
                    link: w.rare.as_ref().map_or(&[][..], |r| &r.link[..]),
                })
                .map_err(|e| Error::new("writing the manifest", e))?;
            }
        }
        self.publish(report, progress);
        Ok(())
    }

    /// Tries again the files of a pushed batch that changed while they were read, each time with a fresh
    /// look at the file, in small sessions of their own (the folders above them and the files); a file
    /// that changed every time keeps its previous version (see [`keep_previous`]). Updates `walked` and
    /// `outcomes` (slot = index in the batch's list in walk order, `walked[slot - 1]`), so the batch is recorded in walk order.
    async fn retry_changed(
        &self,
        entries: &[&FileEntry],
        sources: &[Source],
        walked: &mut [Option<Walked>],
        outcomes: &mut Outcomes,
        report: &mut ShareReport,
        progress: &mut ProgressFn<'_>,
    ) -> Result<(), Error> {
        let mut pending: Vec<usize> = (1..sources.len())
            .filter(|&slot| {
                matches!(sources.get(slot), Some(Source::File(_) | Source::Unchanged))
                    && outcomes[slot]
                        .error
                        .as_deref()
                        .is_some_and(crate::content::is_changed)
                    && walked.get(slot - 1).is_some_and(Option::is_some)
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for attempt in 0..=CHANGED_RETRIES {
            if pending.is_empty() {
                return Ok(());
            }
            let last = attempt == CHANGED_RETRIES;
            // (slot, entry, source) for this try, in slot order
            let mut tries: Vec<(usize, FileEntry, Source)> = Vec::new();
            for &slot in &pending {
                let Some(Some(w)) = walked.get_mut(slot - 1) else {
                    continue;
                };
                let Some(spec) = sources.get(slot).and_then(|source| {
                    spec_of(source, Some(w), &self.share.path, self.share.encrypt)
                }) else {
                    continue;
                };
                let mut entry = FileEntry::clone(entries[slot]);
                let why = outcomes[slot].error.clone().unwrap_or_default();
                if last {
                    if let Some(source) = keep_previous(&mut entry, w, &why) {
                        tries.push((slot, entry, source));
                    }
                    continue;
                }
                match self.look_again(&spec, w).await {
                    Ok((spec, nsec)) => {
                        point_at(&mut entry, &spec, nsec);
                        tries.push((slot, entry, Source::File(Box::new(spec))));
                    }
                    Err(e) => outcomes[slot].error = Some(e.to_string()),
                }
            }
            pending.clear();
            if tries.is_empty() {
                return Ok(());
            }
            // The list: the share's root, the folders above the files, the files; in the batch's order.
            let mut list = vec![root_entry(&self.root)];
            let mut list_sources = vec![Source::None];
            let mut at = Vec::new();
            // `tries` is in slot order: each is taken when the walk over the batch reaches it.
            let mut tries = std::collections::VecDeque::from(tries);
            for (i, e) in entries.iter().enumerate().skip(1) {
                if tries.front().is_some_and(|t| t.0 == i) {
                    let Some((slot, entry, source)) = tries.pop_front() else {
                        break;
                    };
                    at.push((slot, list.len(), matches!(source, Source::Previous)));
                    list.push(entry);
                    list_sources.push(source);
                } else if e.kind == rsync_wire::EntryKind::Dir
                    && tries.iter().any(|(_, f, _)| is_ancestor(&e.name, &f.name))
                {
                    list.push(FileEntry::clone(e));
                    list_sources.push(Source::None);
                }
            }
            let flist = FileList::new(list, self.root.mtime).map_err(|e| {
                Error::new(
                    format!("share {}: building the file list", self.share.name),
                    e,
                )
            })?;
            let mini = Arc::new(Mutex::new(Outcomes::default()));
            let list_sources = Arc::new(list_sources);
            let mut content = BatchContent {
                sources: list_sources.clone(),
                outcomes: mini.clone(),
                keys: self.ctx.keys.clone(),
                options: self.seal_options,
                counters: self.counters.clone(),
            };
            tracing::debug!(share = %self.share.name, files = at.len(), attempt, "files that changed while read, again");
            self.push(&flist, &mut content, report, progress).await?;
            let mini = match mini.lock() {
                Ok(o) => o.clone(),
                Err(_) => return Err(Error::new("internal", "content outcomes unavailable")),
            };
            for (slot, pos, previous) in at {
                let Some(Some(w)) = walked.get_mut(slot - 1) else {
                    continue;
                };
                let o = &mini[pos];
                match (&o.error, previous) {
                    (Some(why), true) => {
                        let kept = w.rare_mut().kept_previous.take().unwrap_or_default();
                        outcomes[slot].error = Some(format!("{kept}, but {why}"));
                    }
                    (None, true) => outcomes[slot] = Outcome::default(),
                    (Some(why), false) if crate::content::is_changed(why) => {
                        outcomes[slot].error = Some(why.clone());
                        pending.push(slot);
                    }
                    (Some(why), false) => outcomes[slot].error = Some(why.clone()),
                    (None, false) => {
                        let Source::File(spec) = &list_sources[pos] else {
                            continue;
                        };
                        let produced = match o.produced {
                            Some(p) => p,
                            // The target had it already (the previous snapshot holds this very
                            // version): hash it as the batch does.
                            None => match self.hash_now(spec).await {
                                Ok(h) => h,
                                Err(e) => {
                                    outcomes[slot].error = Some(e.to_string());
                                    continue;
                                }
                            },
                        };
                        w.stat = spec.stat.clone();
                        w.known = Some(produced);
                        outcomes[slot] = Outcome::default();
                    }
                }
            }
        }
        Ok(())
    }

    /// [`look_again`] on a blocking thread.
    async fn look_again(&self, spec: &FileSpec, w: &Walked) -> std::io::Result<(FileSpec, u32)> {
        let (keys, options, counters, sizing) = (
            self.ctx.keys.clone(),
            self.seal_options,
            self.counters.clone(),
            self.sizing,
        );
        let (spec, recorded) = (spec.clone(), w.recorded().cloned());
        tokio::task::spawn_blocking(move || {
            look_again(&spec, recorded.as_ref(), sizing, &keys, options, &counters)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The length and hash of what a file produces now, for a file the receiver did not need to be sent:
    /// its copy on the target has the announced size (and mtime), so the content must have that very size.
    async fn hash_now(&self, spec: &FileSpec) -> std::io::Result<(u64, [u8; 32])> {
        let mut spec = spec.clone();
        spec.remote_size = RemoteSize::Exact(spec.remote_size.announced());
        let keys = self.ctx.keys.clone();
        let options = self.seal_options;
        let counters = self.counters.clone();
        tokio::task::spawn_blocking(move || {
            crate::content::produce(&spec, &keys, options, &counters, &mut |_| Ok(()))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Seals the manifest and pushes it: the snapshot is complete.
    async fn push_manifest(&mut self, report: &mut ShareReport) -> Result<(), Error> {
        let Some(m) = self.manifest.take() else {
            return Ok(());
        };
        let ctx =
            |e: std::io::Error| Error::new(format!("share {}: the manifest", self.share.name), e);
        let plain = m.finish().map_err(ctx)?;
        let options = crate::manifest::SEAL_OPTIONS;
        // Sized as it was written (`ManifestPlain::sealed_len`: no pass over it), then sealed as it is
        // sent, as a share file is: a sealed copy in the state folder cost a night as much writing again
        // as the plaintext (7.6 MB for 100,000 files) and the reading of it back.
        let folder = plain.folder();
        let identity = sealed_identity(&self.share.name);
        let stat = std::fs::symlink_metadata(folder.join(&identity)).map_err(ctx)?;
        let len = plain.sealed_len;
        let spec = FileSpec::in_share(
            folder,
            identity.as_bytes(),
            true,
            Stat::of(&stat),
            RemoteSize::Exact(len),
        );
        // The snapshot's own time, not the run's: two runs within one second get snapshots a second
        // apart, and a manifest with the previous one's size and time would pass the receiver's quick
        // check and be linked from the previous snapshot instead of sent (the new snapshot would then
        // carry the old manifest).
        let time = SnapshotId::parse(&self.snapshot)
            .map(|id| id.timestamp().as_second())
            .unwrap_or_else(|| self.ctx.now.as_second());
        let entries = vec![
            root_entry(&self.root),
            FileEntry::file(MANIFEST_NAME, len, time, 0o600),
        ];
        let flist = FileList::new(entries, self.root.mtime)
            .map_err(|e| Error::new("building the manifest's file list", e))?;
        let sources = Arc::new(vec![Source::None, Source::File(Box::new(spec))]);
        let mut content = BatchContent {
            sources,
            outcomes: Arc::new(Mutex::new(Outcomes::default())),
            keys: self.ctx.keys.clone(),
            options,
            // Not share data: kept out of the share's read counters.
            counters: Arc::new(ReadCounters::default()),
        };
        let mut sink = |_: &Progress<'_>| {};
        let result = self.push(&flist, &mut content, report, &mut sink).await;
        drop(plain);
        result?;
        // A manifest that could not be read or sealed is not on the target, and the receiver's "partial
        // transfer" for it must not pass for a complete snapshot.
        let failed = match content.outcomes.lock() {
            Ok(o) => o[1].error.clone(),
            Err(_) => Some("its outcome was lost".into()),
        };
        match failed {
            Some(why) => Err(Error::new(
                format!("share {}: sending the manifest", self.share.name),
                std::io::Error::other(why),
            )),
            None => Ok(()),
        }
    }
}

fn dry_run(
    share: &ShareConfig,
    walker: Walker,
    old_index: &mut IndexReader,
    on_target: &ShareOnTarget,
    snap: SnapshotId,
    report: &mut ShareReport,
    progress: &mut ProgressFn<'_>,
) {
    for item in walker {
        match item {
            walk::Item::Skipped { rel, reason } => {
                skipped(report, progress, &share.name, &rel, reason);
            }
            walk::Item::Entry(e) => {
                report.counters.entries += 1;
                if e.kind == Kind::File {
                    report.counters.files += 1;
                    report.counters.bytes += e.stat.size;
                    if old_index
                        .lookup(&e.rel)
                        .is_some_and(|ix| ix.matches(&e.stat))
                    {
                        report.counters.unchanged += 1;
                    }
                }
            }
        }
    }
    let prune = prune_plan(on_target, snap, share);
    report.would_prune = prune.iter().map(ToString::to_string).collect();
    progress(&Progress::Counters {
        share: &share.name,
        counters: report.counters,
    });
}
