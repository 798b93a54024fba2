//! `backup` (package `offsite-backup`): the job the box exists for. Each share is walked, sealed on the fly
//! where the owner asked for encryption, and pushed with the native rsync client into a new snapshot folder
//! on the target, hard-linked to the previous snapshot so unchanged files cost nothing there; then old
//! snapshots are pruned.
//!
//! Data flows one way: [`walk`] (share walker) → [`engine`] (index check, sealing) → `rsync_wire` (sender)
//! → `remote` (SSH channel or local process). Nothing here prints: progress and results are reported as
//! [`progress::Progress`] events and a [`report::RunReport`].
//!
//! # Layout
//! * [`config`] — the TOML config file, validated with file, line and key in every error
//! * [`bundle_io`] — the config bundle for a USB key: export and import
//! * [`exclude`] — rsync-style exclude patterns, matched on bytes
//! * [`walk`] — the depth-first share walk in a fixed order
//! * [`index`] — the per-share index that lets unchanged files cost a `stat`
//! * [`manifest`] — the sealed per-snapshot manifest
//! * [`snapshot`] — snapshot names and the retention policy
//! * [`remote_ops`] — listing, creating and deleting snapshot folders through rsync
//! * [`engine`] — one backup run
//! * [`lock`] — runs of one config never overlap
//! * [`progress`], [`report`] — what a run tells its caller
//! * [`restore`] — snapshots, listing, restore, verify, unseal-tree
//! * [`records`] — length-prefixed postcard record files; [`record_codec`] — postcard by hand for the
//!   records handled once a file every night
//! * `arena` (private) — a batch's paths, written into shared chunks during the walk and cut once
//!
//! # Memory
//! Nothing grows with the number of files: the walk holds one folder listing per level, the index and the
//! manifest are streamed to and from disk in walk order, and the share is pushed in batches of at most
//! [`engine::BackupOptions::batch_entries`] entries (five times that when none is to be read), one rsync
//! session each (all over one SSH connection), two batches alive at most.
//! Nothing grows with file sizes: files are sealed as the rsync sender reads them.

use std::fmt;
use std::path::Path;

mod arena;
pub mod bundle_io;
pub mod config;
mod config_write;
pub mod content;
pub mod engine;
pub mod exclude;
pub mod index;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod record_codec;
pub mod records;
pub mod remote_ops;
pub mod report;
pub mod restore;
pub mod snapshot;
pub mod walk;

pub use config::{Config, ConfigError, ShareConfig};
pub use engine::{BackupOptions, run_backup};
pub use progress::Progress;
pub use report::{RunReport, ShareReport, ShareStatus};

/// An error with what was being done when it happened (share, file, host).
#[derive(Debug)]
pub struct Error {
    context: String,
    message: String,
    integrity: bool,
}

impl Error {
    pub fn new(context: impl Into<String>, err: impl fmt::Display) -> Error {
        Error {
            context: context.into(),
            message: err.to_string(),
            integrity: false,
        }
    }

    /// Data on the target (or a copy of it) failed authentication: tampered, cut, or a wrong key.
    pub fn integrity(context: impl Into<String>, err: impl fmt::Display) -> Error {
        Error {
            integrity: true,
            ..Error::new(context, err)
        }
    }

    pub fn is_integrity(&self) -> bool {
        self.integrity
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

impl std::error::Error for Error {}

/// fsyncs the folder holding `path`, so a rename into it survives a power cut.
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `data` so that a power cut leaves the old or the new content, never a torn file:
/// a temporary file in the same folder (mode 0600), fsync, rename, fsync of the folder.
pub(crate) fn replace_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".offsite-")
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(path)
}
