//! What a restore, a verify or an unseal-tree found wrong, file by file, and the run's totals.

use std::fmt;

use seal::SealError;
use serde::Serialize;

/// Why one entry could not be restored or verified as the snapshot's manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Problem {
    /// In the manifest, not on the target.
    Missing,
    /// On the target, not in the manifest (added or renamed there).
    Extra,
    /// Authentic for this path, but not the version the manifest records: an older (or other) copy of
    /// the same file was put in its place.
    RolledBack,
    /// Sealed for another path: two files were swapped or a file was moved on the target.
    Swapped,
    /// Not authentic: a changed byte, a cut, a forged record (the seal's reason).
    Tampered(String),
    /// A plain (unencrypted) share's file whose size or hash differs from the manifest: changed, rolled
    /// back or tampered on the target (plain files carry no seal to tell which).
    Changed(String),
    /// Not written: the destination exists and `--overwrite` was not given.
    Exists,
    /// A local or transfer error (the reason).
    Failed(String),
}

impl Problem {
    /// Classifies an unsealing error.
    pub fn from_seal(e: &SealError) -> Problem {
        match e {
            SealError::WrongPath => Problem::Swapped,
            e if e.is_integrity() => Problem::Tampered(e.to_string()),
            e => Problem::Failed(e.to_string()),
        }
    }

    /// The kind as one word (`missing`, `rolled_back`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::Extra => "extra",
            Problem::RolledBack => "rolled_back",
            Problem::Swapped => "swapped",
            Problem::Tampered(_) => "tampered",
            Problem::Changed(_) => "changed",
            Problem::Exists => "exists",
            Problem::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing on the target"),
            Problem::Extra => write!(f, "on the target but not in the snapshot's manifest"),
            Problem::RolledBack => write!(
                f,
                "rolled back: an authentic but different version of this file (not the one this snapshot recorded)"
            ),
            Problem::Swapped => write!(
                f,
                "swapped: the file on the target was sealed for another path"
            ),
            Problem::Tampered(why) => write!(f, "tampered: {why}"),
            Problem::Changed(why) => write!(f, "changed on the target: {why}"),
            Problem::Exists => write!(f, "exists in the destination (not overwritten)"),
            Problem::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// One problem of one entry. `path` is the plaintext path relative to the share root, or for an
/// [`Problem::Extra`] entry the name found on the target (sealed, when names are sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileProblem {
    #[serde(serialize_with = "lossy")]
    pub path: Vec<u8>,
    #[serde(flatten)]
    pub problem: Problem,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            String::from_utf8_lossy(&self.path),
            self.problem
        )
    }
}

/// At most this many problems are kept in a report (all are counted and sent as events).
pub const MAX_KEPT_PROBLEMS: usize = 1000;

/// What a restore, verify or unseal-tree did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub share: String,
    pub snapshot: String,
    /// Files (and sealed symlinks) restored or verified authentic.
    pub files_ok: u64,
    /// Their plaintext bytes.
    pub bytes_ok: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Files whose content was not checked (verify with a sample below 100 %); their sizes were.
    pub files_not_sampled: u64,
    /// Bytes received over the protocol, the manifest included (remote restore and verify).
    pub bytes_pulled: u64,
    /// Problems found (counted, all of them).
    pub problem_count: u64,
    /// The first [`MAX_KEPT_PROBLEMS`] problems.
    pub problems: Vec<FileProblem>,
}

impl CheckReport {
    pub fn add_problem(&mut self, p: FileProblem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_KEPT_PROBLEMS {
            self.problems.push(p);
        }
    }

    /// Everything restored or verified, nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }
}

/// Live events of a restore, verify or unseal-tree.
#[derive(Debug, Clone)]
pub enum CheckEvent<'a> {
    /// A file was restored or verified authentic.
    FileOk { path: &'a [u8], bytes: u64 },
    /// Something was wrong with one entry.
    Problem(&'a FileProblem),
}

/// Paths are bytes; JSON shows them as (lossy) UTF-8.
fn lossy<S: serde::Serializer>(path: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(path))
}
