//! A command running on the server over one SSH session channel.
//!
//! The channel's incoming side is drained by a task of its own, which feeds stdout into a
//! bounded pipe, stderr into a bounded ring buffer and records the exit status. Writing stdin
//! therefore never waits for someone to read stdout, and stdin/stdout can be used from
//! different tasks at the same time (as the rsync protocol needs).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use crate::connection::ConnState;
use crate::error::{Result, SshError};

/// How much stderr is kept by default (the last bytes win).
pub const DEFAULT_STDERR_LIMIT: usize = 64 * 1024;

/// Chunks (SSH packets, at most 32 KiB each) buffered between the channel and the stdout
/// reader before the connection is back-pressured.
const STDOUT_PIPE_CHUNKS: usize = 64;

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(u32),
    /// It was killed by a signal.
    Signal {
        /// Signal name without `SIG` (`TERM`, `KILL`, ...).
        signal: String,
        /// Whether it dumped core.
        core_dumped: bool,
        /// Message sent by the server, often empty.
        message: String,
    },
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// The exit code, if it exited normally.
    pub fn code(&self) -> Option<u32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            ExitStatus::Signal { .. } => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal {
                signal,
                core_dumped,
                ..
            } => write!(
                f,
                "killed by signal {signal}{}",
                if *core_dumped { " (core dumped)" } else { "" }
            ),
        }
    }
}

/// The tail of a command's stderr, shared with the task that collects it.
#[derive(Debug, Clone)]
pub struct StderrCapture {
    inner: Arc<Mutex<StderrBuf>>,
}

#[derive(Debug)]
struct StderrBuf {
    data: VecDeque<u8>,
    limit: usize,
    total: u64,
}

impl StderrCapture {
    fn new(limit: usize) -> Self {
        StderrCapture {
            inner: Arc::new(Mutex::new(StderrBuf {
                data: VecDeque::new(),
                limit,
                total: 0,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        b.total += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(b.limit)..];
        let overflow = (b.data.len() + keep.len()).saturating_sub(b.limit);
        let drop_front = overflow.min(b.data.len());
        b.data.drain(..drop_front);
        b.data.extend(keep);
    }

    /// The last bytes of stderr received so far (at most the limit).
    pub fn contents(&self) -> Vec<u8> {
        let b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        b.data.iter().copied().collect()
    }

    /// [`contents`](Self::contents) as text (invalid UTF-8 replaced).
    pub fn contents_lossy(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }

    /// Total stderr bytes received, including those dropped from the front.
    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Whether earlier stderr was dropped to respect the limit.
    pub fn truncated(&self) -> bool {
        let b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        b.total > b.data.len() as u64
    }
}

/// Names of the remote peer and command, for errors.
#[derive(Debug)]
pub(crate) struct ProcCtx {
    pub(crate) addr: String,
    pub(crate) command: String,
    pub(crate) conn: Arc<ConnState>,
}

/// How the pump task saw the channel end.
#[derive(Debug)]
enum PumpEnd {
    Exited(ExitStatus),
    ClosedWithoutStatus,
    Lost,
}

/// A command started with [`SshConnection::exec`](crate::SshConnection::exec).
///
/// Take the halves with [`take_stdin`](Self::take_stdin) / [`take_stdout`](Self::take_stdout)
/// and drive them from separate tasks; then [`wait`](Self::wait). Dropping the process (or
/// the stdin half) sends EOF; dropping the stdout half discards further output.
#[derive(Debug)]
pub struct RemoteProcess {
    stdin: Option<RemoteStdin>,
    stdout: Option<RemoteStdout>,
    stderr: StderrCapture,
    end: Option<oneshot::Receiver<PumpEnd>>,
    status: Option<ExitStatus>,
    write: Arc<ChannelWriteHalf<Msg>>,
    ctx: Arc<ProcCtx>,
}

impl RemoteProcess {
    /// Wire up a channel on which `exec` has been sent; waits for the server's reply to it.
    pub(crate) async fn start(
        read: ChannelReadHalf,
        write: ChannelWriteHalf<Msg>,
        ctx: ProcCtx,
        stderr_limit: usize,
    ) -> Result<Self> {
        let ctx = Arc::new(ctx);
        let write = Arc::new(write);
        let stderr = StderrCapture::new(stderr_limit);
        let (stdout_tx, stdout_rx) = mpsc::channel(STDOUT_PIPE_CHUNKS);
        let (reply_tx, reply_rx) = oneshot::channel();
        let (end_tx, end_rx) = oneshot::channel();
        tokio::spawn(pump(
            read,
            stdout_tx,
            stderr.clone(),
            reply_tx,
            end_tx,
            write.id(),
        ));
        let stdin = RemoteStdin {
            tx: Box::pin(write.make_writer()),
            write: write.clone(),
            eof_sent: false,
        };
        match reply_rx.await {
            Ok(true) => {}
            Ok(false) => {
                let _ = write.close().await;
                return Err(SshError::ExecRefused {
                    addr: ctx.addr.clone(),
                    command: ctx.command.clone(),
                });
            }
            Err(_) => return Err(lost(&ctx)),
        }
        tracing::debug!(addr = %ctx.addr, command = %ctx.command, "remote command started");
        Ok(RemoteProcess {
            stdin: Some(stdin),
            stdout: Some(RemoteStdout {
                rx: stdout_rx,
                buf: Bytes::new(),
            }),
            stderr,
            end: Some(end_rx),
            status: None,
            write,
            ctx,
        })
    }

    /// The stdin writer. `None` once taken. Shut it down (or drop it) to send EOF.
    pub fn take_stdin(&mut self) -> Option<RemoteStdin> {
        self.stdin.take()
    }

    /// The stdout reader. `None` once taken.
    pub fn take_stdout(&mut self) -> Option<RemoteStdout> {
        self.stdout.take()
    }

    /// The stdin writer, still owned by the process.
    pub fn stdin(&mut self) -> Option<&mut RemoteStdin> {
        self.stdin.as_mut()
    }

    /// The stdout reader, still owned by the process.
    pub fn stdout(&mut self) -> Option<&mut RemoteStdout> {
        self.stdout.as_mut()
    }

    /// Handle on the collected stderr (the last [`DEFAULT_STDERR_LIMIT`] bytes by default).
    pub fn stderr(&self) -> StderrCapture {
        self.stderr.clone()
    }

    /// The command line that was run.
    pub fn command(&self) -> &str {
        &self.ctx.command
    }

    /// Send EOF on stdin (if the stdin half was not taken; otherwise shut that down).
    pub async fn close_stdin(&mut self) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.eof().await?;
        }
        Ok(())
    }

    /// Wait for the command to end and return how it ended.
    ///
    /// Like `std::process::Child::wait`, this first closes stdin and drops stdout if they are
    /// still held by the process (taken halves are the caller's business: output that nobody
    /// reads back-pressures the whole connection). Can be called again after it returned.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = &self.status {
            return Ok(status.clone());
        }
        self.stdin.take();
        self.stdout.take();
        let Some(end) = self.end.take() else {
            return Err(lost(&self.ctx));
        };
        match end.await {
            Ok(PumpEnd::Exited(status)) => {
                tracing::debug!(addr = %self.ctx.addr, command = %self.ctx.command, %status, "remote command ended");
                self.status = Some(status.clone());
                Ok(status)
            }
            Ok(PumpEnd::ClosedWithoutStatus) => Err(SshError::NoExitStatus {
                addr: self.ctx.addr.clone(),
                command: self.ctx.command.clone(),
            }),
            Ok(PumpEnd::Lost) | Err(_) => Err(lost(&self.ctx)),
        }
    }

    /// Ask the server to deliver `signal` (e.g. `Sig::TERM`) to the command. OpenSSH honours
    /// this since 7.9 for commands without a terminal.
    pub async fn signal(&self, signal: Sig) -> Result<()> {
        self.write
            .signal(signal)
            .await
            .map_err(|source| SshError::Protocol {
                addr: self.ctx.addr.clone(),
                action: "sending a signal",
                source,
            })
    }

    /// Close the channel without waiting for the command: the server closes the command's
    /// stdin and stdout (rsync then exits on EOF/EPIPE). The exit status is not collected:
    /// OpenSSH only confirms the close once the command has exited.
    pub async fn close(mut self) -> Result<()> {
        self.stdin.take();
        self.stdout.take();
        self.write
            .close()
            .await
            .map_err(|source| SshError::Protocol {
                addr: self.ctx.addr.clone(),
                action: "closing the channel",
                source,
            })
    }
}

fn lost(ctx: &ProcCtx) -> SshError {
    SshError::ConnectionLost {
        addr: ctx.addr.clone(),
        command: ctx.command.clone(),
        reason: ctx.conn.disconnect_reason(),
    }
}

async fn pump(
    mut read: ChannelReadHalf,
    stdout_tx: mpsc::Sender<io::Result<Bytes>>,
    stderr: StderrCapture,
    reply_tx: oneshot::Sender<bool>,
    end_tx: oneshot::Sender<PumpEnd>,
    id: russh::ChannelId,
) {
    let mut stdout_tx = Some(stdout_tx);
    let mut reply_tx = Some(reply_tx);
    let mut status = None;
    let end = loop {
        let Some(msg) = read.wait().await else {
            break PumpEnd::Lost;
        };
        match msg {
            ChannelMsg::Data { data } => {
                if let Some(tx) = &stdout_tx
                    && tx.send(Ok(data)).await.is_err()
                {
                    // The reader was dropped: discard the rest.
                    stdout_tx = None;
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                if ext == 1 {
                    stderr.push(&data);
                }
            }
            ChannelMsg::Eof => {
                tracing::debug!(channel = %id, "remote EOF");
                stdout_tx = None;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                status = Some(ExitStatus::Code(exit_status));
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            } => {
                // The server's words, shown to the owner later: no control characters (a
                // hostile host could otherwise write terminal escapes into the owner's terminal or
                // log), and not too long.
                status = Some(ExitStatus::Signal {
                    signal: printable(&signal_name_of(&signal_name)),
                    core_dumped,
                    message: printable(&error_message),
                });
            }
            ChannelMsg::Success => {
                if let Some(tx) = reply_tx.take() {
                    let _ = tx.send(true);
                }
            }
            ChannelMsg::Failure => {
                if let Some(tx) = reply_tx.take() {
                    let _ = tx.send(false);
                }
            }
            ChannelMsg::Close => {
                break match status.take() {
                    Some(s) => PumpEnd::Exited(s),
                    None => PumpEnd::ClosedWithoutStatus,
                };
            }
            other => tracing::debug!(channel = %id, msg = ?other, "ignored channel message"),
        }
    };
    if matches!(end, PumpEnd::Lost)
        && let Some(tx) = stdout_tx.take()
    {
        let _ = tx
            .send(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "SSH connection lost before the remote command closed its output",
            )))
            .await;
    }
    tracing::debug!(channel = %id, end = ?end, "channel finished");
    let _ = end_tx.send(end);
}

/// `s` without control characters (each shown as `?`), cut at 256 characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    }
    .to_string()
}

/// Writer half: the command's stdin. Implements [`AsyncWrite`]; `shutdown()` (or
/// [`eof`](Self::eof), or dropping it) sends EOF.
pub struct RemoteStdin {
    tx: Pin<Box<dyn AsyncWrite + Send>>,
    write: Arc<ChannelWriteHalf<Msg>>,
    eof_sent: bool,
}

impl std::fmt::Debug for RemoteStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStdin")
            .field("channel", &self.write.id())
            .field("eof_sent", &self.eof_sent)
            .finish()
    }
}

impl RemoteStdin {
    /// Send EOF: the command reads end-of-file once it consumed what was written.
    pub async fn eof(&mut self) -> Result<()> {
        if self.eof_sent {
            return Ok(());
        }
        tokio::io::AsyncWriteExt::shutdown(self)
            .await
            .map_err(|source| SshError::Io {
                addr: format!("channel {}", self.write.id()),
                action: "sending EOF on stdin",
                source,
            })
    }
}

impl AsyncWrite for RemoteStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.eof_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin already closed (EOF sent)",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.tx.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.eof_sent {
            return Poll::Ready(Ok(()));
        }
        ready!(self.tx.as_mut().poll_shutdown(cx))?;
        self.eof_sent = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for RemoteStdin {
    fn drop(&mut self) {
        if self.eof_sent {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let write = self.write.clone();
            rt.spawn(async move {
                let _ = write.eof().await;
            });
        }
    }
}

/// Reader half: the command's stdout. Implements [`AsyncRead`]; reads 0 bytes at the
/// server's EOF, and fails with `ConnectionAborted` if the connection was lost first.
#[derive(Debug)]
pub struct RemoteStdout {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    buf: Bytes,
}

impl AsyncRead for RemoteStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(out.remaining());
                let chunk = self.buf.split_to(n);
                out.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(data)) => self.buf = data,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_ring_keeps_tail() {
        let c = StderrCapture::new(8);
        c.push(b"hello");
        assert_eq!(c.contents(), b"hello");
        assert!(!c.truncated());
        c.push(b"world");
        assert_eq!(c.contents(), b"lloworld");
        assert!(c.truncated());
        c.push(b"0123456789abc");
        assert_eq!(c.contents(), b"56789abc");
        assert_eq!(c.total_bytes(), 23);
    }
}
