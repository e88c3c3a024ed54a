//! Response bodies written by a task: a bounded channel of pieces, so the
//! server can pace a stream, stall it, or break its connection on purpose.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// A piece of a body, or the order to break the connection.
pub type Piece = Result<Bytes, Broken>;

/// Breaks the connection mid-body (hyper aborts it on a body error).
#[derive(Debug)]
pub struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection broken on purpose")
    }
}

impl std::error::Error for Broken {}

/// A response body: whole, or fed by a task through a channel.
pub enum MediaBody {
    /// All of it at once.
    Full(Full<Bytes>),
    /// Pieces from a task; the body ends when its sender is dropped.
    Chan(mpsc::Receiver<Piece>),
}

impl MediaBody {
    /// A body of `data`.
    pub fn full(data: impl Into<Bytes>) -> Self {
        MediaBody::Full(Full::new(data.into()))
    }

    /// A body written through the returned sender (a few pieces queued).
    pub fn channel() -> (mpsc::Sender<Piece>, Self) {
        let (tx, rx) = mpsc::channel(4);
        (tx, MediaBody::Chan(rx))
    }
}

impl Body for MediaBody {
    type Data = Bytes;
    type Error = Broken;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Broken>>> {
        match self.get_mut() {
            MediaBody::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|r: Result<_, Infallible>| r.map_err(|e| match e {}))),
            MediaBody::Chan(rx) => rx.poll_recv(cx).map(|p| p.map(|r| r.map(Frame::data))),
        }
    }
}
