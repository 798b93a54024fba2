//! Multiplexed I/O (rsync `io.c`: `send_msg`, `read_a_msg`).
//!
//! After the handshake every byte from the server arrives in frames with a
//! 4-byte little-endian header `((7 + tag) << 24) | len`. [`demux`] runs as its
//! own future next to the protocol logic (so the server can always make
//! progress while we write) and forwards frames through a bounded channel;
//! [`Conn`] consumes them: DATA payloads form one byte stream read with the
//! protocol's decoders, every other tag is handled here. From protocol 30 on
//! our output is multiplexed the same way ([`WireOut`]); before that it is a
//! raw byte stream.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::codec::{self, NdxState};
use crate::error::{Error, Result};
use crate::events::{Event, MessageKind};

/// Offset added to a tag in the frame header.
pub const MPLEX_BASE: u32 = 7;
/// Largest payload a frame header can describe.
pub const MAX_FRAME: usize = 0x00FF_FFFF;
/// Largest non-DATA message payload accepted from the peer.
pub const MAX_MSG_PAYLOAD: usize = 1 << 20;
/// Largest chunk forwarded through the channel at once.
const CHUNK: usize = 64 * 1024;
/// Channel depth (x CHUNK = max buffered input).
const CHANNEL_DEPTH: usize = 64;
/// Output is framed and written once this much data is pending.
pub(crate) const OUT_FLUSH_AT: usize = 64 * 1024;

/// Message tags (`enum msgcode` in rsync.h).
pub mod tag {
    /// Raw data on the multiplexed stream.
    pub const DATA: u8 = 0;
    /// Error about a single transfer.
    pub const ERROR_XFER: u8 = 1;
    /// Informational message.
    pub const INFO: u8 = 2;
    /// Error message.
    pub const ERROR: u8 = 3;
    /// Warning.
    pub const WARNING: u8 = 4;
    /// Socket error (sibling logging).
    pub const ERROR_SOCKET: u8 = 5;
    /// Log-file message.
    pub const LOG: u8 = 6;
    /// Message for the client.
    pub const CLIENT: u8 = 7;
    /// UTF-8 conversion error.
    pub const ERROR_UTF8: u8 = 8;
    /// Reprocess a file index (generator-internal).
    pub const REDO: u8 = 9;
    /// Stats for the generator (internal).
    pub const STATS: u8 = 10;
    /// The sending side had an I/O error.
    pub const IO_ERROR: u8 = 22;
    /// A daemon's timeout value.
    pub const IO_TIMEOUT: u8 = 33;
    /// Do-nothing keepalive (protocol 30).
    pub const NOOP: u8 = 42;
    /// Synchronised error exit.
    pub const ERROR_EXIT: u8 = 86;
    /// A file was updated successfully.
    pub const SUCCESS: u8 = 100;
    /// A file was deleted on the receiving side.
    pub const DELETED: u8 = 101;
    /// The sender failed to open a requested file.
    pub const NO_SEND: u8 = 102;
}

/// One item forwarded by [`demux`].
#[derive(Debug)]
pub enum Inbound {
    /// A piece of the DATA stream (never empty).
    Data(Vec<u8>),
    /// An empty DATA frame (keepalive).
    Keepalive,
    /// A non-DATA message.
    Msg {
        /// The tag.
        tag: u8,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Clean end of stream at a frame boundary.
    Eof,
    /// Reading failed; the loop has stopped.
    Failed(Error),
}

fn known_tag(t: u8) -> bool {
    matches!(t, 0..=10 | 22 | 33 | 42 | 86 | 100..=102)
}

/// Creates the channel between [`demux`] and [`Conn`].
pub fn channel() -> (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>) {
    mpsc::channel(CHANNEL_DEPTH)
}

/// Reads frames from `r` until EOF or an error, forwarding them to `tx`.
/// Returns when the stream ends, fails or the receiving side is dropped.
pub async fn demux<R: AsyncRead + Unpin>(mut r: R, tx: mpsc::Sender<Inbound>) {
    let res = demux_inner(&mut r, &tx).await;
    let last = match res {
        Ok(true) => Inbound::Eof,
        Ok(false) => return,
        Err(e) => Inbound::Failed(e),
    };
    let _ = tx.send(last).await;
}

async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r
            .read(&mut buf[n..])
            .await
            .map_err(Error::io("reading from the server"))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Ok(true) = EOF, Ok(false) = receiver gone.
async fn demux_inner<R: AsyncRead + Unpin>(r: &mut R, tx: &mpsc::Sender<Inbound>) -> Result<bool> {
    loop {
        let mut hdr = [0u8; 4];
        match read_full(r, &mut hdr).await? {
            0 => return Ok(true),
            4 => {}
            _ => return Err(Error::UnexpectedEof("reading a frame header")),
        }
        let h = u32::from_le_bytes(hdr);
        let len = (h & 0x00FF_FFFF) as usize;
        let t = (h >> 24).wrapping_sub(MPLEX_BASE);
        if t > 0xFF || !known_tag(t as u8) {
            return Err(Error::protocol(format!(
                "unexpected multiplex tag {} (header {h:#010x})",
                t as i32
            )));
        }
        let t = t as u8;
        if t == tag::DATA {
            if len == 0 {
                if tx.send(Inbound::Keepalive).await.is_err() {
                    return Ok(false);
                }
                continue;
            }
            let mut left = len;
            while left > 0 {
                let n = left.min(CHUNK);
                let mut v = vec![0u8; n];
                if read_full(r, &mut v).await? != n {
                    return Err(Error::UnexpectedEof("reading a DATA frame"));
                }
                left -= n;
                if tx.send(Inbound::Data(v)).await.is_err() {
                    return Ok(false);
                }
            }
        } else {
            if len > MAX_MSG_PAYLOAD {
                return Err(Error::range(
                    "message length",
                    len as i64,
                    format!("<= {MAX_MSG_PAYLOAD}"),
                ));
            }
            let mut v = vec![0u8; len];
            if read_full(r, &mut v).await? != len {
                return Err(Error::UnexpectedEof("reading a message frame"));
            }
            if tx.send(Inbound::Msg { tag: t, payload: v }).await.is_err() {
                return Ok(false);
            }
        }
    }
}

/// Our output: multiplexed frames from protocol 30 on, raw before.
pub struct WireOut<W> {
    w: W,
    multiplexed: bool,
    protocol: u32,
    buf: Vec<u8>,
    /// Bytes handed to the transport so far.
    pub bytes_written: u64,
    /// Keepalives sent.
    pub keepalives: u64,
    /// A write that makes no progress for this long fails with [`Error::Timeout`] (a peer that stopped
    /// reading, or a link that stalled with the send window full). Set by [`Conn::new`].
    io_timeout: Option<Duration>,
}

impl<W: AsyncWrite + Unpin> WireOut<W> {
    /// Wraps a writer.
    pub fn new(w: W, protocol: u32) -> Self {
        WireOut {
            w,
            multiplexed: protocol >= 30,
            protocol,
            buf: Vec::with_capacity(OUT_FLUSH_AT + 64),
            bytes_written: 0,
            keepalives: 0,
            io_timeout: None,
        }
    }

    /// Writes all of `data`; with a timeout, each write must make progress within it (rsync's
    /// `--timeout` is "no data transferred for N seconds", so a slow but moving link is fine).
    async fn put(&mut self, data: &[u8]) -> Result<()> {
        let Some(limit) = self.io_timeout else {
            return self
                .w
                .write_all(data)
                .await
                .map_err(Error::io("writing to the server"));
        };
        let mut rest = data;
        while !rest.is_empty() {
            match tokio::time::timeout(limit, self.w.write(rest)).await {
                Err(_) => return Err(Error::Timeout(limit.as_secs())),
                Ok(Ok(0)) => {
                    return Err(Error::io("writing to the server")(
                        std::io::ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(e)) => return Err(Error::io("writing to the server")(e)),
            }
        }
        Ok(())
    }

    /// `f` on the transport, within the write timeout.
    async fn timed<T>(
        &mut self,
        what: &'static str,
        f: impl AsyncFnOnce(&mut W) -> std::io::Result<T>,
    ) -> Result<T> {
        match self.io_timeout {
            None => f(&mut self.w).await.map_err(Error::io(what)),
            Some(limit) => match tokio::time::timeout(limit, f(&mut self.w)).await {
                Err(_) => Err(Error::Timeout(limit.as_secs())),
                Ok(r) => r.map_err(Error::io(what)),
            },
        }
    }

    /// The pending-data buffer; append protocol data here, then call
    /// [`WireOut::maybe_flush`].
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Appends data.
    pub async fn data(&mut self, d: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(d);
        self.maybe_flush().await
    }

    /// Writes out pending data once enough has accumulated.
    pub async fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= OUT_FLUSH_AT {
            self.write_pending().await?;
        }
        Ok(())
    }

    async fn write_pending(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let res = if self.multiplexed {
            let mut r = Ok(());
            for chunk in buf.chunks(MAX_FRAME) {
                r = self.frame(tag::DATA, chunk).await;
                if r.is_err() {
                    break;
                }
            }
            r
        } else {
            self.bytes_written += buf.len() as u64;
            self.put(&buf).await
        };
        self.buf = buf;
        self.buf.clear();
        res
    }

    async fn frame(&mut self, t: u8, payload: &[u8]) -> Result<()> {
        debug_assert!(payload.len() <= MAX_FRAME);
        let h = ((MPLEX_BASE + u32::from(t)) << 24) | payload.len() as u32;
        self.put(&h.to_le_bytes()).await?;
        self.put(payload).await?;
        self.bytes_written += 4 + payload.len() as u64;
        Ok(())
    }

    /// Writes everything pending and flushes the transport.
    pub async fn flush(&mut self) -> Result<()> {
        self.write_pending().await?;
        self.timed("flushing output to the server", async |w| w.flush().await)
            .await
    }

    /// Sends a non-DATA message (after pending data, preserving order).
    /// Returns false when the protocol has no multiplexed output (< 30).
    pub async fn msg(&mut self, t: u8, payload: &[u8]) -> Result<bool> {
        if !self.multiplexed {
            return Ok(false);
        }
        self.write_pending().await?;
        self.frame(t, payload).await?;
        Ok(true)
    }

    /// Sends a keepalive: an empty DATA frame (>= 31) or MSG_NOOP (30).
    pub async fn keepalive(&mut self) -> Result<()> {
        if self.protocol >= 30 {
            self.keepalives += 1;
        }
        if self.protocol >= 31 {
            self.write_pending().await?;
            self.frame(tag::DATA, &[]).await?;
        } else if self.protocol == 30 {
            self.msg(tag::NOOP, &[]).await?;
        }
        self.flush().await
    }

    /// Shuts down the write half (EOF for the server).
    pub async fn shutdown(&mut self) -> Result<()> {
        self.flush().await?;
        self.timed("closing output to the server", async |w| w.shutdown().await)
            .await
    }
}

/// Accumulated side effects of messages from the server.
#[derive(Debug, Default, Clone)]
pub struct MsgState {
    /// OR of the IO_ERROR values the server reported.
    pub io_error: i32,
    /// Number of MSG_DELETED received.
    pub deleted: u64,
    /// Number of error messages (ERROR, ERROR_XFER, ...) received.
    pub errors: u64,
    /// Number of MSG_SUCCESS received.
    pub succeeded: u64,
    /// Number of MSG_NO_SEND received (the sender could not open a file).
    pub no_send: u64,
}

/// Where a connection's events go.
enum Sink<'e> {
    /// The caller's, for the session's protocol part.
    Borrowed(&'e mut (dyn FnMut(Event<'_>) + Send)),
    /// Owned, for the end of a session that outlives the caller's borrow (see [`Conn::detach`]).
    Owned(Box<dyn FnMut(Event<'_>) + Send>),
}

/// Our input side plus output, with message handling.
pub struct Conn<'e, W> {
    rx: mpsc::Receiver<Inbound>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
    /// Output.
    pub out: WireOut<W>,
    /// Negotiated protocol.
    pub protocol: u32,
    ndx_in: NdxState,
    ndx_out: NdxState,
    events: Sink<'e>,
    /// Idle timeout: keepalives every half of it, error after all of it.
    pub(crate) io_timeout: Option<Duration>,
    /// Side effects of messages.
    pub msgs: MsgState,
    /// DATA bytes consumed.
    pub bytes_read: u64,
}

impl<'e, W: AsyncWrite + Unpin> Conn<'e, W> {
    /// Creates a connection reading from `rx` (fed by [`demux`]).
    pub fn new(
        rx: mpsc::Receiver<Inbound>,
        out: WireOut<W>,
        protocol: u32,
        events: &'e mut (dyn FnMut(Event<'_>) + Send),
        io_timeout: Option<Duration>,
    ) -> Self {
        let mut out = out;
        out.io_timeout = io_timeout;
        Conn {
            rx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
            out,
            protocol,
            ndx_in: NdxState::default(),
            ndx_out: NdxState::default(),
            events: Sink::Borrowed(events),
            io_timeout,
            msgs: MsgState::default(),
            bytes_read: 0,
        }
    }

    /// Swaps the output for `out`, returning the old one: the pull session
    /// hands the real writer to its generator and keeps reading here.
    pub fn replace_out<W2: AsyncWrite + Unpin>(
        self,
        mut out: WireOut<W2>,
    ) -> (WireOut<W>, Conn<'e, W2>) {
        out.io_timeout = self.io_timeout;
        self.remake(|old, events| (out, events, old))
    }

    /// This connection with the output and event sink `parts` makes of the current ones (and something
    /// to hand back); everything else moves over.
    fn remake<'f, W2, T>(
        self,
        parts: impl FnOnce(WireOut<W>, Sink<'e>) -> (WireOut<W2>, Sink<'f>, T),
    ) -> (T, Conn<'f, W2>) {
        let Conn {
            rx,
            cur,
            pos,
            eof,
            out,
            protocol,
            ndx_in,
            ndx_out,
            events,
            io_timeout,
            msgs,
            bytes_read,
        } = self;
        let (out, events, back) = parts(out, events);
        (
            back,
            Conn {
                rx,
                cur,
                pos,
                eof,
                out,
                protocol,
                ndx_in,
                ndx_out,
                events,
                io_timeout,
                msgs,
                bytes_read,
            },
        )
    }

    /// Emits an event to the caller.
    pub fn emit(&mut self, e: Event<'_>) {
        match &mut self.events {
            Sink::Borrowed(f) => f(e),
            Sink::Owned(f) => f(e),
        }
    }

    /// The same connection, its events going to `events` from now on: a push returns once the protocol
    /// exchange is over and leaves the server's last messages (until its EOF) to be read later, beyond
    /// the borrow of the caller's sink.
    pub fn detach(self, events: Box<dyn FnMut(Event<'_>) + Send>) -> Conn<'static, W> {
        self.remake(|out, _| (out, Sink::Owned(events), ())).1
    }

    async fn next_inbound(&mut self) -> Result<Inbound> {
        let Some(limit) = self.io_timeout else {
            return self
                .rx
                .recv()
                .await
                .ok_or(Error::UnexpectedEof("reading from the server"));
        };
        let half = (limit / 2).max(Duration::from_millis(100));
        let mut idle = Duration::ZERO;
        loop {
            match tokio::time::timeout(half, self.rx.recv()).await {
                Ok(Some(x)) => return Ok(x),
                Ok(None) => return Err(Error::UnexpectedEof("reading from the server")),
                Err(_) => {
                    idle += half;
                    if idle >= limit {
                        return Err(Error::Timeout(limit.as_secs()));
                    }
                    self.out.keepalive().await?;
                }
            }
        }
    }

    /// Makes sure at least one unread DATA byte is buffered.
    async fn fill(&mut self) -> Result<()> {
        while self.pos >= self.cur.len() {
            if self.eof {
                return Err(Error::UnexpectedEof("reading from the server"));
            }
            // Never wait for input with unsent output: that is a deadlock.
            self.out.flush().await?;
            match self.next_inbound().await? {
                Inbound::Data(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Inbound::Keepalive => {}
                Inbound::Msg { tag, payload } => self.handle_msg(tag, payload).await?,
                Inbound::Eof => {
                    self.eof = true;
                }
                Inbound::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn handle_msg(&mut self, t: u8, payload: Vec<u8>) -> Result<()> {
        let int_payload = |p: &[u8]| -> Result<i32> {
            if p.len() != 4 {
                return Err(Error::protocol(format!(
                    "invalid message {t} with {} bytes",
                    p.len()
                )));
            }
            Ok(i32::from_le_bytes(p.try_into().expect("4")))
        };
        match t {
            tag::ERROR_XFER
            | tag::INFO
            | tag::ERROR
            | tag::WARNING
            | tag::ERROR_SOCKET
            | tag::LOG
            | tag::CLIENT
            | tag::ERROR_UTF8 => {
                let kind = match t {
                    tag::INFO | tag::LOG | tag::CLIENT => MessageKind::Info,
                    tag::WARNING => MessageKind::Warning,
                    tag::ERROR_XFER => MessageKind::ErrorXfer,
                    _ => MessageKind::Error,
                };
                if matches!(kind, MessageKind::Error | MessageKind::ErrorXfer) {
                    self.msgs.errors += 1;
                }
                let text = String::from_utf8_lossy(&payload);
                self.emit(Event::Message {
                    kind,
                    text: text.trim_end_matches('\n'),
                });
            }
            tag::IO_ERROR => {
                let v = int_payload(&payload)?;
                self.msgs.io_error |= v;
                self.emit(Event::RemoteIoError(v));
            }
            tag::IO_TIMEOUT => {
                let v = int_payload(&payload)?;
                if v > 0 && self.io_timeout.is_none_or(|t| t.as_secs() > v as u64) {
                    self.io_timeout = Some(Duration::from_secs(v as u64));
                }
            }
            tag::NOOP => {}
            tag::ERROR_EXIT => {
                let code = match payload.len() {
                    0 => 0,
                    4 => int_payload(&payload)?,
                    n => {
                        return Err(Error::protocol(format!(
                            "invalid MSG_ERROR_EXIT with {n} bytes"
                        )));
                    }
                };
                if !payload.is_empty() && self.protocol >= 31 {
                    // Best effort: the server may already be gone.
                    if self.out.msg(tag::ERROR_EXIT, &[]).await.is_ok() {
                        let _ = self.out.flush().await;
                    }
                }
                return Err(Error::RemoteErrorExit(code));
            }
            tag::SUCCESS => {
                int_payload(&payload)?;
                self.msgs.succeeded += 1;
            }
            tag::DELETED => {
                let name = payload.strip_suffix(b"\0").unwrap_or(&payload);
                self.msgs.deleted += 1;
                self.emit(Event::Deleted { name });
            }
            tag::NO_SEND => {
                int_payload(&payload)?;
                self.msgs.no_send += 1;
            }
            other => {
                return Err(Error::protocol(format!(
                    "message tag {other} is not valid from a receiving server"
                )));
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` DATA bytes.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut n = 0;
        while n < buf.len() {
            self.fill().await?;
            let k = (buf.len() - n).min(self.cur.len() - self.pos);
            buf[n..n + k].copy_from_slice(&self.cur[self.pos..self.pos + k]);
            self.pos += k;
            n += k;
        }
        self.bytes_read += buf.len() as u64;
        Ok(())
    }

    /// Reads one byte.
    pub async fn read_u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b).await?;
        Ok(b[0])
    }

    /// Reads a little-endian u16.
    pub async fn read_u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_exact(&mut b).await?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian int32.
    pub async fn read_i32(&mut self) -> Result<i32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b).await?;
        Ok(i32::from_le_bytes(b))
    }

    /// Reads a varint.
    pub async fn read_varint(&mut self) -> Result<i32> {
        let first = self.read_u8().await?;
        let n = codec::extra_bytes(first);
        if n > 4 {
            return Err(Error::protocol(format!(
                "malformed varint header {first:#04x}"
            )));
        }
        let mut extra = [0u8; 4];
        self.read_exact(&mut extra[..n]).await?;
        codec::finish_varint(first, &extra[..n])
    }

    /// Reads a vstring of at most `max` bytes.
    pub async fn read_vstring(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut len = usize::from(self.read_u8().await?);
        if len & 0x80 != 0 {
            len = ((len & 0x7F) << 8) | usize::from(self.read_u8().await?);
        }
        if len > max {
            return Err(Error::range(
                "vstring length",
                len as i64,
                format!("<= {max}"),
            ));
        }
        let mut v = vec![0u8; len];
        self.read_exact(&mut v).await?;
        Ok(v)
    }

    /// Reads a file index (delta-coded from 30, int32 before).
    pub async fn read_ndx(&mut self) -> Result<i32> {
        if self.protocol < 30 {
            return self.read_i32().await;
        }
        // Bytes of one ndx: at most 6.
        let mut raw = Vec::with_capacity(6);
        let first = self.read_u8().await?;
        raw.push(first);
        let mut b = first;
        if b == 0xFF {
            b = self.read_u8().await?;
            raw.push(b);
        }
        if b == 0xFE {
            let x = self.read_u8().await?;
            let y = self.read_u8().await?;
            raw.push(x);
            raw.push(y);
            if x & 0x80 != 0 {
                raw.push(self.read_u8().await?);
                raw.push(self.read_u8().await?);
            }
        }
        let mut it = raw.into_iter();
        self.ndx_in
            .decode(|| it.next().ok_or(Error::protocol("truncated ndx")))
    }

    /// Appends a file index to the output.
    pub fn put_ndx(&mut self, ndx: i32) {
        if self.protocol < 30 {
            codec::put_i32(self.out.buf(), ndx);
        } else {
            self.ndx_out.encode(&mut self.out.buf, ndx);
        }
    }

    /// Waits for the end of the server's output (EOF); any DATA is an error.
    pub async fn expect_eof(&mut self) -> Result<()> {
        self.out.flush().await?;
        loop {
            if self.pos < self.cur.len() {
                return Err(Error::protocol(
                    "unexpected data after the end of the session",
                ));
            }
            if self.eof {
                return Ok(());
            }
            match self.next_inbound().await {
                Ok(Inbound::Data(v)) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Ok(Inbound::Keepalive) => {}
                Ok(Inbound::Msg { tag, payload }) => self.handle_msg(tag, payload).await?,
                Ok(Inbound::Eof) => self.eof = true,
                Ok(Inbound::Failed(e)) => return Err(e),
                Err(Error::UnexpectedEof(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: u8, payload: &[u8]) -> Vec<u8> {
        let h = ((MPLEX_BASE + u32::from(t)) << 24) | payload.len() as u32;
        let mut v = h.to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn keepalive_frames() {
        let mut w = WireOut::new(Vec::new(), 31);
        w.keepalive().await.unwrap();
        assert_eq!(w.w, [0, 0, 0, 7]);
        let mut w = WireOut::new(Vec::new(), 30);
        w.keepalive().await.unwrap();
        assert_eq!(w.w, [0, 0, 0, 7 + 42]);
        let mut w = WireOut::new(Vec::new(), 29);
        w.data(b"raw").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.w, b"raw");
    }

    #[tokio::test]
    async fn demux_data_and_messages() {
        let mut input = Vec::new();
        input.extend(frame(tag::DATA, &[1, 2]));
        input.extend(frame(tag::INFO, b"hello\n"));
        input.extend(frame(tag::DATA, &[]));
        input.extend(frame(tag::DATA, &[3, 4, 0x81, 0xFE]));
        input.extend(frame(tag::DELETED, b"gone\0"));
        input.extend(frame(tag::ERROR_EXIT, &5i32.to_le_bytes()));
        let (tx, rx) = channel();
        demux(&input[..], tx).await;
        let mut seen: Vec<String> = Vec::new();
        let mut cb = |e: Event<'_>| seen.push(format!("{e:?}"));
        let mut c = Conn::new(rx, WireOut::new(Vec::new(), 31), 31, &mut cb, None);
        // An int32 straddling two DATA frames.
        assert_eq!(
            c.read_i32().await.unwrap(),
            i32::from_le_bytes([1, 2, 3, 4])
        );
        assert_eq!(c.read_varint().await.unwrap(), 0x1FE);
        let e = c.read_u8().await.unwrap_err();
        assert!(matches!(e, Error::RemoteErrorExit(5)), "{e}");
        // We answered the error exit with an empty MSG_ERROR_EXIT.
        assert_eq!(c.out.w, [0, 0, 0, 7 + 86]);
        drop(c);
        assert!(seen[0].contains("hello"));
        assert!(seen[1].contains("Deleted"));
    }

    #[tokio::test]
    async fn silence_times_out_after_keepalives() {
        let (_tx, rx) = channel();
        let mut cb = |_: Event<'_>| {};
        let mut c = Conn::new(
            rx,
            WireOut::new(Vec::new(), 31),
            31,
            &mut cb,
            Some(Duration::from_millis(400)),
        );
        let e = c.read_u8().await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(c.out.keepalives >= 1);
    }

    /// A peer that stops reading (a stalled link with the send window full) fails the write after the
    /// timeout instead of blocking forever; a slow one that keeps reading does not.
    #[tokio::test]
    async fn a_stalled_write_times_out() {
        let (_tx, rx) = channel();
        let mut cb = |_: Event<'_>| {};
        // The other end is kept open and never read.
        let (w, _peer) = tokio::io::duplex(1024);
        let mut c = Conn::new(
            rx,
            WireOut::new(w, 31),
            31,
            &mut cb,
            Some(Duration::from_millis(300)),
        );
        let started = std::time::Instant::now();
        let e = c.out.data(&vec![7u8; 256 * 1024]).await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // A slow reader: 1 KiB every 100 ms is progress, so no timeout.
        let (_tx, rx) = channel();
        let (w, mut slow) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut n = 0;
            while let Ok(k) = slow.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                n += k;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        });
        let mut c = Conn::new(
            rx,
            WireOut::new(w, 31),
            31,
            &mut cb,
            Some(Duration::from_millis(300)),
        );
        c.out.data(&vec![7u8; 8 * 1024]).await.unwrap();
        c.out.shutdown().await.unwrap();
        drop(c);
        assert!(reader.await.unwrap() >= 8 * 1024);
    }

    #[tokio::test]
    async fn unknown_tag_is_an_error() {
        let input = frame(50, b"x");
        let (tx, rx) = channel();
        demux(&input[..], tx).await;
        let mut cb = |_: Event<'_>| {};
        let mut c = Conn::new(rx, WireOut::new(Vec::new(), 31), 31, &mut cb, None);
        let e = c.read_u8().await.unwrap_err();
        assert!(e.to_string().contains("unexpected multiplex tag"), "{e}");
    }

    #[tokio::test]
    async fn oversized_message_is_rejected() {
        let h = ((MPLEX_BASE + u32::from(tag::INFO)) << 24) | (MAX_MSG_PAYLOAD as u32 + 1);
        let input = h.to_le_bytes().to_vec();
        let (tx, rx) = channel();
        demux(&input[..], tx).await;
        let mut cb = |_: Event<'_>| {};
        let mut c = Conn::new(rx, WireOut::new(Vec::new(), 31), 31, &mut cb, None);
        let e = c.read_u8().await.unwrap_err();
        assert!(matches!(e, Error::OutOfRange { .. }), "{e}");
    }
}
