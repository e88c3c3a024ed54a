//! What the AVS stand-in's connections share with its control API: the
//! fault knobs, the dialog settings, the statistics tests read, and a
//! registry of open connections the control API can act on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use super::capabilities::{Declaration, Declared};
pub use super::stats::{
    ConnectionStats, DiscoveryRecord, EventRecord, RecognizeRecord, Rejection, Stats,
};

/// Recognize audio kept for `GET /audio`: the last few, up to 5 min each.
const KEPT_AUDIO: usize = 8;
/// Devices whose last Discovery is remembered (a bound: tests only ever
/// have a few).
const REMEMBERED_DEVICES: usize = 1024;
/// 5 minutes of 16 kHz 16-bit mono.
pub(super) const MAX_KEPT_AUDIO_BYTES: usize = 5 * 60 * 32_000;

/// Which requests a fault knob applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `POST /v20160207/events`.
    Events,
    /// `GET /v20160207/directives`.
    Downchannel,
    /// `GET /ping`.
    Ping,
    /// All three.
    All,
}

impl Target {
    /// Parse the control API's `on=` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "events" => Ok(Self::Events),
            "downchannel" => Ok(Self::Downchannel),
            "ping" => Ok(Self::Ping),
            "all" => Ok(Self::All),
            other => Err(format!(
                "on={other}: expected events, downchannel, ping or all"
            )),
        }
    }

    fn covers(self, kind: Target) -> bool {
        self == Target::All || self == kind
    }
}

/// How the stand-in answers a Recognize.
#[derive(Debug, Clone)]
pub struct DialogSettings {
    /// NEAR_FIELD/FAR_FIELD: StopCapture this long after the first audio byte.
    pub stop_capture: Duration,
    /// StopCapture once this much silence follows speech.
    pub end_of_speech: Option<Duration>,
    /// The loudest 100 ms window must be above this RMS to count as speech.
    pub silence_rms: f64,
    /// After StopCapture, how long the client gets to close its upload
    /// before the answer goes out anyway.
    pub close_grace: Duration,
    /// After the upload ends, how long the cloud thinks before it answers.
    pub think: Duration,
    /// Add an ExpectSpeech with this timeout to the next answers.
    pub expect_speech_ms: u64,
    /// How many answers still get an ExpectSpeech.
    pub expect_speech_count: u32,
}

impl Default for DialogSettings {
    fn default() -> Self {
        Self {
            stop_capture: Duration::from_millis(3000),
            end_of_speech: None,
            silence_rms: 200.0,
            close_grace: Duration::from_secs(2),
            think: Duration::ZERO,
            expect_speech_ms: 8000,
            expect_speech_count: 0,
        }
    }
}

/// A status the next requests are answered with.
#[derive(Debug, Clone)]
struct StatusKnob {
    code: u16,
    remaining: u32,
    on: Target,
}

#[derive(Debug, Default)]
struct Knobs {
    refuse_until: Option<Instant>,
    /// Refuse the token of the next this-many requests of a kind with 403,
    /// and that token everywhere from then on.
    refuse_token: Option<(Target, u32)>,
    status: Option<StatusKnob>,
    delay: Option<(Duration, Target)>,
    /// Answer SynchronizeState 200 with an empty multipart body, not 204.
    sync_empty_200: bool,
}

/// Orders the control API gives one connection.
#[derive(Debug)]
pub(super) enum ConnCmd {
    /// Send GOAWAY; optionally end the downchannel (AVS does).
    GoAway { end_downchannel: bool },
    /// Reset the TCP connection.
    Cut,
}

/// What the downchannel writer sends.
#[derive(Debug)]
pub(super) enum DownMsg {
    /// One directive JSON part, with an optional binary attachment.
    Push {
        json: Bytes,
        attachment: Option<(String, Bytes)>,
        tiny: bool,
        /// Write `json` as it is, with no part framing around it (to test a
        /// client against a broken body).
        raw: bool,
    },
    /// Close the multipart body and the stream.
    End,
}

/// Per-connection protocol state.
#[derive(Debug)]
pub(super) struct ConnState {
    /// The open downchannel's writer, if any.
    pub downchannel: Option<mpsc::UnboundedSender<DownMsg>>,
    /// Whether System.SynchronizeState has been accepted.
    pub synced: bool,
    /// When the last stream opened.
    pub last_activity: Instant,
    /// Whether a GOAWAY went out.
    pub going_away: bool,
    /// Whether a downchannel was ever opened here.
    pub had_downchannel: bool,
    /// Requests being handled now.
    pub in_progress: u64,
    /// What the device declared in a Discovery on this connection.
    pub declared: Option<Declaration>,
    /// The device of the last authorized request (its token's grant, or
    /// its client without one).
    pub device: String,
}

struct ConnEntry {
    cmd: mpsc::UnboundedSender<ConnCmd>,
    state: Arc<Mutex<ConnState>>,
    peer: SocketAddr,
}

/// State shared by every connection and the control API.
pub struct Shared {
    pub(super) token_key: Vec<u8>,
    /// The revocation list `avs-sim lwa` writes (next to the key file).
    revocations: Option<std::path::PathBuf>,
    /// Token ids refused through the `refuse_token` knob, for good.
    refused_tokens: Mutex<std::collections::HashSet<String>>,
    pub(super) answer_mp3: Bytes,
    /// Scripted answers and the state of the interfaces beyond the dialog.
    pub(super) interfaces: super::interfaces::Interfaces,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) connection_lifetime: Option<Duration>,
    dialog: Mutex<DialogSettings>,
    knobs: Mutex<Knobs>,
    stats: Mutex<Stats>,
    audio: Mutex<BTreeMap<usize, Bytes>>,
    /// Each device's last Discovery, by device (its token's grant): AVS
    /// remembers what a device declared across connections.
    declarations: Mutex<BTreeMap<String, Declaration>>,
    conns: Mutex<BTreeMap<u64, ConnEntry>>,
    next_conn: AtomicU64,
    changed: watch::Sender<u64>,
}

/// A poisoned lock holds plain data; keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Fresh state: no connections, no knobs, empty statistics.
    pub(super) fn new(
        token_key: Vec<u8>,
        revocations: Option<std::path::PathBuf>,
        answer_mp3: Bytes,
        dialog: DialogSettings,
        idle_timeout: Option<Duration>,
        connection_lifetime: Option<Duration>,
    ) -> Self {
        Self {
            token_key,
            revocations,
            refused_tokens: Mutex::default(),
            answer_mp3,
            interfaces: Default::default(),
            idle_timeout,
            connection_lifetime,
            dialog: Mutex::new(dialog),
            knobs: Mutex::default(),
            stats: Mutex::default(),
            audio: Mutex::default(),
            declarations: Mutex::default(),
            conns: Mutex::default(),
            next_conn: AtomicU64::new(1),
            changed: watch::channel(0).0,
        }
    }

    /// A copy of the statistics.
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Wakes on every statistics change (`/wait`).
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Change the statistics and wake `/wait` callers.
    pub(super) fn update(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.stats));
        self.changed.send_modify(|g| *g += 1);
    }

    /// Clear statistics and knobs (not the open connections).
    pub(super) fn reset(&self) {
        *lock(&self.knobs) = Knobs::default();
        self.interfaces.reset();
        lock(&self.audio).clear();
        self.update(|s| {
            let (current, active) = (s.connections.current, s.connections.active);
            *s = Stats::default();
            s.connections.current = current;
            s.connections.peak = current;
            s.connections.active = active;
            s.connections.peak_active = active;
        });
    }

    /// Answer SynchronizeState 200 with an empty body (`true`) or 204.
    pub(super) fn set_sync_empty_200(&self, on: bool) {
        lock(&self.knobs).sync_empty_200 = on;
    }

    /// Whether SynchronizeState gets 200 with an empty body.
    pub(super) fn sync_empty_200(&self) -> bool {
        lock(&self.knobs).sync_empty_200
    }

    /// The dialog settings now.
    pub(super) fn dialog(&self) -> DialogSettings {
        lock(&self.dialog).clone()
    }

    /// Change the dialog settings; the result.
    pub(super) fn set_dialog(&self, f: impl FnOnce(&mut DialogSettings)) -> DialogSettings {
        let mut d = lock(&self.dialog);
        f(&mut d);
        d.clone()
    }

    /// Take one ExpectSpeech from the knob, if any is left: its timeout.
    pub(super) fn take_expect_speech(&self) -> Option<u64> {
        let mut d = lock(&self.dialog);
        if d.expect_speech_count == 0 {
            return None;
        }
        d.expect_speech_count -= 1;
        Some(d.expect_speech_ms)
    }

    // --- knobs ---

    /// Refuse new connections for `d` from now.
    pub(super) fn refuse_for(&self, d: Duration) {
        lock(&self.knobs).refuse_until = Some(Instant::now() + d);
    }

    /// Whether new connections are refused now; counts the refusal.
    pub(super) fn refusing(&self) -> bool {
        let refusing = lock(&self.knobs)
            .refuse_until
            .is_some_and(|t| Instant::now() < t);
        if refusing {
            self.update(|s| s.connections.refused += 1);
        }
        refusing
    }

    /// Answer the next `count` requests of kind `on` with `code`.
    pub(super) fn set_status(&self, code: u16, count: u32, on: Target) {
        lock(&self.knobs).status = (count > 0).then_some(StatusKnob {
            code,
            remaining: count,
            on,
        });
    }

    /// Refuse the tokens of the next `count` requests of kind `on` with
    /// 403, and each such token on every later request: AVS's view of a
    /// token LWA still calls valid but that AVS no longer takes.
    pub(super) fn set_refuse_token(&self, count: u32, on: Target) {
        lock(&self.knobs).refuse_token = (count > 0).then_some((on, count));
    }

    /// Whether AVS takes a token whose signature and expiry are good, on a
    /// request for `path`: not revoked or expired early at LWA, not refused
    /// before, and not the one the `refuse_token` knob is waiting for.
    pub(super) fn token_allowed(
        &self,
        claims: &crate::token::Claims,
        path: &str,
    ) -> Result<(), super::rules::Refusal> {
        use super::rules::forbidden;
        if let Some(why) = self
            .revocations
            .as_deref()
            .and_then(|list| crate::token::revoked(list, claims))
        {
            return Err(forbidden(format!("the access token was refused: {why}")));
        }
        if lock(&self.refused_tokens).contains(&claims.jti) {
            return Err(forbidden(
                "the access token was refused: avs-sim refused it before and still does".into(),
            ));
        }
        let kind = match path {
            super::DIRECTIVES_PATH => Target::Downchannel,
            super::EVENTS_PATH => Target::Events,
            super::PING_PATH => Target::Ping,
            _ => return Ok(()),
        };
        let mut knobs = lock(&self.knobs);
        if let Some((on, left)) = knobs.refuse_token.as_mut()
            && on.covers(kind)
        {
            *left -= 1;
            if *left == 0 {
                knobs.refuse_token = None;
            }
            drop(knobs);
            lock(&self.refused_tokens).insert(claims.jti.clone());
            return Err(forbidden(
                "the access token was refused: avs-sim was told to refuse it (for good)".into(),
            ));
        }
        Ok(())
    }

    /// The status the next request of `kind` must get, consuming one use.
    pub(super) fn take_status(&self, kind: Target) -> Option<u16> {
        let mut k = lock(&self.knobs);
        let knob = k.status.as_mut()?;
        if !knob.on.covers(kind) {
            return None;
        }
        let code = knob.code;
        knob.remaining -= 1;
        if knob.remaining == 0 {
            k.status = None;
        }
        Some(code)
    }

    /// Delay answers to requests of kind `on` by `d` (zero: no delay).
    pub(super) fn set_delay(&self, d: Duration, on: Target) {
        lock(&self.knobs).delay = (!d.is_zero()).then_some((d, on));
    }

    /// The delay for a request of `kind`, if any.
    pub(super) fn delay_for(&self, kind: Target) -> Option<Duration> {
        lock(&self.knobs)
            .delay
            .filter(|(_, on)| on.covers(kind))
            .map(|(d, _)| d)
    }

    // --- connections ---

    /// Register a new connection: its id, its command channel and state.
    pub(super) fn open_connection(
        &self,
        peer: SocketAddr,
    ) -> (u64, mpsc::UnboundedReceiver<ConnCmd>, Arc<Mutex<ConnState>>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (cmd, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(ConnState {
            downchannel: None,
            synced: false,
            last_activity: Instant::now(),
            going_away: false,
            had_downchannel: false,
            in_progress: 0,
            declared: None,
            device: String::new(),
        }));
        lock(&self.conns).insert(
            id,
            ConnEntry {
                cmd,
                state: state.clone(),
                peer,
            },
        );
        self.update(|s| {
            let c = &mut s.connections;
            c.current += 1;
            c.total += 1;
            c.peak = c.peak.max(c.current);
            c.active += 1;
            c.peak_active = c.peak_active.max(c.active);
        });
        (id, rx, state)
    }

    /// Forget a closed connection.
    pub(super) fn close_connection(&self, id: u64) {
        let Some(entry) = lock(&self.conns).remove(&id) else {
            return;
        };
        let was_active = !lock(&entry.state).going_away;
        self.update(|s| {
            let c = &mut s.connections;
            c.current = c.current.saturating_sub(1);
            if was_active {
                c.active = c.active.saturating_sub(1);
            }
        });
    }

    /// Count a GOAWAY sent on connection `id` (once).
    pub(super) fn going_away(&self, id: u64) {
        let first = lock(&self.conns).get(&id).is_some_and(|e| {
            let mut st = lock(&e.state);
            !std::mem::replace(&mut st.going_away, true)
        });
        if first {
            self.update(|s| {
                s.connections.goaways += 1;
                s.connections.active = s.connections.active.saturating_sub(1);
            });
        }
    }

    /// Send `make()` to every open connection (or just `only`); how many got it.
    pub(super) fn command(&self, only: Option<u64>, make: impl Fn() -> ConnCmd) -> usize {
        let conns = lock(&self.conns);
        conns
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == **id))
            .filter(|(_, e)| e.cmd.send(make()).is_ok())
            .count()
    }

    /// The open connections: id, peer, downchannel open, synchronized.
    pub(super) fn connections(&self) -> Vec<(u64, SocketAddr, bool, bool)> {
        lock(&self.conns)
            .iter()
            .map(|(id, e)| {
                let st = lock(&e.state);
                (*id, e.peer, st.downchannel.is_some(), st.synced)
            })
            .collect()
    }

    /// Hand `msg` to the downchannel of the newest connection that has one
    /// (during a GOAWAY handover that is the new connection); its id.
    pub(super) fn push(&self, msg: DownMsg) -> Option<u64> {
        let target = lock(&self.conns)
            .iter()
            .rev()
            .find_map(|(id, e)| lock(&e.state).downchannel.clone().map(|tx| (*id, tx)));
        let (id, tx) = target?;
        tx.send(msg).ok()?;
        self.update(|s| s.pushes += 1);
        Some(id)
    }

    // --- what devices declared ---

    /// Remember what `device` declared (its latest Discovery wins).
    pub(super) fn remember_declaration(&self, device: &str, declaration: Declaration) {
        let mut d = lock(&self.declarations);
        if d.len() >= REMEMBERED_DEVICES && !d.contains_key(device) {
            d.pop_first();
        }
        d.insert(device.to_string(), declaration);
    }

    /// What `device` last declared, on any connection.
    pub(super) fn declaration(&self, device: &str) -> Option<Declaration> {
        lock(&self.declarations).get(device).cloned()
    }

    // --- recognize audio ---

    /// Keep a Recognize's audio for `GET /audio?n=INDEX`.
    pub(super) fn keep_audio(&self, index: usize, pcm: Bytes) {
        let mut a = lock(&self.audio);
        a.insert(index, pcm);
        while a.len() > KEPT_AUDIO {
            a.pop_first();
        }
    }

    /// The kept audio of recognize `index`.
    pub(super) fn audio(&self, index: usize) -> Option<Bytes> {
        lock(&self.audio).get(&index).cloned()
    }
}
