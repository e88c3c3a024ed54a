//! The HTTPS accept loop: TLS handshake with a deadline (plain HTTP gets a
//! readable 400 instead, see `tls::plain`), then hyper's HTTP/1.1-or-h2
//! server per connection, stopped gracefully on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A slow or silent client must not hold a task forever: its first byte,
/// and the whole TLS handshake (or plain-HTTP request head), must arrive
/// within this of the connection being accepted.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1.1: the headers of each request, and the wait for the next request
/// on a kept-alive connection, must arrive within this (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that carries no request and sends nothing for this long
/// is closed: idle keep-alive connections, and clients that connect and
/// then say nothing, must not pile up until the descriptors run out.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Names in the verified client certificate (empty without one).
    pub cert_names: Vec<String>,
}

/// Serve HTTPS on `listener` until `shutdown` is cancelled, calling
/// `handler` for every request; returns once connections have drained.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>, Arc<Peer>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather
                    // than spin on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Answers go out in several small writes: without this, Nagle and
        // the client's delayed ACK hold the last one back ~40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%addr, "cannot set TCP_NODELAY: {e}");
        }
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            let Some(tcp) = super::plain::tls_or_answer(tcp, addr, deadline).await else {
                return;
            };
            let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let cert_names = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| super::cert_names(c))
                .unwrap_or_default();
            let peer = Arc::new(Peer { addr, cert_names });
            let activity = Arc::new(Activity::default());
            let busy = activity.clone();
            let service = service_fn(move |req| {
                let handler = handler.clone();
                let peer = peer.clone();
                let busy = busy.clone();
                async move {
                    let _request = busy.request();
                    Ok::<_, Infallible>(handler(req, peer).await)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let io = Watched {
                inner: stream,
                activity: activity.clone(),
            };
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "connection ended with an error");
                    }
                }
                () = activity.idle(IDLE_TIMEOUT) => {
                    tracing::debug!(%addr, "closing a connection idle for {IDLE_TIMEOUT:?}");
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after shutdown; dropping them");
    }
}

/// What a connection has been doing, for its idle timeout.
#[derive(Default)]
struct Activity {
    /// Bytes read so far; the idle check compares it between looks.
    read: AtomicU64,
    /// Requests being handled now.
    requests: AtomicUsize,
}

impl Activity {
    /// Count a request as in progress until the guard drops.
    fn request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Completes once the connection has read nothing and handled no
    /// request for a whole `limit`.
    async fn idle(&self, limit: Duration) {
        let mut seen = self.read.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(limit).await;
            let now = self.read.load(Ordering::Relaxed);
            if now == seen && self.requests.load(Ordering::Relaxed) == 0 {
                return;
            }
            seen = now;
        }
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's stream, counting what it reads.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > 0 {
            self.activity.read.fetch_add(got as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
