//! What keeps a stranger on the LAN from holding the page hostage with slow connections ("slowloris"):
//!
//! * [`Addresses`]: at most [`MAX_CONNECTIONS_PER_ADDRESS`] connections at once from one client address
//!   (IPv6: from one /64, which one host can fill with addresses), so one host cannot take every one of
//!   the server's [`crate::MAX_CONNECTIONS`] slots;
//! * [`WriteDeadline`]: a response write that makes no progress for [`WRITE_STALL`] (a client that does
//!   not read) ends the connection;
//! * [`body_deadline`]: a request body that makes no progress for [`BODY_STALL`] (a client that sends its
//!   headers, then stops), or is not whole within [`BODY_TOTAL`] (one that trickles a byte at a time),
//!   fails the request and ends the connection;
//! * [`MAX_BODY`]: the largest request body any route accepts (they are all small JSON documents), so 64
//!   connections cannot make the box buffer 64 large bodies.
//!
//! A TLS handshake must finish within ten seconds and request headers within thirty (hyper's
//! `header_read_timeout`, which also ends idle keep-alive connections); see [`crate::serve`].
//!
//! Hand-written rather than `tower-http`'s timeout layers: those bound a whole request or body, which
//! would cut a long download or the live event stream; these bound only a *stall*.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Connections one client address (an IPv4 address, an IPv6 /64) may hold at once. A browser opens
/// six at most.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 16;

/// How long a response write may make no progress.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// How long a request body may make no progress.
pub const BODY_STALL: Duration = Duration::from_secs(20);

/// How long a whole request body may take. The largest accepted body needs only 4.4 KB/s for it.
pub const BODY_TOTAL: Duration = Duration::from_secs(60);

/// The largest request body accepted (bytes). The largest real one, a restore of many picked paths, is
/// far below it.
pub const MAX_BODY: usize = 256 * 1024;

/// Connections held per client address.
#[derive(Clone, Default)]
pub struct Addresses(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its address; dropping it gives the place back.
pub struct Held {
    addresses: Addresses,
    key: IpAddr,
}

impl Addresses {
    /// Counts a new connection from `ip`, or `None` when that address already holds its share.
    pub fn admit(&self, ip: IpAddr) -> Option<Held> {
        let key = address_key(ip);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Held {
            addresses: self.clone(),
            key,
        })
    }

    /// Connections counted now (for tests).
    pub fn held(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.addresses.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The unit one client is counted by: an IPv4 address (also when written as IPv4-mapped IPv6), or an
/// IPv6 /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// A connection whose writes must make progress within a bound.
pub struct WriteDeadline<T> {
    inner: T,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, stall: Duration) -> Self {
        WriteDeadline {
            inner,
            stall,
            timer: None,
        }
    }

    /// After the inner write said "pending": arms the timer if needed, and fails once it has run out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(timer.as_mut().poll(cx));
        self.timer = None;
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client read nothing for {} s",
                self.stall.as_secs_f32().round()
            ),
        ))
    }

    fn watch<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// Middleware: every request body must make progress within [`BODY_STALL`] and be whole within
/// [`BODY_TOTAL`].
pub async fn body_deadline(req: Request, next: Next) -> Response {
    let req = req.map(|body| Body::new(StallingBody::new(body, BODY_STALL, BODY_TOTAL)));
    next.run(req).await
}

/// A request body that fails when no frame arrives within `stall`, or the body is not whole within
/// `total` of its first read.
struct StallingBody {
    inner: Body,
    stall: Duration,
    total: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl StallingBody {
    fn new(inner: Body, stall: Duration, total: Duration) -> Self {
        StallingBody {
            inner,
            stall,
            total,
            timer: None,
            deadline: None,
        }
    }

    fn timed_out(what: &str, d: Duration) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the request body {what} {} s", d.as_secs_f32().round()),
        )))))
    }
}

impl http_body::Body for StallingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let total = self.total;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(total)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Self::timed_out("took longer than", total);
        }
        if let Poll::Ready(f) = Pin::new(&mut self.inner).poll_frame(cx) {
            self.timer = None;
            return Poll::Ready(f);
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(timer.as_mut().poll(cx));
        self.timer = None;
        Self::timed_out("stalled for", stall)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn one_address_gets_its_share_and_gives_it_back() {
        let a = Addresses::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<Held> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| a.admit(ip).unwrap())
            .collect();
        assert!(a.admit(ip).is_none());
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert!(a.admit("::ffff:192.0.2.7".parse().unwrap()).is_none());
        // Others are not affected.
        let other = a.admit("192.0.2.8".parse().unwrap()).unwrap();
        drop(held);
        assert_eq!(a.held(), 1);
        assert!(a.admit(ip).is_some());
        drop(other);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_slash_64() {
        let a = Addresses::default();
        let _held: Vec<Held> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|i| {
                a.admit(format!("2001:db8:1:2::{i:x}").parse().unwrap())
                    .unwrap()
            })
            .collect();
        assert!(a.admit("2001:db8:1:2:ffff::1".parse().unwrap()).is_none());
        assert!(a.admit("2001:db8:1:3::1".parse().unwrap()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_cut_after_the_stall() {
        // A pipe with a small buffer: once it is full, writes wait for a reader that never reads.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(near, Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        let chunk = [7u8; 512];
        let err = loop {
            if let Err(e) = w.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
            "{waited:?}"
        );
        // A reader that keeps reading, however slowly (every 50 s), is never cut.
        let (near, mut far2) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(near, Duration::from_secs(60));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut total = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(50)).await;
                match far2.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        for _ in 0..20 {
            w.write_all(&chunk).await.unwrap();
        }
        drop(w);
        assert_eq!(reader.await.unwrap(), 20 * 512);
        drop(far.read(&mut [0u8; 1]).await);
    }

    type Frames = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, io::Error>>;

    /// A request body fed through a channel, behind the guard's deadlines.
    fn guarded_body() -> (Frames, StallingBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let inner = Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        (tx, StallingBody::new(inner, BODY_STALL, BODY_TOTAL))
    }

    /// Sends `bytes` one at a time, each after `every`.
    fn trickle(tx: Frames, bytes: &'static [u8], every: Duration) {
        tokio::spawn(async move {
            for byte in bytes {
                tokio::time::sleep(every).await;
                let frame = Frame::data(Bytes::copy_from_slice(&[*byte]));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_or_trickled_request_body_fails_and_a_slow_one_does_not() {
        use http_body_util::BodyExt;
        // Stalled: one frame, then nothing.
        let (tx, mut b) = guarded_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"{\"a\""))))
            .await
            .unwrap();
        let first = b.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"{\"a\""));
        let start = tokio::time::Instant::now();
        let err = b.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("stalled"), "{err}");
        assert!(start.elapsed() >= BODY_STALL, "{:?}", start.elapsed());
        drop(tx);
        // Slow but moving: a byte every 5 s arrives whole.
        let (tx, b) = guarded_body();
        trickle(tx, b"{\"x\":1}", Duration::from_secs(5));
        let all = b.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"{\"x\":1}");
        // Trickled: a byte every 15 s never stalls for 20 s, but is cut at 60 s.
        let (tx, b) = guarded_body();
        let start = tokio::time::Instant::now();
        trickle(tx, b"{\"x\":1}", Duration::from_secs(15));
        let err = b.collect().await.unwrap_err();
        assert!(err.to_string().contains("took longer than 60 s"), "{err}");
        assert_eq!(start.elapsed(), BODY_TOTAL);
    }
}
