//! What is on the target, as the owner sees it: the snapshots of a share, and a snapshot's manifest
//! fetched, authenticated and opened (the plaintext goes to an anonymous temporary file: it grows with the
//! number of entries, memory must not).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;

use remote::Remote;
use rsync_wire::{FilterRule, PullOptions, PullSink};
use seal::{Keys, RelPath, SealError, Unsealer};

use crate::Error;
use crate::config::TargetConfig;
use crate::manifest::{MANIFEST_NAME, ManifestHeader, ManifestReader, sealed_identity};
use crate::remote_ops::{self, ShareOnTarget, share_path};
use crate::snapshot::SnapshotId;

/// An opened, authenticated manifest.
pub struct Manifest {
    plain: File,
    pub share: String,
    pub snapshot: String,
    pub header: ManifestHeader,
    /// Size of the sealed manifest on the target.
    pub sealed_len: u64,
    /// Bytes received to fetch it (0 when read from a local copy).
    pub pulled_bytes: u64,
}

impl Manifest {
    /// Authenticates the sealed manifest read from `sealed` (of `share`'s snapshot `snapshot`) and keeps
    /// its plaintext in a temporary file in `tmp_dir`. A wrong key or any change is an error here, before
    /// anything else is done.
    pub fn open(
        keys: &Keys,
        share: &str,
        snapshot: &str,
        sealed: impl Read,
        tmp_dir: &Path,
    ) -> Result<Manifest, Error> {
        let what = format!("the manifest of {share}/{snapshot}");
        let identity = RelPath::new(sealed_identity(share)).map_err(|e| Error::new(&what, e))?;
        std::fs::create_dir_all(tmp_dir)
            .map_err(|e| Error::new(format!("creating {}", tmp_dir.display()), e))?;
        let mut plain =
            tempfile::tempfile_in(tmp_dir).map_err(|e| Error::new("a temporary file", e))?;
        let mut u = Unsealer::new(keys, &identity, sealed);
        let fail = |e: SealError| {
            if e.is_integrity() {
                Error::integrity(&what, explain(e))
            } else {
                Error::new(&what, e)
            }
        };
        u.check_header().map_err(fail)?;
        {
            let mut w = io::BufWriter::with_capacity(64 * 1024, &mut plain);
            io::copy(&mut u, &mut w).map_err(|e| fail(SealError::from_io(e, "reading")))?;
            w.flush().map_err(|e| Error::new(&what, e))?;
        }
        let sealed_len = u.stats().sealed_len;
        plain.rewind().map_err(|e| Error::new(&what, e))?;
        // Authentic, but for another snapshot (copied into this folder): as bad as a forgery.
        let header = ManifestReader::new(BufReader::new(&plain), share, snapshot)
            .map_err(|e| Error::integrity(&what, e))?
            .header;
        Ok(Manifest {
            plain,
            share: share.to_owned(),
            snapshot: snapshot.to_owned(),
            header,
            sealed_len,
            pulled_bytes: 0,
        })
    }

    /// Reads the entries from the start.
    pub fn entries(&mut self) -> Result<ManifestReader<BufReader<&File>>, Error> {
        let ctx = |e| {
            Error::new(
                format!("the manifest of {}/{}", self.share, self.snapshot),
                e,
            )
        };
        self.plain.rewind().map_err(ctx)?;
        ManifestReader::new(
            BufReader::with_capacity(64 * 1024, &self.plain),
            &self.share,
            &self.snapshot,
        )
        .map_err(|e| {
            Error::new(
                format!("the manifest of {}/{}", self.share, self.snapshot),
                e,
            )
        })
    }
}

/// A wrong key gets a message that says what to do.
fn explain(e: SealError) -> String {
    match e {
        SealError::WrongKey { .. } => format!(
            "{e}. This is not the key these backups were made with: use the key file (or recovery text) \
             of the box that made them"
        ),
        e => e.to_string(),
    }
}

/// Fetches and opens the manifest of `share`'s snapshot `snap`.
///
/// The sealed manifest is pulled into `<state_dir>/manifests/<share>/` with plain rsync, and the copy already
/// there (the last one fetched for this share) is its basis: consecutive snapshots' manifests differ only
/// where entries changed, so after the first fetch rsync sends a small delta instead of the whole list
/// (a megabyte per 20,000 files). A copy that rsync's quick check took for the wanted one (same size and
/// mtime) but belongs to another snapshot is caught by the manifest's own header, and fetched again whole.
pub async fn fetch_manifest(
    remote: &Remote,
    t: &TargetConfig,
    keys: &Keys,
    share: &str,
    snap: &SnapshotId,
    state_dir: &Path,
) -> Result<Manifest, Error> {
    let id = snap.to_string();
    let tmp_dir = state_dir.join("tmp");
    let cache = state_dir.join("manifests").join(share);
    std::fs::create_dir_all(&cache)
        .map_err(|e| Error::new(format!("creating {}", cache.display()), e))?;
    let path = share_path(t, share, &[&id, MANIFEST_NAME]);
    let local = cache.join(MANIFEST_NAME);
    let what = || {
        format!(
            "fetching the manifest of {share}/{id} from {}",
            remote.describe()
        )
    };
    let mut opts = PullOptions::default();
    opts.sender.timeout_secs = Some(t.timeout_secs);
    for attempt in 0..2 {
        let argv = rsync_wire::args::sender_args(&opts.sender, &[&path[..]])
            .map_err(|e| Error::new(what(), e))?;
        let session = remote
            .open(&argv)
            .await
            .map_err(|e| Error::new(format!("starting rsync on {}", remote.describe()), e))?;
        let stats = rsync_wire::pull(session, &cache, &opts, &mut |_| {})
            .await
            .map_err(|e| Error::new(what(), e))?;
        let file = std::fs::File::open(&local)
            .map_err(|e| Error::new(format!("{}", local.display()), e))?;
        match Manifest::open(keys, share, &id, BufReader::new(file), &tmp_dir) {
            Ok(mut m) => {
                m.pulled_bytes = stats.bytes_received;
                return Ok(m);
            }
            Err(_) if attempt == 0 && stats.files_transferred == 0 => {
                let _ = std::fs::remove_file(&local);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::new(what(), "the manifest could not be fetched"))
}

/// One streaming pull of `path` on the target with `rules`. The outer error is starting the session; the
/// inner one is the session's outcome (callers treat `PullFailed` as per-file failures).
pub async fn pull_into(
    remote: &Remote,
    t: &TargetConfig,
    path: &[u8],
    filters: Vec<FilterRule>,
    sink: &mut dyn PullSink,
    events: &mut (dyn FnMut(rsync_wire::Event<'_>) + Send),
) -> Result<rsync_wire::Result<rsync_wire::PullStats>, Error> {
    let mut opts = PullOptions {
        filters,
        ..PullOptions::default()
    };
    opts.sender.timeout_secs = Some(t.timeout_secs);
    let argv = rsync_wire::args::sender_args(&opts.sender, &[path])
        .map_err(|e| Error::new(String::from_utf8_lossy(path), e))?;
    let session = remote
        .open(&argv)
        .await
        .map_err(|e| Error::new(format!("starting rsync on {}", remote.describe()), e))?;
    Ok(rsync_wire::pull_stream(session, sink, &opts, events).await)
}

/// The snapshot a command works on: `wanted` (must exist and be complete), or the newest complete one.
pub fn choose_snapshot(
    on_target: &ShareOnTarget,
    share: &str,
    wanted: Option<&str>,
) -> Result<SnapshotId, Error> {
    match wanted {
        None => on_target.newest_complete().ok_or_else(|| {
            Error::new(
                format!("share {share}"),
                "no complete snapshot on the target",
            )
        }),
        Some(w) => {
            let id = SnapshotId::parse(w).ok_or_else(|| {
                Error::new(
                    format!("snapshot {w:?}"),
                    "not a snapshot name (YYYY-MM-DDTHHMMSSZ)",
                )
            })?;
            match on_target.snapshots.iter().find(|s| s.0 == id) {
                Some((_, true)) => Ok(id),
                Some((_, false)) => Err(Error::new(
                    format!("share {share}, snapshot {w}"),
                    "incomplete (its run did not finish): it has no manifest",
                )),
                None => Err(Error::new(
                    format!("share {share}, snapshot {w}"),
                    "not on the target",
                )),
            }
        }
    }
}

/// Connects to the config's target (for callers that do not depend on the `remote` crate themselves).
pub async fn connect(t: &TargetConfig) -> Result<Remote, Error> {
    let target = remote_ops::remote_target(t);
    Remote::connect(&target)
        .await
        .map_err(|e| Error::new(format!("connecting to {}", remote_ops::describe(t)), e))
}

/// Lists the share's snapshots on the target.
pub async fn snapshots(
    remote: &Remote,
    t: &TargetConfig,
    share: &str,
) -> Result<ShareOnTarget, Error> {
    remote_ops::list_share(remote, t, share).await
}

/// A complete snapshot's totals (from its manifest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Plaintext bytes of the files.
    pub bytes: u64,
    /// Bytes of the files on the target (sealed sizes).
    pub remote_bytes: u64,
}

impl Manifest {
    /// Counts the entries.
    pub fn summary(&mut self) -> Result<Summary, Error> {
        let what = format!("the manifest of {}/{}", self.share, self.snapshot);
        let mut s = Summary::default();
        let mut r = self.entries()?;
        while let Some(e) = r.next_entry().map_err(|x| Error::new(&what, x))? {
            match e.kind {
                crate::manifest::EntryKind::File => {
                    s.files += 1;
                    s.bytes += e.size;
                    s.remote_bytes += e.remote_size;
                }
                crate::manifest::EntryKind::Dir => s.dirs += 1,
                crate::manifest::EntryKind::Symlink => s.symlinks += 1,
            }
        }
        Ok(s)
    }

    /// The entries directly inside `dir` (plaintext, relative to the share root; empty = the root), in
    /// walk order. Errors if `dir` is not a folder of the snapshot.
    pub fn list_dir(&mut self, dir: &[u8]) -> Result<Vec<crate::manifest::ManifestEntry>, Error> {
        let what = format!("the manifest of {}/{}", self.share, self.snapshot);
        let mut out = Vec::new();
        let mut found = dir.is_empty();
        let mut r = self.entries()?;
        while let Some(e) = r.next_entry().map_err(|x| Error::new(&what, x))? {
            if e.path == dir {
                if e.kind != crate::manifest::EntryKind::Dir {
                    out.push(e);
                    return Ok(out);
                }
                found = true;
                continue;
            }
            let parent = match e.path.iter().rposition(|&b| b == b'/') {
                Some(i) => &e.path[..i],
                None => &e.path[..0],
            };
            if parent == dir {
                out.push(e);
            }
        }
        if !found {
            return Err(Error::new(
                format!("{}/{}", self.share, self.snapshot),
                format!("no {:?} in this snapshot", String::from_utf8_lossy(dir)),
            ));
        }
        Ok(out)
    }
}

/// Summaries of snapshots already counted, kept in `<state_dir>/snapshots.json` (a snapshot never
/// changes once complete, so its manifest is fetched once per box).
pub struct SummaryCache {
    path: std::path::PathBuf,
    map: std::collections::BTreeMap<String, Summary>,
}

impl SummaryCache {
    pub fn load(state_dir: &Path) -> SummaryCache {
        let path = state_dir.join("snapshots.json");
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        SummaryCache { path, map }
    }

    pub fn get(&self, share: &str, snap: &SnapshotId) -> Option<Summary> {
        self.map.get(&format!("{share}/{snap}")).copied()
    }

    pub fn put(&mut self, share: &str, snap: &SnapshotId, s: Summary) {
        self.map.insert(format!("{share}/{snap}"), s);
    }

    /// Keeps only the snapshots still on the target for `share`, then saves (atomically; a cache, so
    /// failures are ignored).
    pub fn save(&mut self, share: &str, on_target: &ShareOnTarget) {
        let prefix = format!("{share}/");
        let keep: std::collections::HashSet<String> = on_target
            .snapshots
            .iter()
            .map(|s| format!("{share}/{}", s.0))
            .collect();
        self.map
            .retain(|k, _| !k.starts_with(&prefix) || keep.contains(k));
        let Ok(text) = serde_json::to_vec_pretty(&self.map) else {
            return;
        };
        let Some(dir) = self.path.parent() else {
            return;
        };
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir)
            && tmp.write_all(&text).is_ok()
        {
            let _ = tmp.persist(&self.path);
        }
    }
}
