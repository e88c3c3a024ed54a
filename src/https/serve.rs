//! The HTTPS accept loop: TLS handshake with a deadline (plain HTTP gets a
//! readable 400 instead, see `tls::plain`), then hyper's HTTP/1.1-or-h2
//! server per connection, stopped gracefully on shutdown.
//!
//! Every connection holds a file descriptor and a task, so the loop caps
//! them: in total and per client address ([`Limits`]). A connection over a
//! cap is closed as soon as it is accepted (never left in the backlog, where
//! `accept` would start failing with "Too many open files" for everyone),
//! and a connection that carries no request for the idle timeout is closed
//! whatever else it sends (HTTP/2 PINGs and SETTINGS do not count).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::time::Instant;
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
/// How long open connections get to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2: streams one connection may have open at once. A device or a
/// browser needs a handful; hyper's default (200) lets one connection
/// start hundreds of handlers.
const H2_MAX_STREAMS: u32 = 32;
/// HTTP/2: the largest header list accepted (hyper's default is 16 MiB).
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// HTTP/2: the server PINGs a connection this often while it is open, and
/// drops it when the answer takes longer than [`H2_PING_TIMEOUT`]: a peer
/// that vanished without a FIN does not keep its slot until the idle check.
const H2_PING_EVERY: Duration = Duration::from_secs(20);
/// See [`H2_PING_EVERY`].
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1.1: the largest request head buffered.
const H1_MAX_BUF: usize = 64 * 1024;
/// Refused connections are logged at most this often (with a count), so a
/// flood cannot flood the log too.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How many connections the loop holds, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, from everyone. Keep it well under the
    /// process's file-descriptor limit (`LimitNOFILE=`).
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// A connection that has carried no request for this long is closed,
    /// whatever else it sends.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_connections_per_address: 32,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Names in the verified client certificate (empty without one).
    pub cert_names: Vec<String>,
}

/// Serve HTTPS on `listener` with the default [`Limits`] until `shutdown`
/// is cancelled, calling `handler` for every request; returns once
/// connections have drained.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>, Arc<Peer>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_with(listener, tls, Limits::default(), shutdown, handler).await;
}

/// [`serve`] with the given limits.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: Limits,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Request<Incoming>, Arc<Peer>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    let idle_timeout = limits.idle_timeout;
    let slots = Arc::new(Slots::new(limits));
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
        // Over a cap: close at once. The descriptor is back before the next
        // accept, and the task below is never started.
        let Some(slot) = slots.admit(addr.ip()) else {
            drop(tcp);
            continue;
        };
        tracker.spawn(async move {
            let _slot = slot;
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
            let activity = Arc::new(Activity::new());
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
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(H1_MAX_BUF);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(H2_MAX_STREAMS)
                .max_header_list_size(H2_MAX_HEADER_LIST)
                .keep_alive_interval(H2_PING_EVERY)
                .keep_alive_timeout(H2_PING_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "connection ended with an error");
                    }
                }
                () = activity.idle(idle_timeout) => {
                    tracing::debug!(%addr, "closing a connection without a request for {idle_timeout:?}");
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

/// The connections open now, in total and per client address.
struct Slots {
    limits: Limits,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    /// Refusals not yet logged, and when the last log line went out.
    refused: u64,
    logged_at: Option<Instant>,
}

impl Slots {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: Mutex::new(SlotState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // Plain counters: a panic elsewhere cannot leave them half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `ip`, or `None` over a cap.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = address_key(ip);
        let mut st = self.lock();
        let mine = st.per_address.get(&key).copied().unwrap_or(0);
        if st.total >= self.limits.max_connections
            || mine >= self.limits.max_connections_per_address
        {
            st.refused += 1;
            let now = Instant::now();
            if st
                .logged_at
                .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_EVERY)
            {
                tracing::warn!(
                    refused = st.refused,
                    open = st.total,
                    from_this_address = mine,
                    address = %key,
                    max_connections = self.limits.max_connections,
                    max_connections_per_address = self.limits.max_connections_per_address,
                    "connection limit reached: closing new connections at once"
                );
                st.refused = 0;
                st.logged_at = Some(now);
            }
            return None;
        }
        st.total += 1;
        st.per_address.insert(key, mine + 1);
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }

    fn release(&self, key: IpAddr) {
        let mut st = self.lock();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_address.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                st.per_address.remove(&key);
            }
        }
    }
}

/// The address a client is counted under: IPv4 as is (also when it comes
/// mapped into IPv6), IPv6 by its /64, since one host commonly holds a
/// whole /64 and could otherwise take a slot per address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// One open connection's place under the caps; given back on drop.
struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.key);
    }
}

/// What a connection has been doing, for its idle timeout: only requests
/// count, so a client that sends nothing but PINGs or empty frames is idle.
struct Activity {
    /// When the connection started; `last_ms` counts from here.
    start: Instant,
    /// Requests being handled now.
    requests: AtomicUsize,
    /// When a request last started or ended, in ms after `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            requests: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Count a request as in progress until the guard drops.
    fn request(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RequestGuard(self.clone())
    }

    /// Completes once the connection has had no request in progress, and
    /// none started, for a whole `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = Instant::now().saturating_duration_since(last);
            if self.requests.load(Ordering::Relaxed) == 0 && quiet >= limit {
                return;
            }
            // A request in progress: look again a whole `limit` later.
            let wait = if quiet < limit { limit - quiet } else { limit };
            tokio::time::sleep(wait).await;
        }
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per: usize) -> Arc<Slots> {
        Arc::new(Slots::new(Limits {
            max_connections: total,
            max_connections_per_address: per,
            idle_timeout: Duration::from_secs(30),
        }))
    }

    #[test]
    fn caps_per_address_and_in_total_and_gives_slots_back() {
        let s = slots(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = s.admit(a).expect("first from a");
        let _a2 = s.admit(a).expect("second from a");
        assert!(s.admit(a).is_none(), "a third from one address is refused");
        let _b1 = s.admit(b).expect("another address still gets in");
        assert!(s.admit(b).is_none(), "the total cap holds for everyone");
        drop(a1);
        let _b2 = s.admit(b).expect("a closed connection frees its slot");
        assert_eq!(s.lock().total, 3);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let s = slots(100, 1);
        let _x = s.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(
            s.admit("2001:db8::ffff:1".parse().unwrap()).is_none(),
            "another address in the same /64 is the same client"
        );
        assert!(s.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        let _v4 = s.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(s.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn only_requests_keep_a_connection_from_being_idle() {
        let a = Arc::new(Activity::new());
        let begun = Instant::now();
        a.idle(Duration::from_secs(30)).await;
        assert_eq!(begun.elapsed(), Duration::from_secs(30));

        let a = Arc::new(Activity::new());
        let guard = a.request();
        let watcher = {
            let a = a.clone();
            tokio::spawn(async move { a.idle(Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(!watcher.is_finished(), "a request in progress is not idle");
        drop(guard);
        let ended = Instant::now();
        watcher.await.unwrap();
        assert!(ended.elapsed() >= Duration::from_secs(30));
        assert!(ended.elapsed() <= Duration::from_secs(60));
    }
}
