//! The result of a run: per share, what was done, what failed, and the overall status. Serializable (JSON)
//! for the history the web page shows.

use serde::Serialize;

use crate::progress::Counters;

/// Skipped entries kept in a report (the count is always exact).
pub const MAX_REPORTED_SKIPS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareStatus {
    /// Everything was backed up.
    Ok,
    /// The snapshot is complete, but some entries could not be backed up (listed).
    Partial,
    /// No complete snapshot was made; the previous ones are untouched.
    Failed,
    /// Dry run: nothing was written.
    DryRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    /// Plaintext path relative to the share (lossy UTF-8 for display).
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShareReport {
    pub share: String,
    pub snapshot: Option<String>,
    pub status: ShareStatus,
    /// Why the share failed.
    pub error: Option<String>,
    pub counters: Counters,
    /// rsync sessions used (one per batch of entries).
    pub sessions: u64,
    pub bytes_sent: u64,
    pub skipped: Vec<Skip>,
    /// Snapshots removed by retention (and incomplete ones superseded).
    pub pruned: Vec<String>,
    /// Snapshots retention would remove (dry run).
    pub would_prune: Vec<String>,
    /// Notes that are not failures (an index that could not be used, ...).
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl ShareReport {
    pub fn new(share: &str) -> ShareReport {
        ShareReport {
            share: share.to_owned(),
            snapshot: None,
            status: ShareStatus::Ok,
            error: None,
            counters: Counters::default(),
            sessions: 0,
            bytes_sent: 0,
            skipped: Vec::new(),
            pruned: Vec::new(),
            would_prune: Vec::new(),
            notes: Vec::new(),
            seconds: 0.0,
        }
    }

    pub(crate) fn skip(&mut self, path: &[u8], reason: String) {
        self.counters.failed += 1;
        if self.skipped.len() < MAX_REPORTED_SKIPS {
            self.skipped.push(Skip {
                path: String::from_utf8_lossy(path).into_owned(),
                reason,
            });
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Start of the run (RFC 3339, UTC).
    pub started: String,
    pub target: String,
    pub shares: Vec<ShareReport>,
    /// A problem before any share could start (config, key, connection).
    pub error: Option<String>,
}

impl RunReport {
    /// Worst status over the shares (`Failed` when the run could not start).
    pub fn status(&self) -> ShareStatus {
        if self.error.is_some() {
            return ShareStatus::Failed;
        }
        let mut s = ShareStatus::Ok;
        for r in &self.shares {
            match r.status {
                ShareStatus::Failed => return ShareStatus::Failed,
                ShareStatus::Partial => s = ShareStatus::Partial,
                ShareStatus::DryRun if s == ShareStatus::Ok => s = ShareStatus::DryRun,
                _ => {}
            }
        }
        s
    }
}
