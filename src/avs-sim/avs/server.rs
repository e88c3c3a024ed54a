//! TLS and HTTP/2 for the AVS stand-in: the accept loop (with the `/refuse`
//! knob), one task per connection driving `h2` (advertising 10 concurrent
//! streams; GOAWAY, cut and idle close), and the routing of each stream to
//! the downchannel, `/ping` or an event.
//!
//! `h2` is used directly rather than through hyper because the stand-in
//! needs what hyper hides: writing a directive as many tiny DATA frames,
//! and a GOAWAY or a reset on command.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Method, Request, Response};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::linger::Lingering;
use super::rules::{Refusal, check_auth};
use super::state::{ConnCmd, ConnState, DownMsg, Rejection, Shared, Target};
use super::{DIRECTIVES_PATH, EVENTS_PATH, MAX_CONCURRENT_STREAMS, PING_PATH};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long streams may go on after a GOAWAY before the connection closes.
const GOAWAY_GRACE: Duration = Duration::from_secs(60);
/// How long a refused request's body is read before the stream is reset.
const DRAIN_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// What a client that negotiated no ALPN (so speaks HTTP/1.1) is told.
const HTTP11_REFUSAL: &[u8] = b"HTTP/1.1 505 HTTP Version Not Supported\r\n\
Content-Type: text/plain\r\nConnection: close\r\nContent-Length: 49\r\n\r\n\
avs-sim avs speaks HTTP/2 only (TLS ALPN \"h2\").\r\n";

/// One connection, as its request handlers see it.
pub(super) struct Ctx {
    /// The connection's number in logs and statistics.
    pub id: u64,
    /// Its protocol state (downchannel, synchronized, activity).
    pub state: Arc<Mutex<ConnState>>,
    /// What all connections share.
    pub shared: Arc<Shared>,
}

impl Ctx {
    /// The connection's state, locked; never held across an await.
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answer `refusal` on `respond`, log it and count it. AVS closes the
    /// connection after an authorization failure (§C.3), so a 403 is
    /// followed by a GOAWAY.
    pub(super) fn refuse(&self, respond: &mut SendResponse<Bytes>, path: &str, refusal: &Refusal) {
        tracing::info!(
            conn = self.id,
            path,
            status = refusal.status,
            code = refusal.code,
            "refused: {}",
            refusal.description
        );
        let (head, body) = refusal.response();
        match respond.send_response(head, body.is_none()) {
            Ok(mut stream) => {
                if let Some(body) = body {
                    let _ = stream.send_data(body, true);
                }
            }
            Err(e) => tracing::debug!(conn = self.id, "cannot answer: {e}"),
        }
        self.shared.update(|s| {
            s.rejections.push(Rejection {
                connection: self.id,
                path: path.to_string(),
                status: refusal.status,
                code: refusal.code.to_string(),
                description: refusal.description.clone(),
            })
        });
        if refusal.status == 403 {
            self.shared.command(Some(self.id), || ConnCmd::GoAway {
                end_downchannel: true,
            });
        }
    }

    /// What the device on this connection declared: in a Discovery here,
    /// else in its last one on another connection (AVS remembers), else
    /// nothing (a device that never sent one).
    pub(super) fn declared(&self) -> Option<super::capabilities::Declaration> {
        let (here, device) = {
            let st = self.state();
            (st.declared.clone(), st.device.clone())
        };
        here.or_else(|| self.shared.declaration(&device))
    }

    /// Whether the stand-in may send this device a directive of
    /// `namespace`: one it declared (any it implements, if it never declared).
    pub(super) fn may_direct(&self, namespace: &str) -> bool {
        // A device that never declared (one set up on the console) gets
        // what the stand-in implements.
        match self.declared() {
            Some(d) => d.version(namespace).is_some(),
            None => super::capabilities::is_implemented(namespace),
        }
    }

    /// Wait for the `/delay` knob, if it covers `kind`.
    pub(super) async fn delay(&self, kind: Target) {
        if let Some(d) = self.shared.delay_for(kind) {
            tokio::time::sleep(d).await;
        }
    }
}

/// Accept connections until `shutdown`; then let them drain briefly.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
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
        // Frames go out as they are written, as AVS's do: no Nagle delay.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%addr, "cannot set TCP_NODELAY: {e}");
        }
        if shared.refusing() {
            // A reset during the handshake: to the client, a server that is
            // not there. Closing the listener instead could lose the port.
            tracing::info!(%addr, "refusing a connection (/refuse knob)");
            let _ = tcp.set_zero_linger();
            drop(tcp);
            continue;
        }
        // Without it Nagle delays small frames by ~40 ms (field notes).
        let _ = tcp.set_nodelay(true);
        tracker.spawn(connection(
            tcp,
            addr,
            acceptor.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after shutdown; dropping them");
    }
}

async fn connection(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    // A second handle on the socket, so `/cut` can make the close a reset
    // while h2 owns the stream.
    let raw: Option<OwnedFd> = tcp.as_fd().try_clone_to_owned().ok();
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%addr, "TLS handshake failed (a client without ALPN h2 is refused): {e}");
            return;
        }
        Err(_) => {
            tracing::info!(%addr, "TLS handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        tracing::info!(%addr, "refused a client without ALPN h2 (HTTP/1.1)");
        let _ = tls.write_all(HTTP11_REFUSAL).await;
        let _ = tls.shutdown().await;
        return;
    }
    let cut = Arc::new(AtomicBool::new(false));
    let mut conn = match h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .handshake::<_, Bytes>(Lingering::new(tls, cut.clone()))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%addr, "HTTP/2 handshake failed: {e}");
            return;
        }
    };
    let (id, mut cmds, state) = shared.open_connection(addr);
    tracing::info!(conn = id, %addr, "connection open");
    let ctx = Arc::new(Ctx {
        id,
        state,
        shared: shared.clone(),
    });
    let mut closing = false;
    // Set with the GOAWAY: a client that never finishes its streams
    // does not keep the connection forever.
    let mut give_up_at: Option<Instant> = None;
    let expires_at = shared.connection_lifetime.map(|l| Instant::now() + l);
    let why = loop {
        let idle_at = shared
            .idle_timeout
            .map(|t| ctx.state().last_activity + t)
            .filter(|_| !closing);
        tokio::select! {
            req = conn.accept() => match req {
                Some(Ok((req, respond))) => {
                    ctx.state().last_activity = Instant::now();
                    tokio::spawn(route(req, respond, ctx.clone()));
                }
                Some(Err(e)) => break format!("ended with an error: {e}"),
                None => break "closed".to_string(),
            },
            cmd = cmds.recv() => match cmd {
                Some(ConnCmd::GoAway { end_downchannel }) => {
                    if !closing {
                        tracing::info!(conn = id, "sending GOAWAY");
                        go_away(&mut conn, &ctx, end_downchannel);
                        closing = true;
                        give_up_at = Some(Instant::now() + GOAWAY_GRACE);
                    }
                }
                Some(ConnCmd::Cut) | None => {
                    cut.store(true, Ordering::Relaxed);
                    if let Some(fd) = &raw {
                        let _ = socket2::SockRef::from(fd).set_linger(Some(Duration::ZERO));
                    }
                    shared.update(|s| s.connections.cuts += 1);
                    break "cut (TCP reset)".to_string();
                }
            },
            _ = sleep_until_opt(idle_at) => {
                let idle = shared.idle_timeout.unwrap_or_default();
                if ctx.state().last_activity.elapsed() >= idle {
                    tracing::info!(conn = id, "idle for {idle:?}; sending GOAWAY as AVS does");
                    go_away(&mut conn, &ctx, true);
                    closing = true;
                    give_up_at = Some(Instant::now() + GOAWAY_GRACE);
                }
            }
            _ = sleep_until_opt(expires_at), if !closing => {
                tracing::info!(conn = id, "connection lifetime over; sending GOAWAY as AVS does hourly");
                go_away(&mut conn, &ctx, true);
                closing = true;
                give_up_at = Some(Instant::now() + GOAWAY_GRACE);
            }
            _ = sleep_until_opt(give_up_at) => {
                break format!("closed: streams still open {GOAWAY_GRACE:?} after the GOAWAY");
            }
            _ = shutdown.cancelled(), if !closing => {
                go_away(&mut conn, &ctx, true);
                closing = true;
                give_up_at = Some(Instant::now() + GOAWAY_GRACE);
            }
        }
    };
    drop(conn);
    drop(raw);
    ctx.state().downchannel = None;
    shared.close_connection(id);
    tracing::info!(conn = id, "connection {why}");
}

/// GOAWAY (h2 lets streams below the last id finish), counted; AVS also
/// ends the downchannel, which the connection could not finish without.
fn go_away<T, B>(conn: &mut h2::server::Connection<T, B>, ctx: &Ctx, end_downchannel: bool)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: bytes::Buf,
{
    conn.graceful_shutdown();
    ctx.shared.going_away(ctx.id);
    if end_downchannel && let Some(tx) = &ctx.state().downchannel {
        let _ = tx.send(DownMsg::End);
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Route one stream: check the token, then the path and method.
async fn route(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, ctx: Arc<Ctx>) {
    let _counted = InProgress::new(ctx.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    tracing::info!(conn = ctx.id, %method, path, "request");
    // Alert sounds are on a CDN, without the device's token.
    if let Some((status, body)) = super::alerts::asset(&method, &path) {
        let resp = Response::builder()
            .status(status)
            .header("content-type", "audio/mpeg")
            .body(())
            .unwrap_or_default();
        if let Ok(mut stream) = respond.send_response(resp, body.is_none())
            && let Some(b) = body
        {
            let _ = stream.send_data(Bytes::from_static(b), true);
        }
        drain(req.into_body());
        return;
    }
    match check_auth(req.headers(), &ctx.shared.token_key).and_then(|claims| {
        ctx.shared.token_allowed(&claims, &path)?;
        Ok(claims)
    }) {
        Ok(claims) => {
            ctx.state().device = if claims.grant.is_empty() {
                claims.client_id
            } else {
                claims.grant
            };
        }
        Err(r) => {
            ctx.refuse(&mut respond, &path, &r);
            drain(req.into_body());
            return;
        }
    }
    match (method, path.as_str()) {
        (Method::GET, DIRECTIVES_PATH) => super::downchannel::serve(respond, ctx).await,
        (Method::POST, EVENTS_PATH) => super::events::event(req, respond, ctx).await,
        (Method::GET, PING_PATH) => ping(respond, ctx).await,
        (m, DIRECTIVES_PATH | EVENTS_PATH | PING_PATH) => {
            let allowed = if path == EVENTS_PATH { "POST" } else { "GET" };
            let r = Refusal {
                status: 405,
                code: "INVALID_REQUEST_EXCEPTION",
                description: format!("{m} {path}: only {allowed} is allowed here"),
            };
            ctx.refuse(&mut respond, &path, &r);
            drain(req.into_body());
        }
        _ => {
            let r = Refusal {
                status: 404,
                code: "INVALID_REQUEST_EXCEPTION",
                description: format!(
                    "no such path {path}; AVS serves {DIRECTIVES_PATH}, {EVENTS_PATH} and {PING_PATH}"
                ),
            };
            ctx.refuse(&mut respond, &path, &r);
            drain(req.into_body());
        }
    }
}

/// Counts a request as in progress on its connection while it lives.
struct InProgress(Arc<Ctx>);

impl InProgress {
    fn new(ctx: Arc<Ctx>) -> Self {
        let now = {
            let mut st = ctx.state();
            st.in_progress += 1;
            st.in_progress
        };
        ctx.shared
            .update(|s| s.peak_requests = s.peak_requests.max(now));
        Self(ctx)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.in_progress = st.in_progress.saturating_sub(1);
    }
}

/// Read and discard what is left of a refused request's body. Dropping it
/// unread would reset the stream, and a client still writing its body
/// would then see a stream error instead of the refusal it was sent.
pub(super) fn drain(mut body: RecvStream) {
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let read = async {
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
        };
        let _ = tokio::time::timeout(DRAIN_BODY_TIMEOUT, read).await;
    });
}

async fn ping(mut respond: SendResponse<Bytes>, ctx: Arc<Ctx>) {
    ctx.delay(Target::Ping).await;
    if let Some(code) = ctx.shared.take_status(Target::Ping) {
        ctx.refuse(&mut respond, PING_PATH, &Refusal::for_status(code));
        return;
    }
    let resp = Response::builder().status(204).body(()).unwrap_or_default();
    if respond.send_response(resp, true).is_ok() {
        ctx.shared.update(|s| s.pings += 1);
    }
}
