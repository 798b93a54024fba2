//! Restore and verify against the target: the snapshot's manifest says what to expect, one rsync pull
//! (filtered to the asked paths) brings only those sealed files, and each is authenticated on its way to
//! the destination folder, a tar stream, or nowhere (verify).
//!
//! The pull's file data is handed to a worker thread through a small bounded channel (16 buffers of at
//! most 64 KiB): unsealing and writing run beside the network receive, and a slow disk slows the
//! transfer rather than growing memory. What grows with the request is the table of the entries asked
//! for (and rsync's file list of them): restoring one file from a share of a million costs the same as
//! from a share of ten; restoring a whole share holds one small record per entry, as rsync itself does.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use remote::Remote;
use rsync_wire::{EntryKind as WireKind, FileEntry, PullSink};
use seal::Keys;
use seal::names::seal_name;

use super::catalog::{self, Manifest};
use super::file::{self, Output};
use super::place::{PlaceError, Placer};
use super::plan::{Batch, Planner};
use super::problem::{CheckEvent, CheckReport, FileProblem, Problem};
use super::tar_out::TarOut;
use crate::Error;
use crate::config::TargetConfig;
use crate::manifest::{EntryKind, MANIFEST_NAME, ManifestEntry};
use crate::snapshot::SnapshotId;

/// What happens to the verified files.
pub enum Mode {
    /// Into this folder; existing entries are replaced only with `overwrite`.
    Dir { to: PathBuf, overwrite: bool },
    /// As a tar stream.
    Tar(Box<dyn Write + Send>),
    /// Nowhere: authenticate the contents of this percentage of the files (chosen at random; the others'
    /// sizes are checked) — 100 checks all, 0 checks names and sizes only.
    Verify { sample_percent: f64 },
}

/// Receives live events (from the calling task and the unsealing thread).
pub type EventFn = Box<dyn FnMut(CheckEvent<'_>) + Send>;

pub(crate) struct Log {
    pub(crate) report: CheckReport,
    pub(crate) events: EventFn,
}

pub(crate) type SharedLog = Arc<Mutex<Log>>;

pub(crate) fn lock(log: &SharedLog) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn problem(log: &SharedLog, path: &[u8], problem: Problem) {
    let p = FileProblem {
        path: path.to_vec(),
        problem,
    };
    let mut l = lock(log);
    (l.events)(CheckEvent::Problem(&p));
    l.report.add_problem(p);
}

pub(crate) fn file_ok(log: &SharedLog, e: &ManifestEntry, bytes: u64) {
    let mut l = lock(log);
    (l.events)(CheckEvent::FileOk {
        path: &e.path,
        bytes,
    });
    l.report.files_ok += 1;
    l.report.bytes_ok += bytes;
}

/// Plaintext paths → paths on the target, reusing the last folder's sealed path (the manifest is in walk
/// order, so consecutive entries mostly share a folder).
pub(crate) struct RemoteNames {
    keys: Option<Keys>,
    cache: Option<(Vec<u8>, Vec<u8>)>,
}

impl RemoteNames {
    /// `keys` when names are sealed.
    pub(crate) fn new(keys: Option<Keys>) -> RemoteNames {
        RemoteNames { keys, cache: None }
    }

    pub(crate) fn map(&mut self, rel: &[u8]) -> Result<Vec<u8>, String> {
        let Some(keys) = &self.keys else {
            return Ok(rel.to_vec());
        };
        let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        let remote_parent = match &self.cache {
            Some((p, r)) if p == parent => r.clone(),
            _ if parent.is_empty() => Vec::new(),
            _ => {
                let rp = seal::RelPath::new(parent.to_vec()).map_err(|e| e.to_string())?;
                seal::names::seal_path(keys, &rp)
                    .map_err(|e| e.to_string())?
                    .path
                    .into_bytes()
            }
        };
        let sealed = seal_name(keys, parent, name).map_err(|e| e.to_string())?;
        let component = sealed.component().as_bytes();
        let mut remote = remote_parent.clone();
        if !remote.is_empty() {
            remote.push(b'/');
        }
        remote.extend_from_slice(component);
        self.cache = Some((parent.to_vec(), remote_parent));
        Ok(remote)
    }
}

struct Job {
    entry: ManifestEntry,
    seen: bool,
}

enum Msg {
    Begin(Box<ManifestEntry>),
    Data(Vec<u8>),
    End {
        ok: bool,
    },
    /// A plain share's symlink, created from the manifest.
    Symlink(Box<ManifestEntry>),
    /// A folder (created now; its permissions and mtime are set at the end).
    Dir(Box<ManifestEntry>),
}

/// Where the worker sends verified plaintext (owned by the worker thread).
enum Dest {
    Check,
    Dir(Placer),
    Tar(TarOut),
}

/// One file's data from the channel, as a `Read`. Ends at the file's `End`; a failed transfer checksum is
/// an error (rsync sends the file again).
struct ChannelReader<'a> {
    rx: &'a Receiver<Msg>,
    buf: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(v)) => {
                    self.buf = v;
                    self.pos = 0;
                }
                Ok(Msg::End { ok }) => {
                    self.ended = true;
                    if !ok {
                        return Err(io::Error::other("rsync's transfer checksum failed"));
                    }
                }
                Ok(_) | Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the transfer stopped"));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn worker(rx: Receiver<Msg>, keys: Option<Keys>, mut dest: Dest, log: SharedLog) -> Dest {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Begin(e) => {
                let mut r = ChannelReader {
                    rx: &rx,
                    buf: Vec::new(),
                    pos: 0,
                    ended: false,
                };
                let res = {
                    let mut out = match &mut dest {
                        Dest::Check => Output::Check,
                        Dest::Dir(p) => Output::Dir(p),
                        Dest::Tar(t) => Output::Tar(t),
                    };
                    file::process(keys.as_ref(), &e, &mut r, &mut out)
                };
                // Whatever the outcome, the rest of this file's data is consumed.
                let mut transfer_ok = true;
                while !r.ended {
                    match rx.recv() {
                        Ok(Msg::End { ok }) => {
                            transfer_ok = ok;
                            r.ended = true;
                        }
                        Ok(_) => {}
                        Err(_) => return dest,
                    }
                }
                match res {
                    Ok(_) if e.kind == EntryKind::Symlink => lock(&log).report.symlinks += 1,
                    Ok(bytes) => file_ok(&log, &e, bytes),
                    // A failed transfer checksum: rsync resends the file, or reports it failed.
                    Err(_) if !transfer_ok => {}
                    Err(Problem::Failed(why))
                        if why.contains("rsync's transfer checksum failed") => {}
                    Err(p) => problem(&log, &e.path, p),
                }
            }
            Msg::Symlink(e) => {
                let res = match &mut dest {
                    Dest::Check => Ok(()),
                    Dest::Dir(p) => p
                        .symlink(&e.path, &e.link, e.mtime, e.mtime_nsec)
                        .map_err(Problem::from),
                    Dest::Tar(t) => t
                        .symlink(&e)
                        .map_err(|x| Problem::Failed(format!("writing the tar stream: {x}"))),
                };
                match res {
                    Ok(()) => lock(&log).report.symlinks += 1,
                    Err(p) => problem(&log, &e.path, p),
                }
            }
            Msg::Dir(e) => {
                let res = match &mut dest {
                    Dest::Check => Ok(()),
                    Dest::Dir(p) => p.dir(&e.path).map_err(Problem::from),
                    Dest::Tar(t) => t
                        .dir(&e)
                        .map_err(|x| Problem::Failed(format!("writing the tar stream: {x}"))),
                };
                match res {
                    Ok(()) => lock(&log).report.dirs += 1,
                    Err(p) => problem(&log, &e.path, p),
                }
            }
            Msg::Data(_) | Msg::End { .. } => {}
        }
    }
    dest
}

/// The pull's sink: matches the listing with the manifest's entries, requests what is wanted and feeds
/// the worker.
struct Sink {
    jobs: HashMap<Vec<u8>, Job>,
    /// Restoring into this folder without overwriting: files already there are not pulled at all.
    keep_existing: Option<PathBuf>,
    /// Folders above the batch's items, and subfolders planned in other batches: listed, not extra.
    elsewhere: std::collections::HashSet<Vec<u8>>,
    tx: SyncSender<Msg>,
    log: SharedLog,
    sealed_names: bool,
    /// Verify: the per-mille (0..=100,000) of files whose content is checked, and the run's salt.
    sample: Option<(u64, [u8; 32])>,
}

impl Sink {
    fn internal(&self, name: &[u8]) -> bool {
        let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
        name == MANIFEST_NAME.as_bytes()
            || (self.sealed_names
                && base.starts_with(seal::names::LONG_NAME_SIDE_PREFIX.as_bytes()))
            || (!name.contains(&b'/') && name.starts_with(b".offsite-"))
    }
}

/// Whether a file's content is checked in this verify.
fn sampled(sample: &Option<(u64, [u8; 32])>, path: &[u8]) -> bool {
    match sample {
        None => true,
        Some((per_100k, salt)) => {
            let h = blake3::keyed_hash(salt, path);
            let mut n = [0u8; 8];
            n.copy_from_slice(&h.as_bytes()[..8]);
            u64::from_le_bytes(n) % 100_000 < *per_100k
        }
    }
}

impl PullSink for Sink {
    fn select(&mut self, list: &[FileEntry]) -> Vec<bool> {
        let mut wanted = vec![false; list.len()];
        let mut found: Vec<(Vec<u8>, Problem)> = Vec::new();
        for (i, le) in list.iter().enumerate() {
            if le.name[..] == b"."[..] || self.internal(&le.name) {
                continue;
            }
            // An expected entry first: a folder can be both this batch's job and, as the way down to
            // another item or as a subfolder of a split folder, listed for another reason.
            let Some(job) = self.jobs.get_mut(&le.name[..]) else {
                if !self.elsewhere.contains(&le.name[..]) {
                    found.push((le.name.to_vec(), Problem::Extra));
                }
                continue;
            };
            job.seen = true;
            let e = &job.entry;
            let content = matches!(le.kind, WireKind::File { .. });
            match (e.kind, &le.kind) {
                (EntryKind::Dir, WireKind::Dir) => {}
                (EntryKind::Symlink, WireKind::Symlink { target }) => {
                    if *target != e.link {
                        found.push((
                            e.path.clone(),
                            Problem::Changed("the symlink points elsewhere on the target".into()),
                        ));
                    } else {
                        let _ = self.tx.send(Msg::Symlink(Box::new(e.clone())));
                    }
                }
                (EntryKind::File | EntryKind::Symlink, WireKind::File { .. })
                    if self.keep_existing.as_ref().is_some_and(|root| {
                        std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(&e.path)))
                            .is_ok()
                    }) =>
                {
                    found.push((e.path.clone(), Problem::Exists));
                }
                (EntryKind::File | EntryKind::Symlink, WireKind::File { size }) if content => {
                    if sampled(&self.sample, &e.path) {
                        wanted[i] = true;
                    } else {
                        lock(&self.log).report.files_not_sampled += 1;
                        if *size != e.remote_size {
                            found.push((
                                e.path.clone(),
                                Problem::Tampered(format!(
                                    "{size} bytes on the target, the snapshot recorded {}",
                                    e.remote_size
                                )),
                            ));
                        }
                    }
                }
                _ => found.push((
                    e.path.clone(),
                    Problem::Tampered(format!(
                        "a {} on the target where the snapshot has a {}",
                        wire_kind(&le.kind),
                        kind_name(e.kind)
                    )),
                )),
            }
        }
        for job in self.jobs.values().filter(|j| !j.seen) {
            found.push((job.entry.path.clone(), Problem::Missing));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, p) in found {
            problem(&self.log, &path, p);
        }
        wanted
    }

    fn begin(&mut self, _: usize, entry: &FileEntry, _redo: bool) -> Result<(), String> {
        let job = self.jobs.get(&entry.name[..]).ok_or("not asked for")?;
        self.tx
            .send(Msg::Begin(Box::new(job.entry.clone())))
            .map_err(|_| "the restore stopped".to_string())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.tx
            .send(Msg::Data(bytes.to_vec()))
            .map_err(|_| "the restore stopped".to_string())
    }

    fn end(&mut self, ok: bool) -> Result<(), String> {
        self.tx
            .send(Msg::End { ok })
            .map_err(|_| "the restore stopped".to_string())
    }
}

fn wire_kind(k: &WireKind) -> &'static str {
    match k {
        WireKind::File { .. } => "file",
        WireKind::Dir => "folder",
        WireKind::Symlink { .. } => "symlink",
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "folder",
        EntryKind::Symlink => "symlink",
    }
}

/// Entries per rsync session of a restore: bounds rsync's file list and the expected-entry table
/// (about 0.3 KiB per entry).
pub const BATCH_ENTRIES: usize = 4096;

/// What every batch of one snapshot's restore shares.
struct Session<'a> {
    remote: &'a Remote,
    t: &'a TargetConfig,
    share: &'a str,
    snap: &'a SnapshotId,
    tx: &'a SyncSender<Msg>,
    log: &'a SharedLog,
    sealed_names: bool,
    sample: Option<(u64, [u8; 32])>,
    keep_existing: Option<&'a Path>,
}

impl Session<'_> {
    /// Pulls one batch into the worker.
    async fn pull(&self, batch: Batch) -> Result<(), Error> {
        let filters = batch.rules(self.sealed_names);
        let mut elsewhere = batch.ancestors();
        elsewhere.extend(batch.elsewhere);
        let jobs = batch
            .jobs
            .into_iter()
            .map(|(r, entry)| (r, Job { entry, seen: false }))
            .collect();
        let mut sink = Sink {
            keep_existing: self.keep_existing.map(Path::to_path_buf),
            jobs,
            elsewhere,
            tx: self.tx.clone(),
            log: self.log.clone(),
            sealed_names: self.sealed_names,
            sample: self.sample,
        };
        let mut dir = crate::remote_ops::share_path(self.t, self.share, &[&self.snap.to_string()]);
        dir.push(b'/');
        let pulled =
            catalog::pull_into(self.remote, self.t, &dir, filters, &mut sink, &mut |_| {}).await?;
        let stats = match pulled {
            Ok(s) => s,
            // Files that failed in the transfer itself (rsync's checksum twice, a file the server could
            // not read): those are named; the others were restored.
            Err(rsync_wire::Error::PullFailed { failed, stats }) => {
                for (name, why) in failed {
                    let path = sink
                        .jobs
                        .get(&name)
                        .map(|j| j.entry.path.clone())
                        .unwrap_or(name);
                    problem(self.log, &path, Problem::Failed(why));
                }
                *stats
            }
            Err(e) => {
                return Err(Error::new(
                    format!(
                        "reading {}/{} on {}",
                        self.share,
                        self.snap,
                        self.remote.describe()
                    ),
                    e,
                ));
            }
        };
        lock(self.log).report.bytes_pulled += stats.bytes_received;
        Ok(())
    }
}

/// The manifest was read to its end (or the restore failed) and every planned batch was pulled.
fn next_is_done(outcome: &Result<(), Error>, planner: &Planner) -> bool {
    outcome.is_err() || planner.finished()
}

/// Normalizes asked paths: relative to the share root, no `.`/`..`; `""` or `.` means everything.
pub fn normalize_paths(paths: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let mut q: &[u8] = p;
        while let Some(r) = q.strip_prefix(b"/").or_else(|| q.strip_prefix(b"./")) {
            q = r;
        }
        while let Some(r) = q.strip_suffix(b"/") {
            q = r;
        }
        if q.is_empty() || q == b"." {
            return Ok(Vec::new());
        }
        super::place::check_rel(q).map_err(|_| {
            Error::new(
                format!("--path {:?}", String::from_utf8_lossy(p)),
                "not a path inside the share (no `..`, no empty parts)",
            )
        })?;
        out.push(q.to_vec());
    }
    out.sort();
    out.dedup();
    // A path inside another asked folder adds nothing (and would never be matched on its own).
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(out.len());
    for q in out {
        if !kept
            .iter()
            .any(|p| selects(std::slice::from_ref(p), &q).is_some())
        {
            kept.push(q);
        }
    }
    Ok(kept)
}

/// A salt for choosing a verify sample: random, so the target cannot tell which files will be read.
fn salt() -> [u8; 32] {
    let mut s = [0u8; 32];
    if getrandom::fill(&mut s).is_err() {
        // No system randomness: still different each run.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        s = *blake3::hash(&now.as_nanos().to_le_bytes()).as_bytes();
    }
    s
}

fn selects(paths: &[Vec<u8>], rel: &[u8]) -> Option<usize> {
    if paths.is_empty() {
        return Some(0);
    }
    paths.iter().position(|p| {
        rel == &p[..] || (rel.len() > p.len() && rel.starts_with(p) && rel[p.len()] == b'/')
    })
}

/// Restores or verifies `paths` (plaintext, relative to the share root; empty = all) of one snapshot, in
/// rsync sessions of about `batch_entries` entries ([`BATCH_ENTRIES`] is a good default).
#[allow(clippy::too_many_arguments)]
pub async fn run_snapshot(
    remote: &Remote,
    t: &TargetConfig,
    keys: &Keys,
    state_dir: &Path,
    share: &str,
    snap: &SnapshotId,
    paths: &[Vec<u8>],
    mode: Mode,
    batch_entries: usize,
    events: EventFn,
) -> Result<CheckReport, Error> {
    let mut manifest: Manifest =
        catalog::fetch_manifest(remote, t, keys, share, snap, state_dir).await?;
    let tmp_dir = &state_dir.join("tmp");
    let sealed = manifest.header.encrypt;
    let sealed_names = manifest.header.encrypt_names;
    let log: SharedLog = Arc::new(Mutex::new(Log {
        report: CheckReport {
            share: share.to_owned(),
            snapshot: snap.to_string(),
            bytes_pulled: manifest.pulled_bytes,
            ..CheckReport::default()
        },
        events,
    }));
    let sample = match &mode {
        Mode::Verify { sample_percent } if *sample_percent < 100.0 => {
            Some(((sample_percent.max(0.0) * 1000.0) as u64, salt()))
        }
        _ => None,
    };
    let keep_existing = match &mode {
        Mode::Dir {
            to,
            overwrite: false,
        } => Some(to.clone()),
        _ => None,
    };
    let dest = match mode {
        Mode::Dir { to, overwrite } => Dest::Dir(
            Placer::new(&to, overwrite)
                .map_err(|e| Error::new(format!("restore folder {}", to.display()), e))?,
        ),
        Mode::Tar(out) => Dest::Tar(
            TarOut::new(out, tmp_dir).map_err(|e| Error::new("starting the tar stream", e))?,
        ),
        Mode::Verify { .. } => Dest::Check,
    };
    // First pass: are the asked paths there, and how big is each folder's subtree.
    let mut planner = Planner::new(batch_entries);
    {
        let mut matched = vec![false; paths.len()];
        let mut reader = manifest.entries()?;
        let ctx = |e| Error::new(format!("the manifest of {share}/{snap}"), e);
        while let Some(e) = reader.next_entry().map_err(ctx)? {
            if let Some(which) = selects(paths, &e.path) {
                if !paths.is_empty() {
                    matched[which] = true;
                }
                planner.count(&e);
            }
        }
        if let Some(i) = matched.iter().position(|m| !m) {
            return Err(Error::new(
                format!("share {share}, snapshot {snap}"),
                format!(
                    "no {:?} in this snapshot",
                    String::from_utf8_lossy(&paths[i])
                ),
            ));
        }
    }
    let (tx, rx) = sync_channel::<Msg>(16);
    let worker_keys = sealed.then(|| keys.clone());
    let worker_log = log.clone();
    let handle = std::thread::Builder::new()
        .name("offsite-restore".into())
        .spawn(move || worker(rx, worker_keys, dest, worker_log))
        .map_err(|e| Error::new("starting the restore thread", e))?;
    let session = Session {
        remote,
        t,
        share,
        snap,
        tx: &tx,
        log: &log,
        sealed_names,
        sample,
        keep_existing: keep_existing.as_deref(),
    };
    // Second pass: batches of entries, each pulled as soon as it is planned.
    let whole = paths.is_empty();
    let mut names = RemoteNames::new(sealed_names.then(|| keys.clone()));
    let mut outcome: Result<(), Error> = Ok(());
    {
        let mut reader = manifest.entries()?;
        let ctx = |e| Error::new(format!("the manifest of {share}/{snap}"), e);
        loop {
            let next = match reader.next_entry().map_err(ctx) {
                Ok(n) => n,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            match next {
                Some(e) => {
                    if selects(paths, &e.path).is_none() {
                        continue;
                    }
                    let remote_path = match names.map(&e.path) {
                        Ok(r) => r,
                        Err(why) => {
                            problem(&log, &e.path, Problem::Failed(why));
                            continue;
                        }
                    };
                    if e.kind == EntryKind::Dir {
                        let _ = tx.send(Msg::Dir(Box::new(e.clone())));
                    }
                    planner.plan(e, remote_path, whole);
                }
                None => planner.finish(whole),
            }
            while let Some(batch) = planner.next_batch() {
                if let Err(e) = session.pull(batch).await {
                    outcome = Err(e);
                    break;
                }
            }
            if next_is_done(&outcome, &planner) {
                break;
            }
        }
    }
    drop(tx);
    let dest = handle
        .join()
        .map_err(|_| Error::new("the restore thread", "panicked"))?;
    outcome?;
    // Folders get their permissions and mtimes once everything inside is written.
    match dest {
        Dest::Dir(placer) => {
            let mut reader = manifest.entries()?;
            let ctx = |e| Error::new(format!("the manifest of {share}/{snap}"), e);
            while let Some(e) = reader.next_entry().map_err(ctx)? {
                if e.kind == EntryKind::Dir
                    && selects(paths, &e.path).is_some()
                    && let Err(err) = placer.finish_dir(&e.path, e.perms, e.mtime, e.mtime_nsec)
                {
                    let p = match err {
                        PlaceError::Exists => Problem::Exists,
                        PlaceError::Io(why) => Problem::Failed(why),
                    };
                    problem(&log, &e.path, p);
                }
            }
        }
        Dest::Tar(tar) => tar
            .finish()
            .map_err(|e| Error::new("finishing the tar stream", e))?,
        Dest::Check => {}
    }
    let report = lock(&log).report.clone();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_paths_are_normalized_and_nested_ones_dropped() {
        let p = |v: &[&str]| -> Vec<Vec<u8>> { v.iter().map(|s| s.as_bytes().to_vec()).collect() };
        assert_eq!(
            normalize_paths(&p(&["/a/", "./b", "a/c", "ab"])).unwrap(),
            p(&["a", "ab", "b"])
        );
        assert_eq!(normalize_paths(&p(&["x", "."])).unwrap(), p(&[]));
        assert!(normalize_paths(&p(&["../etc"])).is_err());
        assert!(normalize_paths(&p(&["a//b"])).is_err());
    }
}
