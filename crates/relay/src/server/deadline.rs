//! A write deadline under the WebSocket: a connection whose socket accepts no bytes for the
//! deadline fails its writes with `TimedOut`, so a peer that stops reading is closed instead of
//! holding a writer (and what it has queued) for ever.
//!
//! The timer runs only while a write is pending and restarts on every write that makes progress:
//! a slow but moving link is never cut, a stalled one is cut after exactly the deadline.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An IO object whose writes fail after `deadline` without progress.
pub(crate) struct WriteDeadline<I> {
    io: I,
    deadline: Duration,
    /// Armed when a write first returns pending; `None` while writes make progress (an idle
    /// connection keeps no timer).
    timer: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteDeadline<I> {
    pub(crate) fn new(io: I, deadline: Duration) -> Self {
        Self {
            io,
            deadline,
            timer: None,
        }
    }

    /// Called when the inner write is pending: arms the timer, or fails once it has fired.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + deadline)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer accepted no bytes within the write deadline",
        ))
    }

    fn progressed<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.timer = None;
        }
        r
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if r.is_pending() {
            return self.stalled(cx).map(Err);
        }
        self.progressed(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if r.is_pending() {
            return self.stalled(cx).map(Err);
        }
        self.progressed(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        if r.is_pending() {
            return self.stalled(cx).map(Err);
        }
        self.progressed(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if r.is_pending() {
            return self.stalled(cx).map(Err);
        }
        self.progressed(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_deadline_and_a_moving_one_does_not() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(a, Duration::from_secs(5));
        // Moving: the reader takes 1 KiB every 4 s, so the 8 KiB write takes 28 s but makes
        // progress within every 5 s.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            for _ in 0..7 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tokio::io::AsyncReadExt::read_exact(&mut b, &mut buf)
                    .await
                    .unwrap();
            }
            b
        });
        let started = Instant::now();
        w.write_all(&[0u8; 8 * 1024]).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(28));
        let _b = reader.await.unwrap();
        // Stalled: nobody reads any more.
        let started = Instant::now();
        let err = w.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
