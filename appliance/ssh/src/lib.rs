//! `offsite-ssh`: the embedded SSH client the appliance uses to reach a remote
//! `rsync --server` (the box has no `ssh` binary).
//!
//! ```no_run
//! # async fn demo() -> offsite_ssh::Result<()> {
//! use offsite_ssh::{SshTarget, connect};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let target = SshTarget::new("nas.example", "backup", "/etc/offsite/id_ed25519",
//!                             "/etc/offsite/known_hosts").with_port(2222);
//! let conn = connect(&target).await?;
//! let mut proc = conn.exec("rsync --server --version").await?;
//! let mut stdout = proc.take_stdout().unwrap();
//! let mut stdin = proc.take_stdin().unwrap();
//! // Drive both halves from separate tasks; the channel is drained by a task of its own.
//! let reader = tokio::spawn(async move {
//!     let mut out = Vec::new();
//!     stdout.read_to_end(&mut out).await.map(|_| out)
//! });
//! stdin.shutdown().await.ok(); // EOF
//! let out = reader.await.unwrap().unwrap();
//! let status = proc.wait().await?;
//! eprintln!("{} {}", status, proc.stderr().contents_lossy());
//! # let _ = out; conn.close().await
//! # }
//! ```
//!
//! Host keys are checked against an OpenSSH `known_hosts` file ([`known_hosts`]); an unknown
//! host fails with [`SshError::UnknownHostKey`] carrying the fingerprint and the line to
//! trust, a changed key with [`SshError::HostKeyChanged`]. [`fetch_host_key`] and
//! [`append_known_host`] serve a "trust this host" dialog; [`generate_ed25519_keypair`]
//! creates the appliance's own key.
//!
//! The library prints nothing; it emits `tracing` debug events.

mod connection;
mod error;
mod keys;
pub mod known_hosts;
mod process;

pub use connection::{SshConnection, SshTarget, connect, fetch_host_key};
pub use error::{Result, SshError};
pub use keys::{GeneratedKey, generate_ed25519_keypair, load_identity};
pub use known_hosts::{HostKeyInfo, HostKeyStatus, append_known_host, check_known_hosts};
pub use process::{
    DEFAULT_STDERR_LIMIT, ExitStatus, RemoteProcess, RemoteStdin, RemoteStdout, StderrCapture,
};
/// Signals for [`RemoteProcess::signal`].
pub use russh::Sig;
/// Key types, re-exported from russh/ssh-key.
pub use russh::keys::{PrivateKey, PublicKey};

/// Quote `arg` for the remote POSIX shell that runs [`SshConnection::exec`] commands
/// (`'...'`, with embedded single quotes as `'\''`). Plain words are left as they are.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("rsync"), "rsync");
        assert_eq!(shell_quote("--server"), "--server");
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME;rm"), "'$HOME;rm'");
    }
}
