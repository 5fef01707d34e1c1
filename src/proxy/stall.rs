//! Bounds on an upstream that stops moving once its response has begun (SPEC §5:
//! the gateway never hangs on an upstream's fault). `timeout` bounds the wait for
//! the response headers (`forward`); after that the same duration bounds each
//! silence, as nginx's `proxy_send_timeout` / `proxy_read_timeout` do:
//! - [`Guarded`]: a connection whose writes make no progress for that long
//!   (an upstream that never reads a request body) fails, so its connection task
//!   ends and the client's body is released instead of being held forever;
//! - [`ReadGap`]: a response body with no frame for that long ends in an error, so
//!   the client sees a truncated response instead of a hang.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::time::Sleep;

use crate::body::{Body, BoxError};

/// An upstream connection with a write-stall deadline.
pub struct Guarded<Io> {
    io: Io,
    send_timeout: Duration,
    /// The write-stall timer, allocated once per connection and re-armed.
    stalled: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<Io> Guarded<Io> {
    pub fn new(io: Io, send_timeout: Duration) -> Guarded<Io> {
        Guarded {
            io,
            send_timeout,
            stalled: None,
            armed: false,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        p: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if p.is_ready() {
            self.armed = false;
            return p;
        }
        let sleep = arm(&mut self.stalled, &mut self.armed, self.send_timeout);
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the upstream stopped reading the request",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Io: Read + Unpin> Read for Guarded<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: Write + Unpin> Write for Guarded<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The timer, started `d` from now unless it is already running; one allocation
/// per connection or body, re-armed with `reset` afterwards.
fn arm<'a>(
    t: &'a mut Option<Pin<Box<Sleep>>>,
    armed: &mut bool,
    d: Duration,
) -> &'a mut Pin<Box<Sleep>> {
    let deadline = tokio::time::Instant::now() + d;
    if !*armed {
        *armed = true;
        if let Some(s) = t.as_mut() {
            s.as_mut().reset(deadline);
        }
    }
    t.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)))
}

/// A response body that fails after `gap` without a frame. The clock starts at
/// the first poll that finds nothing, so time the client spends not reading
/// (backpressure) never counts.
pub struct ReadGap {
    inner: Body,
    gap: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl ReadGap {
    pub fn new(inner: Body, gap: Duration) -> ReadGap {
        ReadGap {
            inner,
            gap,
            waiting: None,
            armed: false,
        }
    }
}

impl hyper::body::Body for ReadGap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let sleep = arm(&mut this.waiting, &mut this.armed, this.gap);
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(
                        "the upstream's response body stalled past the timeout".into(),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn a_body_silent_past_the_gap_fails_and_a_steady_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let mut rx = rx;
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut body = ReadGap::new(StreamBody::new(stream).boxed(), Duration::from_secs(2));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let t = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        assert!(
            body.frame().await.unwrap().is_ok(),
            "200 ms is within the gap"
        );
        assert!(body.frame().await.unwrap().is_err(), "30 s is past it");
        t.abort();
    }
}
