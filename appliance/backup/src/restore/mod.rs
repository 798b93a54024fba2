//! Getting files back: list a share's snapshots, list a snapshot's folder, restore files, folders or a
//! whole share into a folder or a tar stream, verify that the target is restorable — through the rsync
//! protocol against the target — and unseal a snapshot folder copied off the target by any means, with
//! only the key.
//!
//! Every file is authenticated against the snapshot's sealed manifest before its plaintext is put in its
//! final place: a file that was changed, cut, swapped with another, rolled back to an older version,
//! deleted or added on the target is reported by name and reason, and the others are restored.
//!
//! * [`catalog`] — snapshots on the target, fetching and opening a manifest
//! * [`pull`] — restore and verify through one filtered rsync pull
//! * [`local`] — `unseal-tree`: a snapshot folder on local disk
//! * [`file`](mod@file) — one file: authenticate, then write, archive or just check
//! * [`plan`] — cutting a restore into rsync sessions of bounded size
//! * [`place`] — the destination folder, never written through a symlink
//! * [`tar_out`] — the tar stream
//! * [`problem`] — what was wrong, per file, and the run's report

pub mod catalog;
pub mod file;
pub mod local;
pub mod place;
pub mod plan;
pub mod problem;
pub mod pull;
pub mod tar_out;

pub use problem::{CheckEvent, CheckReport, FileProblem, Problem};
