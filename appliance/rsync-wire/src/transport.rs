//! Transports: how the bytes reach a remote `rsync --server`.
//!
//! A session needs a reader, a writer and a [`RemoteEnd`] that reports the
//! remote's stderr and exit status. [`spawn_local`] runs `rsync --server`
//! as a local child process over pipes; an SSH transport provides the same
//! three things from a channel (stdout, stdin, extended data + exit-status).

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::events::{Event, MessageKind};

/// Most stderr bytes kept from the remote.
pub const STDERR_LIMIT: usize = 64 * 1024;

/// What the remote left behind.
#[derive(Debug, Clone, Default)]
pub struct RemoteOutcome {
    /// Exit code; `None` when unknown (killed by a signal, no status sent).
    pub exit_status: Option<i32>,
    /// Captured stderr (bounded, lossy UTF-8).
    pub stderr: String,
}

/// The remote side's status channel.
pub trait RemoteEnd: Send {
    /// Waits up to `grace` for the remote to exit after our output was
    /// closed (forcing it to stop afterwards) and collects its stderr.
    fn finish(
        &mut self,
        grace: Duration,
    ) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + '_>>;
}

/// A connected remote: read from it, write to it, ask how it ended.
pub struct Connection<R, W> {
    /// The remote's output (our input).
    pub reader: R,
    /// The remote's input.
    pub writer: W,
    /// Stderr and exit status.
    pub remote: Box<dyn RemoteEnd>,
}

/// Bounded stderr collector shared with a reader task.
#[derive(Default)]
struct StderrBuf {
    data: Vec<u8>,
    dropped: u64,
}

fn collect_stderr(buf: &Arc<Mutex<StderrBuf>>) -> String {
    let b = buf.lock().unwrap_or_else(|p| p.into_inner());
    let mut s = String::from_utf8_lossy(&b.data).into_owned();
    if b.dropped > 0 {
        s.push_str(&format!(
            "\n[... {} more bytes of stderr dropped]",
            b.dropped
        ));
    }
    s
}

/// A local child process.
pub struct LocalProcess {
    child: Child,
    stderr: Arc<Mutex<StderrBuf>>,
    stderr_task: Option<JoinHandle<()>>,
}

impl RemoteEnd for LocalProcess {
    fn finish(
        &mut self,
        grace: Duration,
    ) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + '_>> {
        Box::pin(async move {
            let status = match tokio::time::timeout(grace, self.child.wait()).await {
                Ok(Ok(st)) => st.code(),
                _ => {
                    let _ = self.child.start_kill();
                    let _ = self.child.wait().await;
                    None
                }
            };
            if let Some(t) = self.stderr_task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
            }
            RemoteOutcome {
                exit_status: status,
                stderr: collect_stderr(&self.stderr),
            }
        })
    }
}

/// Spawns `program args...` (normally `rsync --server ...`) with piped
/// stdin/stdout; stderr is collected in the background (bounded). The child
/// is killed if the connection is dropped early.
pub fn spawn_local(
    program: &OsStr,
    args: &[OsString],
) -> Result<Connection<ChildStdout, ChildStdin>> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Io {
            context: "spawning rsync",
            source,
        })?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let buf = Arc::new(Mutex::new(StderrBuf::default()));
    let b2 = buf.clone();
    let task = tokio::spawn(async move {
        let mut chunk = vec![0u8; 8192];
        loop {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut b = b2.lock().unwrap_or_else(|p| p.into_inner());
                    let room = STDERR_LIMIT.saturating_sub(b.data.len());
                    let take = room.min(n);
                    b.data.extend_from_slice(&chunk[..take]);
                    b.dropped += (n - take) as u64;
                }
            }
        }
    });
    Ok(Connection {
        reader: stdout,
        writer: stdin,
        remote: Box::new(LocalProcess {
            child,
            stderr: buf,
            stderr_task: Some(task),
        }),
    })
}

/// Most bytes of the server's warnings and errors kept for the error value.
const MESSAGES_LIMIT: usize = 16 * 1024;

/// Keeps the server's warning and error texts (bounded) so a failed session can quote them.
#[derive(Default)]
pub(crate) struct MessageLog(String);

impl MessageLog {
    /// Adds what `later` kept (within the same bound).
    pub(crate) fn append(&mut self, later: MessageLog) {
        let room = MESSAGES_LIMIT.saturating_sub(self.0.len());
        self.0.extend(later.0.chars().take(room));
    }

    pub(crate) fn record(&mut self, e: &Event<'_>) {
        if let Event::Message { kind, text } = e
            && *kind != MessageKind::Info
            && self.0.len() < MESSAGES_LIMIT
        {
            let room = MESSAGES_LIMIT - self.0.len();
            self.0.extend(text.chars().take(room));
            self.0.push('\n');
        }
    }
}

/// Ends a session whose protocol part returned `res` (our writer already dropped, so the remote sees
/// EOF): waits for the remote (`exit_grace`, or 5 s after a failure) and folds its exit status, stderr
/// and messages into the result. A session that ended early because the server quit reports the
/// server's exit code, the real cause.
pub(crate) async fn conclude<T>(
    res: Result<T>,
    remote: &mut dyn RemoteEnd,
    exit_grace: Duration,
    messages: MessageLog,
) -> Result<T> {
    let grace = if res.is_ok() {
        exit_grace
    } else {
        Duration::from_secs(5)
    };
    let outcome = remote.finish(grace).await;
    let messages = messages.0;
    match res {
        Ok(out) => match outcome.exit_status {
            Some(0) => Ok(out),
            Some(code) => Err(Error::RemoteExit {
                code,
                stderr: outcome.stderr,
                messages,
            }),
            None => Err(Error::Session {
                source: Box::new(Error::protocol("remote did not report an exit status")),
                exit_status: None,
                stderr: outcome.stderr,
                messages,
            }),
        },
        Err(Error::UnexpectedEof(_)) if matches!(outcome.exit_status, Some(c) if c != 0) => {
            Err(Error::RemoteExit {
                code: outcome.exit_status.unwrap_or_default(),
                stderr: outcome.stderr,
                messages,
            })
        }
        Err(e) => Err(Error::Session {
            source: Box::new(e),
            exit_status: outcome.exit_status,
            stderr: outcome.stderr,
            messages,
        }),
    }
}
