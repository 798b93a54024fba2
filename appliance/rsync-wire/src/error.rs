//! The crate's single error type.

use std::io;

/// Everything that can go wrong during a session.
///
/// Errors caused by the peer carry enough context (what was being read, the
/// offending value) to diagnose a broken or hostile server; errors that end a
/// session started through a [`crate::transport::Connection`] are wrapped in
/// [`Error::Session`] together with the remote's exit status and stderr.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from or writing to the transport failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the session was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection in the middle of the protocol.
    #[error("connection closed by the peer while {0}")]
    UnexpectedEof(&'static str),
    /// The peer sent something that violates the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer sent a length or count outside the accepted bounds.
    #[error("peer sent an out-of-range {what}: {value} (allowed {allowed})")]
    OutOfRange {
        /// Which field.
        what: &'static str,
        /// The value received.
        value: i64,
        /// Human-readable bound.
        allowed: String,
    },
    /// The version exchange failed (often a noisy remote shell).
    #[error(
        "protocol version mismatch: remote sent {remote:#x}, expected 20..=40 (is the remote shell clean?)"
    )]
    VersionMismatch {
        /// The raw 32-bit value received.
        remote: u32,
    },
    /// The remote speaks a protocol older than this crate supports.
    #[error("remote protocol {remote} is not supported (need {min}..)")]
    UnsupportedProtocol {
        /// Negotiated protocol.
        remote: u32,
        /// Lowest supported.
        min: u32,
    },
    /// Checksum negotiation found no common algorithm.
    #[error("no common checksum algorithm (server offers: {server})")]
    NoCommonChecksum {
        /// The server's list.
        server: String,
    },
    /// The caller's file list or options are invalid.
    #[error("invalid argument: {0}")]
    InvalidInput(String),
    /// The server reported a fatal error exit (MSG_ERROR_EXIT).
    #[error("remote rsync exited with an error (code {0})")]
    RemoteErrorExit(i32),
    /// Nothing was received for longer than the configured timeout.
    #[error("timeout: no data from the peer for {0} s")]
    Timeout(u64),
    /// The caller's content provider failed in a way that cannot be reported
    /// to the peer (protocol < 30 has no MSG_NO_SEND).
    #[error("content for {name} could not be opened: {source}")]
    Content {
        /// Entry name (lossy UTF-8).
        name: String,
        /// The provider's error.
        #[source]
        source: io::Error,
    },
    /// A session error together with what the remote end left behind.
    #[error("{source}; remote exit status: {}; remote messages: {messages:?}; remote stderr: {stderr:?}", fmt_status(*.exit_status))]
    Session {
        /// The primary error.
        #[source]
        source: Box<Error>,
        /// Remote exit code, if known.
        exit_status: Option<i32>,
        /// Captured remote stderr (bounded, lossy UTF-8).
        stderr: String,
        /// Error and warning messages the server sent in-band (bounded).
        messages: String,
    },
    /// A pull finished cleanly, but some entries could not be written
    /// locally or failed their checksum twice.
    #[error("pull incomplete: {} entries failed, first: {}", failed.len(), fmt_failed(failed))]
    PullFailed {
        /// (name as listed, error text) for each failed entry.
        failed: Vec<(Vec<u8>, String)>,
        /// What was done.
        stats: Box<crate::pull::PullStats>,
    },
    /// The protocol finished, but the remote exited with a non-zero code.
    #[error(
        "remote rsync exited with code {code}; remote messages: {messages:?}; remote stderr: {stderr:?}"
    )]
    RemoteExit {
        /// The exit code (23 partial transfer, 24 vanished files, 12 stream error, ...).
        code: i32,
        /// Captured remote stderr.
        stderr: String,
        /// Error and warning messages the server sent in-band (bounded).
        messages: String,
    },
}

fn fmt_failed(f: &[(Vec<u8>, String)]) -> String {
    match f.first() {
        Some((n, e)) => format!("{:?}: {e}", String::from_utf8_lossy(n)),
        None => "none".to_string(),
    }
}

fn fmt_status(s: Option<i32>) -> String {
    match s {
        Some(c) => c.to_string(),
        None => "unknown".to_string(),
    }
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                Error::UnexpectedEof(context)
            } else {
                Error::Io { context, source }
            }
        }
    }

    pub(crate) fn protocol(msg: impl Into<String>) -> Error {
        Error::Protocol(msg.into())
    }

    pub(crate) fn range(what: &'static str, value: i64, allowed: impl Into<String>) -> Error {
        Error::OutOfRange {
            what,
            value,
            allowed: allowed.into(),
        }
    }
}

/// Shorthand result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
