//! One error type for everything the format can refuse, each variant saying where.

use std::io;
use std::path::PathBuf;

/// What went wrong while sealing, unsealing or handling keys and names.
///
/// Offsets are byte offsets in the *sealed* stream; chunk indices count from 0.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("not a sealed file (bad magic at offset 0)")]
    BadMagic,
    #[error("sealed format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    #[error("unknown cipher suite id {0} in header")]
    UnknownSuite(u8),
    #[error("unknown chunker id {0} in header")]
    UnknownChunker(u8),
    #[error("reserved header flags {0:#04x} are set")]
    BadHeaderFlags(u8),
    #[error("wrong key: the file was sealed with key {found}, this key is {ours}")]
    WrongKey { ours: String, found: String },
    #[error(
        "the file was sealed for a different path (path check mismatch): moved or renamed on the remote?"
    )]
    WrongPath,
    #[error("truncated at offset {offset}: {what}")]
    Truncated { offset: u64, what: &'static str },
    #[error("record at offset {offset} (chunk {chunk}) has invalid length {len}")]
    BadRecordLength { offset: u64, chunk: u64, len: u32 },
    #[error(
        "chunk {chunk} at offset {offset} failed authentication (tampered, or from another file)"
    )]
    ChunkAuth { offset: u64, chunk: u64 },
    #[error("chunk {chunk} at offset {offset}: {what}")]
    BadChunk {
        offset: u64,
        chunk: u64,
        what: &'static str,
    },
    #[error(
        "trailer at offset {offset} failed authentication: chunks were dropped, duplicated, reordered or \
         replaced (found {found_chunks} chunks, {found_len} plaintext bytes)"
    )]
    TrailerAuth {
        offset: u64,
        found_chunks: u64,
        found_len: u64,
    },
    #[error("unexpected data after the trailer at offset {offset}")]
    TrailingData { offset: u64 },
    #[error("invalid relative path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("invalid name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error(
        "sealed name {name:?} does not decrypt under this key and folder (tampered, moved, or wrong key)"
    )]
    NameAuth { name: String },
    #[error("key file {path}: {why}")]
    KeyFile { path: PathBuf, why: String },
    #[error("wrong passphrase for key file {path} (or the file was altered)")]
    WrongPassphrase { path: PathBuf },
    #[error("passphrase: {0}")]
    Passphrase(String),
    #[error("system random number generator failed: {0}")]
    Random(String),
}

impl SealError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        SealError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the error means the data is not authentic (as opposed to I/O trouble or bad arguments).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            SealError::BadMagic
                | SealError::UnsupportedVersion(_)
                | SealError::UnknownSuite(_)
                | SealError::UnknownChunker(_)
                | SealError::BadHeaderFlags(_)
                | SealError::WrongKey { .. }
                | SealError::WrongPath
                | SealError::Truncated { .. }
                | SealError::BadRecordLength { .. }
                | SealError::ChunkAuth { .. }
                | SealError::BadChunk { .. }
                | SealError::TrailerAuth { .. }
                | SealError::TrailingData { .. }
                | SealError::NameAuth { .. }
        )
    }

    /// Wrap into an `io::Error` for `Read` implementations; [`SealError::from_io`] gets it back.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            SealError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }

    /// Recover a `SealError` carried inside an `io::Error` produced by this crate's readers.
    pub fn from_io(err: io::Error, context: impl Into<String>) -> Self {
        if !err.get_ref().is_some_and(|e| e.is::<SealError>()) {
            return SealError::io(context, err);
        }
        match err.into_inner().map(|inner| inner.downcast::<SealError>()) {
            Some(Ok(seal)) => *seal,
            Some(Err(other)) => SealError::io(context, io::Error::other(other)),
            None => SealError::io(context, io::Error::other("empty I/O error")),
        }
    }
}

pub type Result<T, E = SealError> = std::result::Result<T, E>;
