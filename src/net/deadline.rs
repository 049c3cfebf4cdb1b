//! A deadline for a whole request body (`client_body_deadline`): `client_body_timeout` only
//! bounds the pause between two pieces, so a client sending one byte just before each timeout
//! would otherwise hold its connection for ever. Media uploads, which may be large and come over
//! slow links, get `client_upload_deadline` instead: their handler extends the deadline through
//! the [`BodyDeadline`] request extension before reading.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body gives once its deadline has passed (answered `408`).
#[derive(Debug, thiserror::Error)]
#[error("the request body took longer than its deadline")]
pub struct BodyDeadlineExceeded;

/// The deadline of one request's body, counted from the request's arrival; handlers may extend
/// it before they read the body.
#[derive(Clone)]
pub struct BodyDeadline {
    start: Instant,
    /// Milliseconds after `start`.
    allowed: Arc<AtomicU64>,
}

impl BodyDeadline {
    fn new(allowed: Duration) -> Self {
        Self {
            start: Instant::now(),
            allowed: Arc::new(AtomicU64::new(allowed.as_millis() as u64)),
        }
    }

    /// Lets the body take up to `allowed` in all, counted from the request's arrival.
    pub fn extend_to(&self, allowed: Duration) {
        self.allowed
            .fetch_max(allowed.as_millis() as u64, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.start + Duration::from_millis(self.allowed.load(Ordering::Relaxed))
    }
}

/// A request body cut off with [`BodyDeadlineExceeded`] at its [`BodyDeadline`].
pub struct DeadlineBody<B> {
    inner: Pin<Box<B>>,
    deadline: BodyDeadline,
    /// Made on the first read: most requests have no body and need no timer.
    timer: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl<B> DeadlineBody<B> {
    /// `body` with a deadline of `allowed` from now; the handle to extend it goes into the
    /// request's extensions.
    pub fn new(body: B, allowed: Duration) -> (Self, BodyDeadline) {
        let deadline = BodyDeadline::new(allowed);
        let body = Self {
            inner: Box::pin(body),
            deadline: deadline.clone(),
            timer: None,
        };
        (body, deadline)
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let at = self.deadline.at();
        let timer = self
            .timer
            .get_or_insert_with(|| (at, Box::pin(tokio::time::sleep_until(at))));
        if timer.0 != at {
            timer.0 = at;
            timer.1.as_mut().reset(at);
        }
        if timer.1.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyDeadlineExceeded))));
        }
        self.inner
            .as_mut()
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
