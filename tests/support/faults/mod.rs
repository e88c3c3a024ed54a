//! Fault injection for the black-box tests: a TCP proxy between avsd and
//! the AVS stand-in that can cut connections (RST or FIN), black-hole them
//! (keep them open, forward nothing, send nothing back) and refuse new ones
//! (a link that is down); recorders of avsd's properties as
//! PropertiesChanged announces them; the fault tests' [`rig`]; and DNS
//! that fails on demand ([`dns`]). Test files using it declare
//! `mod fault_support;` next to `companion_support`, `support` and
//! `system_support`.

pub mod dns;
pub mod rig;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a cut ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// TCP reset on both sides (SO_LINGER 0, then close).
    Reset,
    /// An orderly close (FIN) on both sides.
    Close,
}

/// One proxied connection.
struct Conn {
    /// Ends the connection; the value says how.
    cut: CancellationToken,
    how: Mutex<Cut>,
    /// Forward nothing in either direction (bytes read are dropped).
    black: AtomicBool,
    /// avsd's side has closed (EOF or error) or the proxy ended it.
    client_gone: AtomicBool,
    /// The relay task has ended (both sides closed).
    done: AtomicBool,
}

struct Shared {
    upstream: SocketAddr,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// New connections are reset at once while set.
    refuse: AtomicBool,
    /// New connections are black-holed from the start while set (a TLS
    /// handshake that hangs).
    stall: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Connections made to the upstream (all accepted but stalled ones).
    upstream_made: AtomicU64,
    /// Black-holed connections avsd closed itself.
    black_closed: AtomicU64,
    /// Bumped on every change a test may wait for (a connection accepted,
    /// refused or ending).
    changes: watch::Sender<u64>,
}

impl Shared {
    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`. TLS passes through
/// untouched (the stand-in's certificate names 127.0.0.1, so avsd accepts
/// it on the proxy's port too).
pub struct Proxy {
    /// Where avsd connects instead of the stand-in.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Proxy {
    /// Start a proxy in front of `upstream` (an `https://127.0.0.1:PORT`
    /// base URL or `host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            conns: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            upstream_made: AtomicU64::new(0),
            black_closed: AtomicU64::new(0),
            changes: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        let (s, st) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = st.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                };
                if s.refuse.load(Ordering::SeqCst) {
                    reset(&client);
                    drop(client);
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    s.bump();
                    continue;
                }
                let conn = Arc::new(Conn {
                    cut: st.child_token(),
                    how: Mutex::new(Cut::Reset),
                    black: AtomicBool::new(s.stall.load(Ordering::SeqCst)),
                    client_gone: AtomicBool::new(false),
                    done: AtomicBool::new(false),
                });
                s.conns.lock().unwrap().push(conn.clone());
                s.accepted.fetch_add(1, Ordering::SeqCst);
                s.bump();
                let s2 = s.clone();
                tokio::spawn(async move {
                    relay(client, s2.upstream, &conn, &s2).await;
                    conn.client_gone.store(true, Ordering::SeqCst);
                    conn.done.store(true, Ordering::SeqCst);
                    s2.bump();
                });
            }
        });
        Proxy { addr, shared, stop }
    }

    /// The base URL avsd should use as its AVS endpoint.
    pub fn base(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// End every connection now.
    pub fn cut_all(&self, how: Cut) {
        for c in self.live_conns() {
            *c.how.lock().unwrap() = how;
            c.cut.cancel();
        }
    }

    /// Stop forwarding on every open connection, in both directions, without
    /// closing anything: only a timeout can tell. New connections are not
    /// affected. Returns how many were black-holed.
    pub fn black_hole_all(&self) -> usize {
        let live = self.live_conns();
        for c in &live {
            c.black.store(true, Ordering::SeqCst);
        }
        live.len()
    }

    /// Reset the black-holed connections that are still open, as the
    /// server's side learns when the network comes back. Returns how many
    /// avsd had not closed itself.
    pub fn heal_black_holes(&self) -> usize {
        let mut held_by_client = 0;
        for c in self.live_conns() {
            if c.black.load(Ordering::SeqCst) {
                if !c.client_gone.load(Ordering::SeqCst) {
                    held_by_client += 1;
                }
                c.cut.cancel();
            }
        }
        held_by_client
    }

    /// Reset new connections at once (`true`) or forward them again.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Black-hole new connections from their first byte (`true`), so
    /// their TLS handshake hangs, or forward them again.
    pub fn stall_new(&self, on: bool) {
        self.shared.stall.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections the proxy made to the upstream (the stand-in counts
    /// these).
    pub fn upstream(&self) -> u64 {
        self.shared.upstream_made.load(Ordering::SeqCst)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// How many black-holed connections avsd closed itself.
    pub fn black_closed_by_client(&self) -> u64 {
        self.shared.black_closed.load(Ordering::SeqCst)
    }

    /// Connections whose avsd side is still open and forwarded (not
    /// black-holed).
    pub fn forwarding(&self) -> usize {
        self.live_conns()
            .iter()
            .filter(|c| !c.black.load(Ordering::SeqCst) && !c.client_gone.load(Ordering::SeqCst))
            .count()
    }

    /// Black-holed connections avsd still holds open.
    pub fn black_held_by_client(&self) -> usize {
        self.live_conns()
            .iter()
            .filter(|c| c.black.load(Ordering::SeqCst) && !c.client_gone.load(Ordering::SeqCst))
            .count()
    }

    fn live_conns(&self) -> Vec<Arc<Conn>> {
        let mut conns = self.shared.conns.lock().unwrap();
        conns.retain(|c| !c.done.load(Ordering::SeqCst));
        conns.clone()
    }

    /// Wait until `cond` holds (checked on every change), or panic with
    /// `what` after `timeout`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, cond: impl Fn(&Proxy) -> bool) {
        let mut rx = self.shared.changes.subscribe();
        let wait = async {
            loop {
                rx.borrow_and_update();
                if cond(self) {
                    return;
                }
                rx.changed().await.unwrap();
            }
        };
        if tokio::time::timeout(timeout, wait).await.is_err() {
            panic!(
                "proxy: {what} did not happen within {timeout:?} (accepted {}, refused {}, \
                 forwarding {}, black-holed and held by avsd {})",
                self.accepted(),
                self.refused(),
                self.forwarding(),
                self.black_held_by_client()
            );
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Make the next close of `s` a TCP reset.
fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Copy bytes both ways until both sides close or the connection is cut;
/// while black-holed, bytes are read and dropped (so avsd's writes never
/// block and its close is seen).
async fn relay(client: TcpStream, upstream: SocketAddr, conn: &Conn, shared: &Shared) {
    let _ = client.set_nodelay(true);
    if conn.black.load(Ordering::SeqCst) {
        // Stalled from the start: the server is never reached; read and
        // drop what avsd sends until it gives up or the test cuts.
        let mut client = client;
        let mut buf = vec![0u8; 16384];
        let cut = loop {
            tokio::select! {
                _ = conn.cut.cancelled() => break true,
                r = client.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) {
                    break false;
                },
            }
        };
        if cut {
            reset(&client);
        } else {
            conn.client_gone.store(true, Ordering::SeqCst);
            shared.black_closed.fetch_add(1, Ordering::SeqCst);
        }
        return;
    }
    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(_) => {
            reset(&client);
            return;
        }
    };
    shared.upstream_made.fetch_add(1, Ordering::SeqCst);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (mut cbuf, mut sbuf) = (vec![0u8; 16384], vec![0u8; 16384]);
    let (mut c_open, mut s_open) = (true, true);
    while c_open || s_open {
        tokio::select! {
            _ = conn.cut.cancelled() => {
                if *conn.how.lock().unwrap() == Cut::Reset {
                    reset(cw.as_ref());
                    reset(sw.as_ref());
                } else {
                    let _ = cw.shutdown().await;
                    let _ = sw.shutdown().await;
                }
                return;
            }
            r = cr.read(&mut cbuf), if c_open => match r {
                Ok(0) | Err(_) => {
                    c_open = false;
                    conn.client_gone.store(true, Ordering::SeqCst);
                    if conn.black.load(Ordering::SeqCst) {
                        shared.black_closed.fetch_add(1, Ordering::SeqCst);
                    } else {
                        let _ = sw.shutdown().await;
                    }
                    shared.bump();
                }
                Ok(n) => {
                    if !conn.black.load(Ordering::SeqCst) && sw.write_all(&cbuf[..n]).await.is_err() {
                        s_open = false;
                    }
                }
            },
            r = sr.read(&mut sbuf), if s_open => match r {
                Ok(0) | Err(_) => {
                    s_open = false;
                    if !conn.black.load(Ordering::SeqCst) {
                        let _ = cw.shutdown().await;
                    }
                }
                Ok(n) => {
                    if !conn.black.load(Ordering::SeqCst) && cw.write_all(&sbuf[..n]).await.is_err() {
                        c_open = false;
                    }
                }
            },
        }
    }
}

/// Every string and number property change avsd announced with PropertiesChanged (a
/// signal stream, so no change is coalesced away), with when it was seen.
#[derive(Clone)]
pub struct Recorder {
    /// (when, `Interface.Property` without the `org.avsd.Avs1.` prefix, value)
    pub seen: Arc<Mutex<Vec<(Instant, String, String)>>>,
    changes: watch::Receiver<usize>,
}

impl Recorder {
    /// Subscribe on `conn` (the match rule is in place when this returns).
    pub async fn start(conn: &zbus::Connection) -> Recorder {
        let props = zbus::fdo::PropertiesProxy::builder(conn)
            .destination("org.avsd.Avs1")
            .unwrap()
            .path("/org/avsd/Avs1")
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut stream = props.receive_properties_changed().await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, changes) = watch::channel(0);
        let sink = seen.clone();
        tokio::spawn(async move {
            // Keep the proxy (and so the match rule) alive with the stream.
            let _props = props;
            while let Some(signal) = stream.next().await {
                let Ok(args) = signal.args() else { continue };
                let iface = args.interface_name().to_string();
                let iface = iface.trim_start_matches("org.avsd.Avs1.").to_string();
                let now = Instant::now();
                let mut s = sink.lock().unwrap();
                for (name, value) in args.changed_properties() {
                    let v = match value {
                        zbus::zvariant::Value::Str(v) => v.to_string(),
                        zbus::zvariant::Value::U32(n) => n.to_string(),
                        zbus::zvariant::Value::U64(n) => n.to_string(),
                        _ => continue,
                    };
                    s.push((now, format!("{iface}.{name}"), v));
                }
                let _ = tx.send(s.len());
            }
        });
        Recorder { seen, changes }
    }

    /// How many changes were seen so far (a mark for [`Recorder::wait_after`]).
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Whether no change was seen yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values `property` (`Dialog.Connection`, `Authorization.State`)
    /// took from index `mark` on.
    pub fn values(&self, property: &str, mark: usize) -> Vec<String> {
        self.seen.lock().unwrap()[mark..]
            .iter()
            .filter(|(_, p, _)| p == property)
            .map(|(_, _, v)| v.clone())
            .collect()
    }

    /// Wait until `property` took a value at or after index `mark` for
    /// which `want` holds; its index and when it was seen. None after
    /// `timeout`.
    pub async fn wait_after(
        &self,
        mark: usize,
        property: &str,
        want: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<(usize, Instant)> {
        let mut rx = self.changes.clone();
        let find = || {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .skip(mark)
                .find(|(_, (_, p, v))| p == property && want(v))
                .map(|(i, (t, _, _))| (i, *t))
        };
        let wait = async {
            loop {
                rx.borrow_and_update();
                if let Some(hit) = find() {
                    return hit;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }
}
