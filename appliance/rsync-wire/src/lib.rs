//! `rsync_wire` (package `offsite-rsync`): a native, client-side
//! implementation of the rsync wire protocol, written for offsite's backup
//! appliance. No maintained Rust crate implements this protocol (existing
//! ones are protocol-27 list-only, daemon-only alphas, or GPL), and
//! `fast_rsync`/librsync use a different delta format, so it is hand-written
//! here from the protocol description, reading rsync's, openrsync's and
//! gokrazy/rsync's sources for reference only.
//!
//! # What it does
//! **Push** (we are the sender, the remote `rsync --server` receives) of a
//! caller-supplied file list — regular files, directories and symlinks —
//! with data produced lazily by a [`ContentSource`]. Protocol 31 (a 3.4+
//! server answers 32, same wire format), 30, and 29/28/27 (MD4 sums, int32
//! mtimes, unmultiplexed client output). Checksums negotiated: xxh128, md5.
//! Memory per file is independent of its size: the data streams through a
//! rolling window; only the receiver's block-sum table grows with the basis
//! size and is bounded by [`PushOptions::max_block_sums`].
//!
//! Supported options: `--delete` with exclude patterns sent as the filter
//! list, `--link-dest` / `--compare-dest` (up to 20), `--partial-dir`,
//! `--timeout` (keepalives every half of it, error after all of it),
//! per-file progress and totals ([`PushStats`]).
//!
//! **Pull** ([`pull()`], [`pull_local`]: we are generator and receiver, the
//! remote runs `rsync --server --sender`, command line from
//! [`args::sender_args`]) into a local directory, at the same protocols.
//! Include/exclude rules are sent as the filter list ([`FilterRule`];
//! [`FilterRule::only`] selects one file or one folder of a tree). Files
//! whose size and mtime match are skipped; for the others the local file is
//! used as the basis (its block sums are sent, block size as rsync's
//! `sum_sizes_sqroot`), the data is rebuilt into a temporary file in the same
//! directory, the whole-file digest is verified, then mode, mtime (with
//! nanoseconds at 31) and the name are set. A digest mismatch is redone once
//! (full-length block sums); a second failure, or a local error, ends the pull
//! with [`Error::PullFailed`] listing the entries (the session itself still
//! finishes cleanly). Directories (modes and mtimes set last), symlinks
//! (target stored as is) and empty files are created. Generator and receiver
//! run concurrently. Memory is independent of file sizes (literal data is
//! streamed, the basis is read one block at a time); the received file list
//! is bounded by [`ListLimits`].
//!
//! **Streaming pull** ([`pull_stream`], [`pull_stream_local`]): the same
//! session without a local directory: a [`PullSink`] chooses from the
//! received list what to request and gets each file's bytes in order (no
//! basis, so all literal data), with rsync's digest verdict at the end of
//! each file and the redo pass. A restore authenticates and decrypts on the
//! way instead of staging a copy.
//!
//! **List-only** ([`list()`], [`list_local`]): the file list of a remote
//! path, recursive (`-r`) or one level (`-d`), with names, sizes, mtimes,
//! modes and symlink targets; nothing is transferred or written.
//!
//! ## Safety of a pull against a hostile server
//! * Names that are absolute, contain `..`, `.` or empty components or NUL,
//!   are listed twice, or whose parent is not a listed directory are refused
//!   before anything is written ([`flist::check_received_name`]).
//! * A name is only used below directories this session created or checked
//!   to be real directories; a symlink or file where the list has a
//!   directory is replaced, never followed. Temporary files are created with
//!   `O_EXCL`, attributes are set through the open handle, the final rename
//!   replaces (does not follow) a symlink, and a basis is only read when
//!   `lstat` and the opened handle agree it is the same regular file.
//! * Every length and count is checked before allocating: names and symlink
//!   targets (<= 4095 bytes), entries and total name bytes ([`ListLimits`]),
//!   the echoed sum head must equal the one we sent, block indices must be in
//!   range, literal runs are streamed. Temporary files are removed when a
//!   session fails half-way.

//! # Layout
//! * [`codec`] — int32/varint/varlong/ndx encodings
//! * [`mux`] — multiplexed frames, message handling, keepalives
//! * [`handshake`] — versions, compat flags, checksum negotiation, seed
//! * [`checksum`] — rolling sum, block/file digests, block sizes
//! * [`flist`] — entries, `f_name_cmp` order, file-list encoding and
//!   decoding (received names are validated and sorted here)
//! * [`sender`] — per-file delta, redo pass, NDX_DONE phases (push)
//! * `generator` — pull: directories, symlinks, quick check, block sums of
//!   the basis, requests, phase sequence and goodbye
//! * `receiver` — pull: tokens into a temporary file, digest check, redo
//! * `dest` — pull: the local destination tree, never through a symlink
//! * [`filter`] — include/exclude rules sent to a remote sender
//! * [`args`] — the `rsync --server [--sender]` argument vectors, quoting
//! * [`transport`] — the reader/writer/[`RemoteEnd`] boundary, local process
//! * [`mod@push`], [`mod@pull`] — the sessions tying it together
//!
//! # Usage
//! ```no_run
//! # async fn demo() -> rsync_wire::Result<()> {
//! use rsync_wire::{FileEntry, PushOptions};
//! struct Files; // produces each file's bytes when the receiver asks
//! impl rsync_wire::ContentSource for Files {
//!     type Reader = std::io::Cursor<Vec<u8>>;
//!     async fn open(&mut self, _i: usize, _e: &FileEntry) -> std::io::Result<Self::Reader> {
//!         Ok(std::io::Cursor::new(b"hello\n".to_vec()))
//!     }
//! }
//! let files = vec![FileEntry::file("hello.txt", 6, 1_700_000_000, 0o644)];
//! let mut opts = PushOptions::default();
//! opts.server.delete = true;
//! let stats = rsync_wire::push_local(
//!     "rsync".as_ref(), "/srv/backup".as_ref(), files, &mut Files, &opts, &mut |_event| {},
//! ).await?;
//! println!("{} literal bytes", stats.literal_bytes);
//! # Ok(()) }
//! ```
//! Pulling one folder of a remote tree into a local directory:
//! ```no_run
//! # async fn demo() -> rsync_wire::Result<()> {
//! use rsync_wire::{FilterRule, PullOptions};
//! let opts = PullOptions {
//!     filters: FilterRule::only(b"photos/2024", true)?,
//!     ..PullOptions::default()
//! };
//! let stats = rsync_wire::pull_local(
//!     "rsync".as_ref(), b"/srv/backup/", "/restore".as_ref(), &opts, &mut |_event| {},
//! ).await?;
//! println!("{} files, {} literal bytes", stats.files_transferred, stats.literal_bytes);
//! let entries = rsync_wire::list_local("rsync".as_ref(), b"/srv/backup/", false, &opts).await?;
//! # let _ = entries;
//! # Ok(()) }
//! ```
//! For another transport build a [`Connection`] (reader, writer and a
//! [`RemoteEnd`] giving stderr and exit status), start the remote with
//! [`args::server_args`] (shell-quoted by [`args::shell_command`]) and call
//! [`push()`]; for a pull or a listing start it with [`args::sender_args`] and
//! call [`pull()`] or [`list()`].
//!
//! # Protocol notes
//! * The file list is sorted as rsync's `f_name_cmp` does: from protocol 29
//!   files before subdirectories; before 29 plain byte order of the whole
//!   path, `.` included (so ` x` and `-x` sort before `.`). Both sides index
//!   files by that order; a received list is sorted the same way.
//! * Exit status 23 (partial transfer) is returned as [`Error::RemoteExit`]
//!   when a file could not be read; the other files are still transferred.
//! * A file whose content read fails half-way is sent with a deliberately
//!   wrong digest so the receiver discards it and asks again (redo pass).
//!
//! # Not done yet
//! * The `rsync://` daemon protocol.
//! * SSH transport (to be added as another [`Connection`] provider).
//! * Owners/groups (`-o`/`-g`), devices/specials, hard links (`-H`), ACLs,
//!   xattrs, compression (`-z`), incremental recursion, `--bwlimit`,
//!   `--inplace`/`--append`, `--checksum` (`-c`).
//! * Keepalives at protocol < 30 (only MSG_NOOP/empty DATA exist at 30/31).
//! * On a content-provider failure at protocol < 30 the session fails
//!   (there is no MSG_NO_SEND before 30).
//! * Pull: owners are not set (symlink mtimes are, on the link itself,
//!   with `utimensat(AT_SYMLINK_NOFOLLOW)`); `--delete` of local extras,
//!   `--partial`, `--inplace`,
//!   `--link-dest`, `--checksum` and several remote paths in one session
//!   are not offered; an existing directory where the server lists a file
//!   or symlink is reported as a failed entry instead of being removed. The
//!   size of each received file is not capped (a hostile server can fill the
//!   disk, not the memory). Local file-system calls are blocking `std::fs`
//!   calls made on the async task (short: one block or buffer each).

pub mod args;
pub mod checksum;
pub mod codec;
mod dest;
pub mod error;
pub mod events;
pub mod filter;
pub mod flist;
mod generator;
pub mod handshake;
pub mod mux;
pub mod pull;
pub mod push;
mod receiver;
pub mod sender;
pub mod throttle;
pub mod transport;

pub use args::{AltDest, SenderOptions, ServerOptions};
pub use checksum::ChecksumKind;
pub use error::{Error, Result};
pub use events::{Event, FileProgress, MessageKind};
pub use filter::FilterRule;
pub use flist::{EntryKind, FileEntry, FileList, ListLimits};
pub use pull::{
    PullOptions, PullSink, PullStats, list, list_local, pull, pull_local, pull_stream,
    pull_stream_local,
};
pub use push::{PendingExit, PushOptions, push, push_list, push_list_deferred, push_local};
pub use sender::{ContentSource, PushStats};
pub use throttle::Throttled;
pub use transport::{Connection, RemoteEnd, RemoteOutcome, spawn_local};
