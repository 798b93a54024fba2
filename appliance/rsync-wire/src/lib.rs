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
//! # Layout
//! * [`codec`] — int32/varint/varlong/ndx encodings
//! * [`mux`] — multiplexed frames, message handling, keepalives
//! * [`handshake`] — versions, compat flags, checksum negotiation, seed
//! * [`checksum`] — rolling sum, block/file digests, block sizes
//! * [`flist`] — entries, `f_name_cmp` order, file-list encoding
//! * [`sender`] — per-file delta, redo pass, NDX_DONE phases
//! * [`args`] — the `rsync --server` argument vector and shell quoting
//! * [`transport`] — the reader/writer/[`RemoteEnd`] boundary, local process
//! * [`mod@push`] — the session tying it together
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
//! For another transport build a [`Connection`] (reader, writer and a
//! [`RemoteEnd`] giving stderr and exit status), start the remote with
//! [`args::server_args`] (shell-quoted by [`args::shell_command`]) and call
//! [`push()`].
//!
//! # Protocol notes
//! * The file list is sorted as rsync's `f_name_cmp` does: from protocol 29
//!   files before subdirectories; before 29 plain byte order. Both sides
//!   index files by that order.
//! * Exit status 23 (partial transfer) is returned as [`Error::RemoteExit`]
//!   when a file could not be read; the other files are still transferred.
//! * A file whose content read fails half-way is sent with a deliberately
//!   wrong digest so the receiver discards it and asks again (redo pass).
//!
//! # Not done yet
//! * Pull (client as receiver/generator) and the `rsync://` daemon protocol.
//! * SSH transport (to be added as another [`Connection`] provider).
//! * Owners/groups (`-o`/`-g`), devices/specials, hard links (`-H`), ACLs,
//!   xattrs, compression (`-z`), incremental recursion, `--bwlimit`,
//!   `--inplace`/`--append`, `--checksum` (`-c`).
//! * Keepalives at protocol < 30 (only MSG_NOOP/empty DATA exist at 30/31).
//! * On a content-provider failure at protocol < 30 the session fails
//!   (there is no MSG_NO_SEND before 30).

pub mod args;
pub mod checksum;
pub mod codec;
pub mod error;
pub mod events;
pub mod flist;
pub mod handshake;
pub mod mux;
pub mod push;
pub mod sender;
pub mod transport;

pub use args::{AltDest, ServerOptions};
pub use checksum::ChecksumKind;
pub use error::{Error, Result};
pub use events::{Event, FileProgress, MessageKind};
pub use flist::{EntryKind, FileEntry, FileList};
pub use push::{PushOptions, push, push_list, push_local};
pub use sender::{ContentSource, PushStats};
pub use transport::{Connection, RemoteEnd, RemoteOutcome, spawn_local};
