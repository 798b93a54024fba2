//! Events a running backup reports, for a progress bar on a terminal, plain log lines, or the web page.

use crate::report::ShareReport;

/// Counters of the share being backed up, as of the event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Entries walked (files, folders, symlinks).
    pub entries: u64,
    /// Files walked, and their plaintext bytes.
    pub files: u64,
    pub bytes: u64,
    /// Files the index proved unchanged (not read).
    pub unchanged: u64,
    /// Files read (to size, seal or hash), and plaintext bytes read.
    pub files_read: u64,
    pub bytes_read: u64,
    /// Bytes produced for the target (sealed or plain) when asked for by the receiver.
    pub bytes_produced: u64,
    /// Literal bytes sent, and bytes the target rebuilt from its copies.
    pub literal_bytes: u64,
    pub matched_bytes: u64,
    /// Files skipped with an error.
    pub failed: u64,
}

/// One event of a run.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A share is starting; `snapshot` is the folder being written (`None` for a dry run).
    ShareStarted {
        share: &'a str,
        snapshot: Option<&'a str>,
    },
    /// Periodic counters (after every batch of files, and at least every few thousand entries).
    Counters { share: &'a str, counters: Counters },
    /// One entry could not be backed up; the rest goes on.
    Skipped {
        share: &'a str,
        path: &'a [u8],
        reason: &'a str,
    },
    /// A message from the target's rsync (a warning, usually).
    Remote { share: &'a str, text: &'a str },
    /// A share is done (successfully or not).
    ShareFinished { report: &'a ShareReport },
}
