//! Client-side bandwidth limit: a token-bucket [`AsyncWrite`] wrapper.
//!
//! rsync's `--bwlimit` on the server only limits what the server writes; for a push the bytes that matter
//! are ours, so the limit is applied to our writer. The bucket holds at most a tenth of a second of
//! traffic (and at least 4 KiB), so the rate is smooth rather than bursty.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

/// Limits the bytes per second written to `W`.
pub struct Throttled<W> {
    inner: W,
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<W> Throttled<W> {
    /// `bytes_per_sec` must be positive.
    pub fn new(inner: W, bytes_per_sec: u64) -> Throttled<W> {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(4096.0);
        Throttled {
            inner,
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
            sleep: None,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Throttled<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            this.refill();
            if this.tokens >= 1.0 {
                let n = buf.len().min(this.tokens as usize);
                let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..n]))?;
                this.tokens -= written as f64;
                return Poll::Ready(Ok(written));
            }
            // Wait until a useful amount can go: the smaller of this write and the bucket.
            let want = (buf.len() as f64).min(this.burst);
            let wait = (want - this.tokens) / this.rate;
            this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait))));
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// With tokio's clock paused, time only moves when everything sleeps: the elapsed virtual time is
    /// exactly what the throttle asked for, independent of machine load.
    #[tokio::test(start_paused = true)]
    async fn rate_is_respected() {
        let mut w = Throttled::new(Vec::new(), 100 * 1024);
        let start = Instant::now();
        let data = vec![7u8; 300 * 1024];
        w.write_all(&data).await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        // 300 KiB at 100 KiB/s, minus the initial bucket of 10 KiB.
        assert!((2.8..=3.1).contains(&secs), "{secs}");
        assert_eq!(w.inner, data);
    }
}
