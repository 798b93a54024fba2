//! What a session reports to its caller while it runs.

/// Severity of a message the server sent (MSG_INFO, MSG_WARNING, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// MSG_INFO, MSG_LOG, MSG_CLIENT.
    Info,
    /// MSG_WARNING.
    Warning,
    /// MSG_ERROR, MSG_ERROR_SOCKET, MSG_ERROR_UTF8.
    Error,
    /// MSG_ERROR_XFER: an error about one file; the run goes on (exit 23).
    ErrorXfer,
}

/// Progress of one file, reported when the file has been sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProgress<'a> {
    /// Index of the entry in the caller's list.
    pub index: usize,
    /// The entry's name.
    pub name: &'a [u8],
    /// Bytes sent as literal data.
    pub literal_bytes: u64,
    /// Bytes the receiver copied from its basis file.
    pub matched_bytes: u64,
    /// Bytes read from the content provider.
    pub total_bytes: u64,
    /// True for the redo pass (the first attempt failed its checksum).
    pub redo: bool,
}

/// An event during a session. Borrowed data is only valid during the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A message from the server, with its text (trailing newline removed).
    Message {
        /// Severity.
        kind: MessageKind,
        /// Text as sent (lossy UTF-8).
        text: &'a str,
    },
    /// The receiver deleted this item (`--delete`).
    Deleted {
        /// Path relative to the destination, as sent.
        name: &'a [u8],
    },
    /// The server reported an I/O error (MSG_IO_ERROR).
    RemoteIoError(i32),
    /// A file has been sent.
    FileDone(FileProgress<'a>),
    /// A local file-system operation failed for one entry during a pull
    /// (the entry is counted as failed; the run goes on).
    LocalError {
        /// Entry name as listed by the server.
        name: &'a [u8],
        /// Error text.
        error: String,
    },
    /// The content provider failed for a file; it was skipped (the run ends
    /// with a partial-transfer status).
    ContentError {
        /// Index in the caller's list.
        index: usize,
        /// Error text.
        error: String,
    },
}
