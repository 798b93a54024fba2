//! Error type of the crate. Every variant that concerns a peer names it as `host:port`, and
//! says what was being done when it failed.

use std::path::PathBuf;

use crate::known_hosts::HostKeyInfo;

/// Result alias of this crate.
pub type Result<T, E = SshError> = std::result::Result<T, E>;

/// Everything that can go wrong while talking SSH.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// A local or network I/O operation failed.
    #[error("{addr}: {action}: {source}")]
    Io {
        /// `host:port` of the peer (or the file involved).
        addr: String,
        /// What was being done.
        action: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The TCP connection, key exchange and authentication did not finish in time.
    #[error("{addr}: connecting timed out after {secs:.1}s")]
    ConnectTimeout {
        /// `host:port` of the peer.
        addr: String,
        /// The timeout that expired, in seconds.
        secs: f64,
    },

    /// The server accepted the connection but did not answer a request (opening a channel, starting
    /// a command) in time: a hung or lying server, which would otherwise stall a run for ever.
    #[error("{addr}: {action}: no answer from the server within {secs:.0} s")]
    RequestTimeout {
        /// `host:port` of the peer.
        addr: String,
        /// What was being done.
        action: &'static str,
        /// The timeout that expired, in seconds.
        secs: f64,
    },

    /// The SSH protocol layer failed.
    #[error("{addr}: {action}: {source}")]
    Protocol {
        /// `host:port` of the peer.
        addr: String,
        /// What was being done.
        action: &'static str,
        /// Underlying error.
        #[source]
        source: russh::Error,
    },

    /// The server's host key is not in the known_hosts file. Nothing was sent to the server
    /// beyond the key exchange. `info.known_hosts_line` is the line to append to trust it.
    #[error(
        "{}:{}: host key unknown: the server presented {} key {}; \
         verify the fingerprint and add it to {} to trust it",
        info.host, info.port, info.key_type, info.fingerprint, known_hosts.display()
    )]
    UnknownHostKey {
        /// The key the server presented, its fingerprint and the line to trust it.
        info: Box<HostKeyInfo>,
        /// The known_hosts file consulted.
        known_hosts: PathBuf,
    },

    /// The host is known with a different key of the same type: possibly a
    /// man-in-the-middle attack, or the server was reinstalled. The connection was refused.
    #[error(
        "{}:{}: WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! The server presented {} key {}, \
         but {} (line {}) expects {}. Someone could be eavesdropping (man-in-the-middle), or the \
         host key was replaced. Connection refused.",
        info.host, info.port, info.key_type, info.fingerprint, known_hosts.display(),
        line, expected_fingerprint
    )]
    HostKeyChanged {
        /// The key the server presented.
        info: Box<HostKeyInfo>,
        /// The known_hosts file consulted.
        known_hosts: PathBuf,
        /// 1-based line of the first known key of that type.
        line: usize,
        /// Fingerprint of the key that was expected.
        expected_fingerprint: String,
    },

    /// The server's host key is marked `@revoked` in known_hosts. The connection was refused.
    #[error(
        "{}:{}: host key {} is REVOKED in {} (line {}); connection refused",
        info.host, info.port, info.fingerprint, known_hosts.display(), line
    )]
    HostKeyRevoked {
        /// The key the server presented.
        info: Box<HostKeyInfo>,
        /// The known_hosts file consulted.
        known_hosts: PathBuf,
        /// 1-based line of the `@revoked` entry.
        line: usize,
    },

    /// The known_hosts file could not be read or written.
    #[error("known_hosts {}: {action}: {source}", path.display())]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The private key file is encrypted and no (or a wrong) passphrase was given.
    #[error("identity {}: the private key is encrypted; {}", path.display(),
        if *passphrase_given { "the passphrase is wrong" } else { "no passphrase was given" })]
    IdentityEncrypted {
        /// The key file.
        path: PathBuf,
        /// Whether a passphrase was supplied (and so was wrong).
        passphrase_given: bool,
    },

    /// The private key file could not be read or parsed.
    #[error("identity {}: {reason}", path.display())]
    Identity {
        /// The key file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// Generating or writing a new key pair failed.
    #[error("key generation {}: {action}: {reason}", path.display())]
    KeyGen {
        /// The private key file that was to be written.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        reason: String,
    },

    /// The server refused the public key.
    #[error(
        "{addr}: authentication as {user:?} with {key_type} key {fingerprint} was refused \
             (server would accept: {remaining})"
    )]
    AuthFailed {
        /// `host:port` of the peer.
        addr: String,
        /// The user name.
        user: String,
        /// Type of the client key.
        key_type: String,
        /// SHA256 fingerprint of the client key.
        fingerprint: String,
        /// Methods the server said could continue.
        remaining: String,
    },

    /// The server refused to run the command (exec request failed).
    #[error("{addr}: the server refused to execute {command:?}")]
    ExecRefused {
        /// `host:port` of the peer.
        addr: String,
        /// The command.
        command: String,
    },

    /// The connection ended before the remote command reported how it exited.
    #[error("{addr}: connection lost while running {command:?}: {reason}")]
    ConnectionLost {
        /// `host:port` of the peer.
        addr: String,
        /// The command.
        command: String,
        /// Why the connection ended, if known.
        reason: String,
    },

    /// The channel was closed without an exit status or exit signal.
    #[error("{addr}: {command:?} ended without an exit status")]
    NoExitStatus {
        /// `host:port` of the peer.
        addr: String,
        /// The command.
        command: String,
    },
}

impl SshError {
    /// True for the host-key errors (unknown, changed, revoked), which a UI should show to a
    /// person rather than retry.
    pub fn is_host_key_error(&self) -> bool {
        matches!(
            self,
            SshError::UnknownHostKey { .. }
                | SshError::HostKeyChanged { .. }
                | SshError::HostKeyRevoked { .. }
        )
    }

    /// The presented host key, for the host-key errors.
    pub fn host_key_info(&self) -> Option<&HostKeyInfo> {
        match self {
            SshError::UnknownHostKey { info, .. }
            | SshError::HostKeyChanged { info, .. }
            | SshError::HostKeyRevoked { info, .. } => Some(info),
            _ => None,
        }
    }
}
