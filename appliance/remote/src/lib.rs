//! Opens `rsync --server` sessions on a backup target, so the protocol code never needs to know how the
//! bytes travel.
//!
//! A [`Target`] is either a local folder (an `rsync --server` spawned on this machine, for tests and for
//! a backup disk) or an SSH host reached with the embedded client (`offsite-ssh`). [`Remote::connect`] does
//! the expensive part once (TCP, key exchange, host key check, authentication); [`Remote::open`] then
//! starts one rsync server per session over that connection, as SSH channels.

use std::ffi::OsString;
use std::pin::Pin;
use std::time::Duration;

use offsite_ssh::{RemoteProcess, SshConnection, SshTarget, StderrCapture};
use rsync_wire::{Connection, RemoteEnd, RemoteOutcome};
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed reader/writer pair, whatever the transport.
pub type Session = Connection<Pin<Box<dyn AsyncRead + Send>>, Pin<Box<dyn AsyncWrite + Send>>>;

/// Limits what we write to `session` to `kbps` KiB/s (`None`: no limit). Only our side is limited: the
/// remote's output is not ours to pace.
pub fn limit_rate(session: Session, kbps: Option<u64>) -> Session {
    match kbps {
        None => session,
        Some(kbps) => Connection {
            reader: session.reader,
            writer: Box::pin(rsync_wire::Throttled::new(
                session.writer,
                kbps.saturating_mul(1024),
            )),
            remote: session.remote,
        },
    }
}

/// Where the backups go.
#[derive(Debug, Clone)]
pub enum Target {
    /// This machine: `rsync --server` is spawned locally (`rsync_path` names the program).
    Local { rsync_path: OsString },
    /// An SSH host; `rsync_path` is the remote command (a plain `rsync`, a path, or whatever a
    /// restricted key's forced command expects).
    Ssh {
        ssh: Box<SshTarget>,
        rsync_path: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Ssh(#[from] offsite_ssh::SshError),
    #[error(transparent)]
    Rsync(#[from] rsync_wire::Error),
    #[error("{0}: the remote command line must be valid UTF-8 for SSH")]
    NotUtf8(String),
}

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// A connected target.
pub enum Remote {
    Local {
        rsync_path: OsString,
    },
    Ssh {
        conn: Box<SshConnection>,
        rsync_path: String,
    },
}

impl Remote {
    /// Connects (for SSH: TCP, host key check against known_hosts, key authentication).
    pub async fn connect(target: &Target) -> Result<Remote> {
        Ok(match target {
            Target::Local { rsync_path } => Remote::Local {
                rsync_path: rsync_path.clone(),
            },
            Target::Ssh { ssh, rsync_path } => Remote::Ssh {
                conn: Box::new(offsite_ssh::connect(ssh).await?),
                rsync_path: rsync_path.clone(),
            },
        })
    }

    /// Where this remote is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Remote::Local { .. } => "this machine".into(),
            Remote::Ssh { conn, .. } => conn.addr().to_owned(),
        }
    }

    /// Starts `rsync --server <server_args>` and returns the session's streams and status channel.
    pub async fn open(&self, server_args: &[OsString]) -> Result<Session> {
        match self {
            Remote::Local { rsync_path } => {
                let c = rsync_wire::spawn_local(rsync_path, server_args)?;
                Ok(Connection {
                    reader: Box::pin(c.reader),
                    writer: Box::pin(c.writer),
                    remote: c.remote,
                })
            }
            Remote::Ssh { conn, rsync_path } => {
                let line = rsync_wire::args::shell_command(rsync_path.as_bytes(), server_args);
                let line = String::from_utf8(line).map_err(|e| {
                    RemoteError::NotUtf8(String::from_utf8_lossy(e.as_bytes()).into_owned())
                })?;
                let mut process = conn.exec(&line).await?;
                let (Some(stdin), Some(stdout)) = (process.take_stdin(), process.take_stdout())
                else {
                    return Err(rsync_wire::Error::InvalidInput(
                        "SSH channel without stdin/stdout".into(),
                    )
                    .into());
                };
                let stderr = process.stderr();
                Ok(Connection {
                    reader: Box::pin(stdout),
                    writer: Box::pin(stdin),
                    remote: Box::new(SshEnd {
                        process: Some(process),
                        stderr,
                    }),
                })
            }
        }
    }

    /// Closes the SSH connection cleanly (nothing to do for a local target).
    pub async fn close(self) -> Result<()> {
        if let Remote::Ssh { conn, .. } = self {
            (*conn).close().await?;
        }
        Ok(())
    }
}

/// The status side of an rsync server running in an SSH channel.
struct SshEnd {
    process: Option<RemoteProcess>,
    stderr: StderrCapture,
}

impl RemoteEnd for SshEnd {
    fn finish(
        &mut self,
        grace: Duration,
    ) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + '_>> {
        Box::pin(async move {
            let Some(process) = self.process.as_mut() else {
                return RemoteOutcome {
                    exit_status: None,
                    stderr: self.stderr.contents_lossy(),
                };
            };
            let exit_status = match tokio::time::timeout(grace, process.wait()).await {
                Ok(Ok(status)) => status.code().and_then(|c| i32::try_from(c).ok()),
                Ok(Err(_)) => None,
                Err(_) => {
                    // Signals are refused for root sessions by OpenSSH; closing the channel ends the
                    // command's stdin and stdout, which stops rsync.
                    if let Some(p) = self.process.take() {
                        let _ = p.close().await;
                    }
                    None
                }
            };
            RemoteOutcome {
                exit_status,
                stderr: self.stderr.contents_lossy(),
            }
        })
    }
}
