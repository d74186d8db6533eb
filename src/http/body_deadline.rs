//! A deadline for reading the whole request body, counted from when the
//! request head arrived: a body that trickles in (a byte every few seconds)
//! is cut when the deadline passes, however steadily it trickles. Reading
//! it then fails, and the endpoint answers 400 in its protocol's format.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Armed only once the body makes the reader wait: a body that came
    /// with its head (nearly every OAuth request) never needs a timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if let Some(timer) = self.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(timed_out())));
            }
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if frame.is_pending() && self.timer.is_none() {
            let mut timer = Box::pin(tokio::time::sleep_until(self.deadline));
            // Registers the waker, or the deadline has passed already.
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(timed_out())));
            }
            self.timer = Some(timer);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn timed_out() -> axum::Error {
    axum::Error::new("request body read timed out")
}

/// The layer `app::router` installs, with the time allowed for a body.
pub async fn limit_body_time(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if http_body::Body::is_end_stream(req.body()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Instant::now() + limit,
        timer: None,
    });
    next.run(Request::from_parts(parts, body)).await
}
