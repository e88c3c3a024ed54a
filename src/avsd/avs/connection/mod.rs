//! The one AVS connection: a supervisor task owns its lifecycle (connect,
//! downchannel, post-connect events, ping, reconnect with back-off, GOAWAY
//! handover); a cloneable [`ConnectionHandle`] sends events on whatever
//! link is current, so a slow upload never blocks the supervisor.

mod exchange;
mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use exchange::SendError;

use super::inbound::Inbound;
use super::link::Link;
use crate::auth::AuthHandle;
use avs_proto::message::ContextEntry;
use kit::actor::{ActorError, MAILBOX, call};
use kit::published::{self, Subscriber};

/// The `Dialog.Connection` values: the AVS HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionState {
    /// No connection.
    #[default]
    Disconnected,
    /// Connecting or synchronizing state.
    Connecting,
    /// Downchannel open and state synchronized.
    Connected,
}

impl ConnectionState {
    /// The wire name on D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
        }
    }
}

/// AVS allows 10 concurrent streams: the downchannel, a ping and 8 events.
pub const MAX_EVENTS_IN_FLIGHT: usize = 8;

/// The North America endpoint, the default.
pub const DEFAULT_ENDPOINT: &str = "https://alexa.na.gateway.devices.a2z.com";

/// The gateway base URL for a region name, or the URL itself.
pub fn endpoint_for(region_or_url: &str) -> String {
    match region_or_url {
        "na" | "NA" => DEFAULT_ENDPOINT.to_string(),
        "eu" | "EU" => "https://alexa.eu.gateway.devices.a2z.com".to_string(),
        "fe" | "FE" => "https://alexa.fe.gateway.devices.a2z.com".to_string(),
        url => url.trim_end_matches('/').to_string(),
    }
}

/// Who this device is, for `Alexa.Discovery`.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Product ID at Amazon.
    pub product_id: String,
    /// Device serial number.
    pub dsn: String,
    /// The AVS interfaces this device implements.
    pub capabilities: Vec<super::discovery::Capability>,
}

/// Timings and where to connect.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL (`https://host[:port]`).
    pub endpoint: String,
    /// Extra CA to trust (a stand-in's).
    pub ca_file: Option<PathBuf>,
    /// How often to ping an idle connection (AVS closes it after 5 min).
    pub ping_interval: Duration,
    /// How long a ping may take.
    pub ping_timeout: Duration,
    /// How long the downchannel may take to answer.
    pub downchannel_timeout: Duration,
    /// An event stream with no progress for this long is dead.
    pub stall_timeout: Duration,
    /// A link up this long resets the back-off.
    pub stable_after: Duration,
    /// How long an event waits for a link before failing.
    pub queue_timeout: Duration,
    /// This device.
    pub identity: Identity,
}

impl Settings {
    /// The protocol's timings for `endpoint`.
    pub fn new(endpoint: String, identity: Identity) -> Self {
        Self {
            endpoint,
            ca_file: None,
            ping_interval: Duration::from_secs(300),
            ping_timeout: Duration::from_secs(30),
            downchannel_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(15),
            identity,
        }
    }
}

/// Where the reconnect back-off stands, for `avsctl status` and the log:
/// published on every back-off delay, cleared (`next_try_at: None`) once
/// connected, and back to the default once a connection stayed up for
/// `avs.stable_after_secs` (the back-off then starts from its first step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reconnect {
    /// Back-off delays drawn since the back-off last started over (0: none).
    pub attempt: u32,
    /// The ceiling the last delay was drawn under (full jitter: the delay
    /// is anywhere from 0 to this).
    pub ceiling: Duration,
    /// When the next connection attempt starts, while one is waited for.
    pub next_try_at: Option<std::time::SystemTime>,
}

/// Supplies the context (player and speech states) for SynchronizeState.
pub type ContextSource = Arc<dyn Fn() -> Vec<ContextEntry> + Send + Sync>;

/// Commands the supervisor takes.
#[derive(Debug)]
pub enum Command {
    /// AVS answered 403 to this token on an event stream.
    Forbidden(kit::secret::Secret),
    /// Switch to another endpoint (System.SetEndpoint) and reconnect.
    SetEndpoint(String),
    /// Liveness check for the watchdog.
    Ping(oneshot::Sender<()>),
}

/// The event-side rules shared by every sender: at most 8 events in flight
/// on their own streams, an interface's next event opens only once its
/// previous one has response headers, and none opens while AVS asked us to
/// back off.
#[derive(Debug)]
pub(crate) struct Gate {
    slots: Semaphore,
    opening: Mutex<Throttle>,
    /// One turn per interface (namespace). The map holds the namespaces
    /// avsd's own agents send, a fixed handful, never anything from AVS.
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>,
}

impl Gate {
    fn new() -> Self {
        Self {
            slots: Semaphore::new(MAX_EVENTS_IN_FLIGHT),
            opening: Mutex::new(Throttle::new()),
            turns: Default::default(),
        }
    }

    /// The turn of `namespace`'s events.
    pub(crate) fn order(&self, namespace: String) -> Arc<Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(namespace).or_default().clone()
    }
}

/// Back-off after AVS answers an event with 429 or 5xx: the next event
/// waits, longer each time, until one is answered well.
#[derive(Debug)]
pub(crate) struct Throttle {
    backoff: kit::backoff::Backoff,
    not_before: Option<tokio::time::Instant>,
}

impl Throttle {
    fn new() -> Self {
        Self {
            backoff: kit::backoff::Backoff::avs_connect(),
            not_before: None,
        }
    }

    /// Wait out a back-off in force.
    pub(crate) async fn wait(&self) {
        if let Some(t) = self.not_before {
            tokio::time::sleep_until(t).await;
        }
    }

    /// Learn from an event's status.
    pub(crate) fn record(&mut self, status: u16) {
        match status {
            429 | 500..=599 => {
                let ceiling = self.backoff.next_ceiling();
                let delay = self.backoff.next_delay();
                tracing::warn!(
                    "AVS answered an event with HTTP {status}; holding back events for {} ms \
                     (ceiling {} ms)",
                    delay.as_millis(),
                    ceiling.as_millis()
                );
                self.not_before = Some(tokio::time::Instant::now() + delay);
            }
            200..=299 => {
                self.backoff.reset();
                self.not_before = None;
            }
            _ => {}
        }
    }
}

/// A cheap, cloneable way to use the connection.
#[derive(Clone)]
pub struct ConnectionHandle {
    cmd: mpsc::Sender<Command>,
    link: watch::Receiver<Option<Link>>,
    state: Subscriber<ConnectionState>,
    reconnect: Subscriber<Reconnect>,
    auth: AuthHandle,
    inbound: mpsc::Sender<Inbound>,
    gate: Arc<Gate>,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionHandle({:?})", *self.state.borrow())
    }
}

/// A piece of an event's audio part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPart {
    /// The next bytes (16 kHz, 16-bit little-endian mono PCM).
    Data(Bytes),
    /// The utterance is complete: close the part and the request. A sender
    /// dropped without this resets the stream instead, so AVS never answers
    /// a request the user abandoned.
    End,
}

impl ConnectionHandle {
    /// Send one event (`metadata` is its JSON), with an audio part streamed
    /// from `audio` until [`AudioPart::End`]. Directives in the response
    /// go to the inbound channel like the downchannel's. Returns the status.
    pub async fn send(
        &self,
        metadata: String,
        audio: Option<mpsc::Receiver<AudioPart>>,
    ) -> Result<u16, SendError> {
        let link = self.current_link().await?;
        let result = exchange::exchange(
            &link,
            &self.auth,
            &self.gate,
            &self.settings,
            &self.inbound,
            metadata,
            audio,
        )
        .await;
        if let Err(SendError::Forbidden(token)) = &result {
            let _ = self.cmd.send(Command::Forbidden(token.clone())).await;
        }
        result
    }

    /// Switch endpoints (System.SetEndpoint).
    pub async fn set_endpoint(&self, url: String) -> Result<(), ActorError> {
        self.cmd
            .send(Command::SetEndpoint(url))
            .await
            .map_err(|_| ActorError::Gone("connection"))
    }

    /// Answer within `timeout` or count as wedged.
    pub async fn ping(&self, timeout: Duration) -> Result<(), ActorError> {
        call("connection", &self.cmd, timeout, Command::Ping).await
    }

    /// Every connection state change.
    pub fn state(&self) -> Subscriber<ConnectionState> {
        self.state.clone()
    }

    /// The reconnect back-off: attempt, ceiling and next try (see
    /// [`Reconnect`]); for `avsctl status`.
    pub fn reconnect(&self) -> Subscriber<Reconnect> {
        self.reconnect.clone()
    }

    /// The link now, or the next one within the queue timeout.
    async fn current_link(&self) -> Result<Link, SendError> {
        let mut rx = self.link.clone();
        let wait = async {
            loop {
                if let Some(link) = rx.borrow_and_update().clone()
                    && link.closed_now().is_none()
                {
                    return Ok(link);
                }
                if rx.changed().await.is_err() {
                    return Err(SendError::NotConnected);
                }
            }
        };
        tokio::time::timeout(self.settings.queue_timeout, wait)
            .await
            .map_err(|_| SendError::NotConnected)?
    }
}

/// Start the supervisor. Directives go to `inbound`; `context` supplies the
/// state for SynchronizeState.
pub fn spawn(
    settings: Settings,
    auth: AuthHandle,
    inbound: mpsc::Sender<Inbound>,
    context: ContextSource,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> ConnectionHandle {
    let (cmd, rx) = mpsc::channel(MAILBOX);
    let (link_tx, link) = watch::channel(None);
    let (state_tx, state) = published::channel(ConnectionState::Disconnected);
    let (reconnect_tx, reconnect) = published::channel(Reconnect::default());
    let settings = Arc::new(settings);
    let gate = Arc::new(Gate::new());
    let sup = supervisor::Supervisor {
        endpoint: settings.endpoint.clone(),
        rejected: None,
        unreported: None,
        establishing: false,
        settings: settings.clone(),
        auth: auth.clone(),
        inbound: inbound.clone(),
        context,
        gate: gate.clone(),
        link: link_tx,
        state: state_tx,
        reconnect: reconnect_tx,
        rx,
        shutdown,
    };
    tracker.spawn(sup.run());
    ConnectionHandle {
        cmd,
        link,
        state,
        reconnect,
        auth,
        inbound,
        gate,
        settings,
    }
}
