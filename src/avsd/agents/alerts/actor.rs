//! The alerts actor: owns the store, the one wall-clock timer, the ringing
//! alert and the outbox's producer end. The capability agent, D-Bus and
//! `Dialog.Stop` send it [`Command`]s; it publishes the list and the
//! context. It runs beside the router, so an alert rings and stops
//! whatever AVS or the network do.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::assets::Assets;
use super::clock::{self, Wake, WallTimer};
use super::outbox::Outbox;
use super::store::{Store, StoredAlert};
use super::tone;
use super::validate::validate;
use super::{AlertsView, Listed, limits};
use crate::audio::focus::{Backgrounded, Channel, FocusState};
use crate::audio::{Activity, Player, PlayerEvent, Speaker};
use avs_proto::message::{AlertType, AlertsState, Event};

/// How late an alert may still ring (after a restart, or behind another
/// alert); a later one is dropped and reported with AlertStopped.
pub const PAST_DUE_MS: i64 = 30 * 60 * 1000;
/// How often an unsynchronized clock is looked at again.
const SYNC_POLL: Duration = Duration::from_secs(1);

/// What the actor is asked to do.
pub(crate) enum Command {
    /// A SetAlert's payload (its token already read).
    Set { token: String, payload: Value },
    /// DeleteAlert (`many` false, one token) or DeleteAlerts.
    Delete { tokens: Vec<String>, many: bool },
    /// Alerts.SetVolume.
    SetVolume(i64),
    /// Alerts.AdjustVolume.
    AdjustVolume(i64),
    /// The user stopped the ringing alert on the device; replies whether
    /// one was ringing.
    Stop(oneshot::Sender<bool>),
}

/// What the actor publishes.
pub(crate) struct Outputs {
    pub view: watch::Sender<AlertsView>,
    pub context: watch::Sender<AlertsState>,
}

/// What the actor needs from the daemon.
pub struct Links {
    /// `<state>/alerts`: the store and the outbox.
    pub dir: PathBuf,
    /// The one speaker (none when it could not be started: alerts are
    /// still kept, started and stopped, silently).
    pub speaker: Option<Speaker>,
    /// Whether the clock is synchronized: this file exists (or the
    /// machine has a real-time clock).
    pub clock_sync_file: PathBuf,
    /// The real-time clock device to look for.
    pub rtc: PathBuf,
    /// A CA to trust for the alerts' sounds besides the system's
    /// (`avs.ca_file`).
    pub ca_file: Option<PathBuf>,
}

/// What the ringing alert's sound did.
enum Ring {
    Player(Option<PlayerEvent>),
    Focus(bool),
}

struct Ringing {
    alert: StoredAlert,
    player: Option<Player>,
    focus: Option<watch::Receiver<FocusState>>,
    background: bool,
    /// It plays its own sounds (the tone takes over if they fail).
    assets: bool,
}

struct Actor {
    store: Store,
    outbox: Arc<Outbox>,
    timer: Option<WallTimer>,
    speaker: Option<Speaker>,
    ringing: Option<Ringing>,
    synced: bool,
    sync_file: PathBuf,
    rtc: PathBuf,
    out: Outputs,
    assets: Arc<Assets>,
}

/// Runs the actor until `shutdown` or until every handle is gone.
pub(crate) async fn run(
    links: Links,
    outbox: Arc<Outbox>,
    mut rx: mpsc::Receiver<Command>,
    out: Outputs,
    shutdown: CancellationToken,
) {
    let timer = match WallTimer::new() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(
                "cannot make the alerts' wall-clock timer (timerfd): {e}; alerts are looked at once a second instead"
            );
            None
        }
    };
    let mut a = Actor {
        store: Store::open(&links.dir),
        outbox,
        timer,
        speaker: links.speaker,
        ringing: None,
        synced: false,
        sync_file: links.clock_sync_file,
        rtc: links.rtc,
        out,
        assets: Arc::new(Assets::new(
            links.dir.join("assets"),
            links.ca_file.as_deref(),
        )),
    };
    a.check_sync();
    a.publish();
    loop {
        let armed = a.arm();
        let timer = async {
            match (&a.timer, armed) {
                (Some(t), true) => t.wait().await,
                (None, true) => {
                    tokio::time::sleep(SYNC_POLL).await;
                    Ok(Wake::Due)
                }
                _ => std::future::pending().await,
            }
        };
        let unsynced = !a.synced && !a.store.alerts.is_empty();
        let ringing = async {
            match a.ringing.as_mut() {
                Some(Ringing { player, focus, .. }) => {
                    let player = async {
                        match player.as_mut() {
                            Some(p) => p.next_event().await,
                            None => std::future::pending().await,
                        }
                    };
                    let focus = async {
                        match focus.as_mut() {
                            Some(f) => f.changed().await.is_ok(),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        event = player => Ring::Player(event),
                        alive = focus => Ring::Focus(alive),
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            cmd = rx.recv() => match cmd {
                Some(cmd) => a.command(cmd).await,
                None => break,
            },
            woke = timer => match woke {
                Ok(Wake::Due) => a.due().await,
                Ok(Wake::ClockStepped) => {
                    tracing::info!("the clock was set; alerts are scheduled again against the new time");
                    a.check_sync();
                }
                Err(e) => {
                    tracing::error!("the alerts' timer failed: {e}; alerts are looked at once a second instead");
                    a.timer = None;
                }
            },
            ring = ringing => match ring {
                Ring::Player(event) => a.player_event(event).await,
                Ring::Focus(alive) => a.focus_changed(alive),
            },
            () = tokio::time::sleep(SYNC_POLL), if unsynced => a.check_sync(),
        }
    }
    // A ringing alert stops with the daemon; it is still stored, so it
    // rings again at the next start if it is not 30 minutes late by then.
    if let Some(r) = a.ringing.take() {
        drop(r.player);
    }
}

impl Actor {
    fn check_sync(&mut self) {
        let was = self.synced;
        self.synced = clock::synchronized(&self.rtc, &self.sync_file);
        if self.synced && !was {
            tracing::info!("the clock is synchronized: alerts are scheduled");
        } else if !self.synced && was {
            tracing::warn!("the clock is no longer known to be synchronized");
        } else if !self.synced && !self.store.alerts.is_empty() {
            tracing::debug!(
                "alerts wait for the clock: no real-time clock and {} does not exist yet",
                self.sync_file.display()
            );
        }
    }

    /// Arms the timer for the next alert; false when none is to come.
    fn arm(&mut self) -> bool {
        let next = if self.synced && self.ringing.is_none() {
            self.store.alerts.first().map(|a| a.due_ms)
        } else {
            None
        };
        if let Some(t) = &self.timer
            && let Err(e) = t.arm(next)
        {
            tracing::error!("cannot arm the alerts' timer: {e}");
        }
        next.is_some()
    }

    fn publish(&self) {
        let active: Vec<_> = self.ringing.iter().map(|r| r.alert.context()).collect();
        self.out.context.send_replace(AlertsState {
            all_alerts: self.store.alerts.iter().map(StoredAlert::context).collect(),
            active_alerts: active,
        });
        let view = AlertsView {
            alerts: self
                .store
                .alerts
                .iter()
                .map(|a| Listed {
                    token: a.token.clone(),
                    kind: kind_str(a.kind).to_string(),
                    due_unix: a.due_ms.div_euclid(1000),
                    label: a.label.clone().unwrap_or_default(),
                })
                .collect(),
            active: self
                .ringing
                .as_ref()
                .map(|r| r.alert.token.clone())
                .unwrap_or_default(),
        };
        self.out.view.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    fn save(&mut self) -> bool {
        match self.store.save() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    "cannot save the alerts: {e}; check the state directory's disk and permissions"
                );
                false
            }
        }
    }

    fn event(&self, name: &str, payload: Value) {
        self.outbox
            .push(Event::new("Alerts", name).with_payload(payload));
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Set { token, payload } => self.set(token, &payload).await,
            Command::Delete { tokens, many } => self.delete(tokens, many),
            Command::SetVolume(v) => self.volume(v),
            Command::AdjustVolume(d) => self.volume(i64::from(self.store.volume) + d),
            Command::Stop(reply) => {
                let ringing = self.ringing.is_some();
                // Silence first and answer at once; the files are written
                // (fsync can take a while on an SD card) after.
                if let Some(p) = self.ringing.as_mut().and_then(|r| r.player.as_mut()) {
                    p.stop();
                }
                let _ = reply.send(ringing);
                if ringing {
                    tracing::info!("the user stopped the alert");
                    self.end_ring();
                }
            }
        }
        self.publish();
    }

    async fn set(&mut self, token: String, payload: &Value) {
        let alert = match validate(&token, payload, clock::now_ms()) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!("SetAlert {token} refused: {why}");
                self.event("SetAlertFailed", json!({ "token": token }));
                return;
            }
        };
        let replacing = self.store.get(&token).is_some();
        if !replacing && let Err(why) = limits::room_for(&self.store, alert.kind) {
            tracing::warn!("SetAlert {token} refused: {why}");
            self.event("SetAlertFailed", json!({ "token": token }));
            return;
        }
        if self
            .ringing
            .as_ref()
            .is_some_and(|r| r.alert.token == token)
        {
            self.end_ring();
        }
        let old = self.store.get(&token).cloned();
        self.store.put(alert.clone());
        if !self.save() {
            // Not stored: AVS must not believe it is.
            self.store.remove(&token);
            if let Some(old) = old {
                self.store.put(old);
            }
            self.event("SetAlertFailed", json!({ "token": token }));
            return;
        }
        tracing::info!(
            "alert {token} set: {} at {}{}",
            kind_str(alert.kind),
            alert.scheduled_time,
            alert
                .label
                .as_deref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default()
        );
        self.event("SetAlertSucceeded", json!({ "token": token }));
        self.assets.fetch(&alert);
    }

    fn delete(&mut self, tokens: Vec<String>, many: bool) {
        if self
            .ringing
            .as_ref()
            .is_some_and(|r| tokens.contains(&r.alert.token))
        {
            self.end_ring();
        }
        let before = self.store.alerts.clone();
        for t in &tokens {
            self.store.remove(t);
        }
        let ok = before.len() == self.store.alerts.len() || self.save();
        if ok {
            for a in before.iter().filter(|a| tokens.contains(&a.token)) {
                self.assets.forget(a);
            }
        } else {
            self.store.alerts = before;
        }
        let (name, payload) = match (many, ok) {
            (true, true) => ("DeleteAlertsSucceeded", json!({ "tokens": tokens })),
            (true, false) => ("DeleteAlertsFailed", json!({ "tokens": tokens })),
            (false, true) => ("DeleteAlertSucceeded", json!({ "token": tokens[0] })),
            (false, false) => ("DeleteAlertFailed", json!({ "token": tokens[0] })),
        };
        tracing::info!("{name}: {}", tokens.join(", "));
        self.event(name, payload);
    }

    fn volume(&mut self, v: i64) {
        let volume = u8::try_from(v.clamp(0, 100)).unwrap_or(100);
        self.store.volume = volume;
        self.save();
        if let Some(p) = self.ringing.as_ref().and_then(|r| r.player.as_ref())
            && !self.ringing.as_ref().is_some_and(|r| r.background)
        {
            p.control().set_gain(gain(volume));
        }
        tracing::info!("alerts volume {volume}");
        self.event("VolumeChanged", json!({ "volume": volume }));
    }

    /// The timer fired: drop what is too late, ring what is due.
    async fn due(&mut self) {
        if !self.synced || self.ringing.is_some() {
            return;
        }
        let now = clock::now_ms();
        let late: Vec<StoredAlert> = self
            .store
            .alerts
            .iter()
            .filter(|a| now - a.due_ms > PAST_DUE_MS)
            .cloned()
            .collect();
        for a in &late {
            tracing::warn!(
                "alert {} was due at {} and is over 30 minutes late: dropped, not rung",
                a.token,
                a.scheduled_time
            );
            self.store.remove(&a.token);
            self.assets.forget(a);
        }
        if !late.is_empty() {
            self.save();
            for a in &late {
                self.event("AlertStopped", json!({ "token": a.token }));
            }
        }
        let Some(next) = self.store.alerts.first().cloned() else {
            self.publish();
            return;
        };
        if next.due_ms > now {
            self.publish();
            return;
        }
        self.ring(next, now).await;
        self.publish();
    }

    async fn ring(&mut self, alert: StoredAlert, now: i64) {
        tracing::info!(
            "alert {} ({}) rings, {} ms after its time",
            alert.token,
            kind_str(alert.kind),
            now - alert.due_ms
        );
        let sounds = self.assets.ready(&alert);
        let with_assets = sounds.is_some();
        if !alert.assets.is_empty() && !with_assets {
            tracing::warn!(
                "alert {}: its sounds are not all here; it rings the built-in tone",
                alert.token
            );
        }
        let played = self.sound(&alert, sounds).await;
        if alert.started {
            tracing::info!("alert {} rings on after a restart", alert.token);
        } else {
            self.event("AlertStarted", json!({ "token": alert.token }));
            let mut started = alert.clone();
            started.started = true;
            self.store.put(started);
            self.save();
        }
        match played {
            Some(Ok(player)) => {
                let mut focus = player.focus();
                let background = focus
                    .as_mut()
                    .is_some_and(|f| *f.borrow_and_update() == FocusState::Background);
                if background {
                    self.event("AlertEnteredBackground", json!({ "token": alert.token }));
                }
                self.ringing = Some(Ringing {
                    alert,
                    player: Some(player),
                    focus,
                    background,
                    assets: with_assets,
                });
            }
            Some(Err(e)) => {
                tracing::error!("alert {} cannot sound: {e}", alert.token);
                self.ringing = Some(Ringing {
                    alert,
                    player: None,
                    focus: None,
                    background: false,
                    assets: false,
                });
                self.end_ring();
            }
            None => {
                tracing::error!("alert {} cannot sound: no speaker", alert.token);
                self.ringing = Some(Ringing {
                    alert,
                    player: None,
                    focus: None,
                    background: false,
                    assets: false,
                });
                self.end_ring();
            }
        }
    }

    /// Starts `alert`'s sound: its own `sounds` (MP3 files, in play
    /// order) when given, else the tone. `None` without a speaker.
    async fn sound(
        &self,
        alert: &StoredAlert,
        sounds: Option<Vec<PathBuf>>,
    ) -> Option<Result<Player, crate::audio::AudioError>> {
        let speaker = self.speaker.as_ref()?;
        let activity = activity(self.store.volume);
        Some(match sounds {
            Some(paths) => {
                speaker
                    .play(
                        asset_stream(paths, alert.loop_count, alert.loop_pause_ms),
                        activity,
                    )
                    .await
            }
            None => {
                speaker
                    .play_pcm(
                        tone::source(alert.kind, alert.loop_count, alert.loop_pause_ms),
                        activity,
                    )
                    .await
            }
        })
    }

    /// The ringing alert is over (its sound ended, it was stopped or
    /// deleted): silence it, tell AVS, forget it.
    fn end_ring(&mut self) {
        let Some(mut r) = self.ringing.take() else {
            return;
        };
        if let Some(p) = r.player.as_mut() {
            p.stop();
        }
        drop(r.player);
        tracing::info!("alert {} stopped", r.alert.token);
        self.event("AlertStopped", json!({ "token": r.alert.token }));
        self.store.remove(&r.alert.token);
        self.save();
        self.assets.forget(&r.alert);
    }

    async fn player_event(&mut self, event: Option<PlayerEvent>) {
        match event {
            Some(PlayerEvent::Started) => {
                if let Some(r) = &self.ringing {
                    tracing::debug!("alert {} is sounding", r.alert.token);
                }
            }
            Some(PlayerEvent::Failed(e)) => {
                tracing::error!("the alert's sound failed: {e}");
                if self.ringing.as_ref().is_some_and(|r| r.assets) {
                    self.tone_instead().await;
                } else {
                    self.end_ring();
                }
            }
            Some(PlayerEvent::Finished | PlayerEvent::Stopped) | None => self.end_ring(),
        }
        self.publish();
    }

    /// The alert's own sounds failed to play: it rings on with the tone.
    async fn tone_instead(&mut self) {
        let Some(alert) = self.ringing.as_ref().map(|r| r.alert.clone()) else {
            return;
        };
        tracing::warn!(
            "alert {}: its sounds cannot be played; the built-in tone rings instead",
            alert.token
        );
        match self.sound(&alert, None).await {
            Some(Ok(player)) => {
                if let Some(r) = self.ringing.as_mut() {
                    r.focus = player.focus();
                    r.player = Some(player);
                    r.assets = false;
                }
            }
            _ => self.end_ring(),
        }
    }

    fn focus_changed(&mut self, alive: bool) {
        let Some(r) = self.ringing.as_mut() else {
            return;
        };
        let Some(focus) = r.focus.as_mut() else {
            return;
        };
        if !alive {
            r.focus = None;
            return;
        }
        let state = *focus.borrow_and_update();
        let token = r.alert.token.clone();
        match state {
            FocusState::Background if !r.background => {
                r.background = true;
                tracing::info!("alert {token} goes to the background");
                self.event("AlertEnteredBackground", json!({ "token": token }));
            }
            FocusState::Foreground if r.background => {
                r.background = false;
                tracing::info!("alert {token} comes back to the foreground");
                self.event("AlertEnteredForeground", json!({ "token": token }));
            }
            _ => {}
        }
    }
}

/// The alert's MP3 sounds, one after another, `loops` times (`None`:
/// until an hour has passed) with `pause_ms` between, fed to the decoder
/// as it takes them.
fn asset_stream(paths: Vec<PathBuf>, loops: Option<u32>, pause_ms: u64) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut files = Vec::new();
        for p in &paths {
            match tokio::fs::read(p).await {
                Ok(b) => files.push(Bytes::from(b)),
                // The decoder sees the end at once: Finished, AlertStopped.
                Err(e) => {
                    tracing::error!("cannot read alert sound {}: {e}", p.display());
                    return;
                }
            }
        }
        let max = Duration::from_millis(tone::MAX_RING_MS);
        let mut n = 0u32;
        while loops.is_none_or(|l| n < l) && start.elapsed() < max {
            if n > 0 && pause_ms > 0 {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            }
            for f in &files {
                if tx.send(f.clone()).await.is_err() {
                    return;
                }
            }
            n += 1;
        }
    });
    rx
}

/// An alert on the Alerts channel, ducked (not paused) under Alexa's voice
/// so that the user still hears it ring.
fn activity(volume: u8) -> Activity {
    Activity {
        channel: Channel::Alerts,
        interface: "Alerts",
        backgrounded: Backgrounded::Duck,
        gain: gain(volume),
    }
}

/// The alerts volume (0 to 100) as a gain: squared, so that equal steps
/// sound about equally loud.
fn gain(volume: u8) -> f32 {
    let v = f32::from(volume) / 100.0;
    v * v
}

/// `TIMER`, `ALARM` or `REMINDER`.
pub(crate) fn kind_str(kind: AlertType) -> &'static str {
    match kind {
        AlertType::Timer => "TIMER",
        AlertType::Alarm => "ALARM",
        AlertType::Reminder => "REMINDER",
    }
}
