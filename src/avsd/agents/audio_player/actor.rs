//! The player's actor: owns the queue and the stream playing, turns the
//! speaker's counters into AudioPlayer events at their documented moments,
//! and sends the PlaybackController events of the buttons. One task; its
//! mailbox is bounded and fed by the agent and D-Bus.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::directive::{ClearBehavior, InterruptedBehavior, Metadata, Play, PlayBehavior};
use super::state::PlayerState;
use super::stream::{self, Kept, MediaError, MediaErrorType, Opened};
use super::{Button, Command};
use crate::audio::focus::{Backgrounded, Channel};
use crate::audio::{Activity, Player, PlayerEvent, Speaker};
use crate::avs::connection::{ConnectionHandle, ContextSource};
use avs_proto::message::{Event, PlayerActivity};

/// Items the queue holds beyond the one playing; AVS enqueues one or two.
const MAX_QUEUE: usize = 16;
/// Attachments kept for `cid:` items not yet played.
const MAX_KEPT: usize = 4;
/// Events waiting to be sent, in order.
const OUTBOX: usize = 32;
/// How long a `cid:` item waits for its attachment (it follows the Play
/// in the same message, so this only bounds a broken one).
const ATTACHMENT_WAIT: Duration = Duration::from_secs(10);
/// How often pause and stutter are looked at while a stream plays.
const POLL: Duration = Duration::from_millis(50);
/// The same once the stream is decoded to its end.
const END_POLL: Duration = Duration::from_millis(5);

/// A stream waiting in the queue.
struct Item {
    token: String,
    url: String,
    offset_ms: u64,
    expiry: Option<SystemTime>,
    delay_ms: Option<u64>,
    interval_ms: Option<u64>,
    metadata: Metadata,
    interrupted: InterruptedBehavior,
}

impl Item {
    fn from_play(play: &Play) -> Self {
        let s = &play.audio_item.stream;
        let report = s.progress_report.unwrap_or_default();
        Self {
            token: s.token.clone(),
            url: s.url.clone(),
            offset_ms: s.offset_in_milliseconds,
            expiry: play.expiry(),
            delay_ms: report
                .progress_report_delay_in_milliseconds
                .filter(|&d| d > 0),
            interval_ms: report
                .progress_report_interval_in_milliseconds
                .filter(|&i| i > 0),
            metadata: play.audio_item.metadata.clone().unwrap_or_default(),
            interrupted: play.interrupted_behavior,
        }
    }
}

/// The stream playing.
struct Current {
    item: Item,
    player: Player,
    outcome: Option<oneshot::Receiver<Result<(), MediaError>>>,
    failure: Option<MediaError>,
    started: bool,
    body_done: bool,
    nearly_sent: bool,
    delay_due: Option<u64>,
    next_interval: Option<u64>,
    paused: bool,
    underruns: u64,
    stutter: Option<Instant>,
}

impl Current {
    fn offset(&self) -> u64 {
        self.item.offset_ms + self.player.offset_ms()
    }

    /// Why the fetch failed, if it did: the outcome is sent before the
    /// bytes end, so the decoder's end or failure can read it here.
    fn fetch_failure(&mut self) -> Option<MediaError> {
        if let Some(rx) = self.outcome.as_mut()
            && let Ok(outcome) = rx.try_recv()
        {
            self.outcome = None;
            match outcome {
                Ok(()) => self.body_done = true,
                Err(e) => self.failure = Some(e),
            }
        }
        self.failure.clone()
    }
}

/// What the actor is built from.
pub(super) struct Actor {
    speaker: Result<Speaker, crate::audio::AudioError>,
    connection: ConnectionHandle,
    context: ContextSource,
    state: PlayerState,
    http: Result<reqwest::Client, String>,
    queue: VecDeque<Item>,
    current: Option<Current>,
    kept: HashMap<String, oneshot::Receiver<Kept>>,
    outbox: Option<mpsc::Sender<String>>,
    /// The head of the queue waits for its `cid:` attachment until then.
    attachment_due: Option<Instant>,
}

impl Actor {
    /// The player's actor; nothing plays yet.
    pub(super) fn new(
        speaker: Result<Speaker, crate::audio::AudioError>,
        connection: ConnectionHandle,
        context: ContextSource,
        state: PlayerState,
    ) -> Self {
        Self {
            speaker,
            connection,
            context,
            state,
            http: stream::client(),
            queue: VecDeque::new(),
            current: None,
            kept: HashMap::new(),
            outbox: None,
            attachment_due: None,
        }
    }

    /// Serves the mailbox until it closes or `shutdown`.
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        tokio::spawn(send_events(
            self.connection.clone(),
            outbox_rx,
            shutdown.clone(),
        ));
        self.outbox = Some(outbox);
        loop {
            let deadline = self.deadline();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                progress = progress(&mut self.current) => match progress {
                    Progress::Player(event) => self.player_event(event).await,
                    Progress::Stream(outcome) => self.stream_ended(outcome).await,
                },
                () = tokio::time::sleep_until(deadline) => self.tick().await,
                () = sleep_until(self.attachment_due) => self.attachment_missing().await,
            }
        }
        if let Some(mut c) = self.current.take() {
            c.player.stop();
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Play(play) => self.play(*play).await,
            Command::Stop => {
                self.queue.clear();
                self.stop_current().await;
            }
            Command::ClearQueue(behavior) => {
                self.queue.clear();
                if behavior == ClearBehavior::ClearAll {
                    self.stop_current().await;
                }
                self.send("PlaybackQueueCleared", json!({}), false).await;
            }
            Command::Attachment { content_id, data } => {
                if self.kept.len() >= MAX_KEPT {
                    tracing::warn!(
                        content_id,
                        "more than {MAX_KEPT} attachments wait for their Play; dropping the oldest"
                    );
                    if let Some(k) = self.kept.keys().next().cloned() {
                        self.kept.remove(&k);
                    }
                }
                self.kept.insert(content_id, stream::keep(data));
                if self.current.is_none() {
                    self.next().await;
                }
            }
            Command::Button(button) => {
                let name = match button {
                    Button::Play => "PlayCommandIssued",
                    Button::Pause => "PauseCommandIssued",
                    Button::Next => "NextCommandIssued",
                    Button::Previous => "PreviousCommandIssued",
                    Button::PlayPause => {
                        if self.state.view().borrow().playback_status() == "Playing" {
                            "PauseCommandIssued"
                        } else {
                            "PlayCommandIssued"
                        }
                    }
                };
                let event = Event::new("PlaybackController", name).with_context((self.context)());
                self.post(event.to_json()).await;
            }
        }
    }

    async fn play(&mut self, play: Play) {
        let item = Item::from_play(&play);
        let expected = play.audio_item.stream.expected_previous_token.as_deref();
        match play.play_behavior {
            PlayBehavior::ReplaceAll => {
                self.queue.clear();
                self.stop_current().await;
            }
            PlayBehavior::Enqueue | PlayBehavior::ReplaceEnqueued => {
                if play.play_behavior == PlayBehavior::ReplaceEnqueued {
                    self.queue.clear();
                }
                let last = self
                    .queue
                    .back()
                    .map(|i| i.token.as_str())
                    .or(self.current.as_ref().map(|c| c.item.token.as_str()));
                if let Some(expected) = expected
                    && last.is_some_and(|last| last != expected)
                {
                    tracing::info!(
                        token = item.token,
                        expected,
                        "Play ignored: its expectedPreviousToken is not the last in the queue"
                    );
                    return;
                }
            }
        }
        if self.queue.len() >= MAX_QUEUE {
            tracing::warn!(
                token = item.token,
                "the play queue holds {MAX_QUEUE} streams; ignoring one more"
            );
            return;
        }
        tracing::info!(token = item.token, url = item.url, behavior = ?play.play_behavior, "Play");
        self.queue.push_back(item);
        if self.current.is_none() {
            self.next().await;
        }
    }

    /// Starts the head of the queue, if its bytes can be had.
    async fn next(&mut self) {
        while self.current.is_none() {
            let Some(item) = self.queue.front() else {
                return;
            };
            // A cid: item waits for its attachment, which follows the Play.
            if let Some(cid) = item.url.strip_prefix("cid:")
                && !self.kept.contains_key(cid)
            {
                self.attachment_due
                    .get_or_insert_with(|| Instant::now() + ATTACHMENT_WAIT);
                return;
            }
            self.attachment_due = None;
            let Some(item) = self.queue.pop_front() else {
                return;
            };
            if item.expiry.is_some_and(|e| e <= SystemTime::now()) {
                let error = MediaError::new(
                    MediaErrorType::InvalidRequest,
                    format!("the stream expired before it could play ({})", item.url),
                );
                self.failed(&item, 0, PlayerActivity::Idle, &error).await;
                continue;
            }
            let opened = match item.url.strip_prefix("cid:") {
                Some(cid) => match self.kept.remove(cid) {
                    Some(kept) => stream::replay(kept, item.offset_ms),
                    None => continue,
                },
                None => match &self.http {
                    Ok(client) => stream::open_stream(client, &item.url),
                    Err(e) => {
                        let error = MediaError::new(MediaErrorType::InternalDeviceError, e.clone());
                        self.failed(&item, 0, PlayerActivity::Idle, &error).await;
                        continue;
                    }
                },
            };
            self.start(item, opened).await;
        }
    }

    async fn start(&mut self, item: Item, opened: Opened) {
        let activity = Activity {
            channel: Channel::Content,
            interface: "AudioPlayer",
            backgrounded: match item.interrupted {
                InterruptedBehavior::Attenuate => Backgrounded::Duck,
                InterruptedBehavior::Pause => Backgrounded::Pause,
            },
            gain: 1.0,
        };
        let speaker = match &self.speaker {
            Ok(s) => s.clone(),
            Err(e) => {
                let error = MediaError::new(MediaErrorType::InternalDeviceError, e.to_string());
                self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
                    .await;
                return;
            }
        };
        // The stream's bytes start at `offset_ms` (a kept attachment is cut
        // there; a URL is the media module's to seek): reported from it on.
        match speaker.play(opened.data, activity).await {
            Ok(player) => {
                let rate = player.output_format().rate;
                self.state.playing(
                    &item.token,
                    item.offset_ms,
                    Some((player.control().clone(), rate)),
                    &item.metadata,
                );
                let delay_due = item.delay_ms.filter(|&d| d > item.offset_ms);
                let next_interval = item.interval_ms.map(|i| (item.offset_ms / i + 1) * i);
                self.current = Some(Current {
                    item,
                    player,
                    outcome: Some(opened.outcome),
                    failure: None,
                    started: false,
                    body_done: false,
                    nearly_sent: false,
                    delay_due,
                    next_interval,
                    paused: false,
                    underruns: 0,
                    stutter: None,
                });
            }
            Err(e) => {
                let error = MediaError::new(MediaErrorType::InternalDeviceError, e.to_string());
                self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
                    .await;
            }
        }
    }

    async fn player_event(&mut self, event: Option<PlayerEvent>) {
        match event {
            Some(PlayerEvent::Started) => {
                let Some(c) = self.current.as_mut() else {
                    return;
                };
                c.started = true;
                let (token, offset) = (c.item.token.clone(), c.item.offset_ms);
                self.send(
                    "PlaybackStarted",
                    json!({"token": token, "offsetInMilliseconds": offset}),
                    false,
                )
                .await;
                self.nearly_finished().await;
            }
            Some(PlayerEvent::Finished) => self.finished().await,
            Some(PlayerEvent::Failed(e)) => {
                let Some(mut c) = self.current.take() else {
                    return;
                };
                let offset = c.offset();
                let error = c.fetch_failure().unwrap_or_else(|| {
                    MediaError::new(MediaErrorType::InternalDeviceError, e.to_string())
                });
                let was = if c.started {
                    PlayerActivity::Playing
                } else {
                    PlayerActivity::Idle
                };
                self.state.set(PlayerActivity::Stopped);
                self.failed(&c.item, offset, was, &error).await;
                self.next().await;
            }
            // Stopped comes after our own stop, which already reported.
            Some(PlayerEvent::Stopped) | None => {
                if let Some(c) = self.current.take() {
                    let offset = c.offset();
                    self.state.set(PlayerActivity::Stopped);
                    self.send(
                        "PlaybackStopped",
                        json!({"token": c.item.token, "offsetInMilliseconds": offset}),
                        false,
                    )
                    .await;
                    self.next().await;
                }
            }
        }
    }

    /// The head of the queue never got its attachment: it fails, and the
    /// queue moves on.
    async fn attachment_missing(&mut self) {
        self.attachment_due = None;
        let waiting = self.queue.front().and_then(|i| i.url.strip_prefix("cid:"));
        if self.current.is_some() || waiting.is_none_or(|cid| self.kept.contains_key(cid)) {
            return;
        }
        let Some(item) = self.queue.pop_front() else {
            return;
        };
        let error = MediaError::new(
            MediaErrorType::InvalidRequest,
            format!(
                "the attachment {} did not arrive within {} s of its Play",
                item.url,
                ATTACHMENT_WAIT.as_secs()
            ),
        );
        self.failed(&item, item.offset_ms, PlayerActivity::Idle, &error)
            .await;
        self.next().await;
    }

    /// The stream played to its end: PlaybackFinished (or PlaybackFailed
    /// if its fetch broke off), and the next one starts.
    async fn finished(&mut self) {
        let Some(mut c) = self.current.take() else {
            return;
        };
        if let Some(error) = c.fetch_failure() {
            let offset = c.offset();
            self.state.set(PlayerActivity::Stopped);
            self.failed(&c.item, offset, PlayerActivity::Playing, &error)
                .await;
        } else {
            self.current = Some(c);
            self.nearly_finished().await;
            let Some(c) = self.current.take() else {
                return;
            };
            let offset = c.offset();
            self.state.set(PlayerActivity::Finished);
            self.send(
                "PlaybackFinished",
                json!({"token": c.item.token, "offsetInMilliseconds": offset}),
                false,
            )
            .await;
        }
        self.next().await;
    }

    /// The fetch ended: the whole body arrived, or it failed.
    async fn stream_ended(&mut self, outcome: Result<(), MediaError>) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        c.outcome = None;
        match outcome {
            Ok(()) => {
                c.body_done = true;
                self.nearly_finished().await;
            }
            Err(error) => {
                // What was fetched still plays out; the item then fails.
                // With nothing played at all it fails now.
                if !c.started {
                    if let Some(mut c) = self.current.take() {
                        c.player.stop();
                        self.state.set(PlayerActivity::Stopped);
                        self.failed(&c.item, c.item.offset_ms, PlayerActivity::Idle, &error)
                            .await;
                    }
                    self.next().await;
                } else {
                    c.failure = Some(error);
                }
            }
        }
    }

    /// PlaybackNearlyFinished once the stream has started and all of it
    /// has arrived: the device is ready to fetch the next one.
    async fn nearly_finished(&mut self) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        if c.nearly_sent || !c.started || !c.body_done {
            return;
        }
        c.nearly_sent = true;
        let payload = json!({"token": c.item.token, "offsetInMilliseconds": c.offset()});
        self.send("PlaybackNearlyFinished", payload, false).await;
    }

    /// When the next progress report is due, else when to look again.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        let Some(c) = self.current.as_ref().filter(|c| c.started && !c.paused) else {
            return now
                + if self.current.is_some() {
                    POLL
                } else {
                    Duration::from_secs(3600)
                };
        };
        let offset = c.offset();
        let due = [c.delay_due, c.next_interval]
            .into_iter()
            .flatten()
            .min()
            .map(|at| Duration::from_millis(at.saturating_sub(offset)));
        // Near the end (all decoded, the rest in the ring), look often, to
        // start the next stream as this one's last sample goes out.
        let poll = if c.player.control().finished() {
            END_POLL
        } else {
            POLL
        };
        now + due.map_or(poll, |d| d.min(poll))
    }

    async fn tick(&mut self) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        if !c.started {
            return;
        }
        // The mixer handed over its last sample: the next stream starts now,
        // not after the speaker's Finished (two device periods later), so
        // enqueued tracks follow back to back.
        let control = c.player.control();
        if control.ended() && !control.is_stopped() {
            self.finished().await;
            return;
        }
        let mut out: Vec<(&'static str, Value)> = Vec::new();
        let token = c.item.token.clone();
        let offset = c.offset();
        let paused = c.player.control().is_paused();
        if paused != c.paused {
            c.paused = paused;
            let (name, activity) = if paused {
                ("PlaybackPaused", PlayerActivity::Paused)
            } else {
                ("PlaybackResumed", PlayerActivity::Playing)
            };
            self.state.set(activity);
            out.push((
                name,
                json!({"token": token, "offsetInMilliseconds": offset}),
            ));
        }
        if !paused {
            if let Some(d) = c.delay_due
                && offset >= d
            {
                c.delay_due = None;
                out.push((
                    "ProgressReportDelayElapsed",
                    json!({"token": token, "offsetInMilliseconds": offset}),
                ));
            }
            if let (Some(at), Some(every)) = (c.next_interval, c.item.interval_ms)
                && offset >= at
            {
                c.next_interval = Some((offset / every + 1) * every);
                out.push((
                    "ProgressReportIntervalElapsed",
                    json!({"token": token, "offsetInMilliseconds": offset}),
                ));
            }
            // Starved while the body is still coming: a stutter.
            let underruns = c.player.underruns();
            let starving = underruns > c.underruns && !c.body_done;
            c.underruns = underruns;
            match (c.stutter, starving) {
                (None, true) => {
                    c.stutter = Some(Instant::now());
                    self.state.set(PlayerActivity::BufferUnderrun);
                    out.push((
                        "PlaybackStutterStarted",
                        json!({"token": token, "offsetInMilliseconds": offset}),
                    ));
                }
                (Some(since), false) => {
                    c.stutter = None;
                    self.state.set(PlayerActivity::Playing);
                    out.push((
                        "PlaybackStutterFinished",
                        json!({"token": token, "offsetInMilliseconds": offset,
                               "stutterDurationInMilliseconds": since.elapsed().as_millis() as u64}),
                    ));
                }
                _ => {}
            }
        }
        for (name, payload) in out {
            self.send(name, payload, false).await;
        }
    }

    /// Stops the stream playing, with PlaybackStopped if it had started.
    async fn stop_current(&mut self) {
        let Some(mut c) = self.current.take() else {
            return;
        };
        let offset = c.offset();
        c.player.stop();
        self.state.set(PlayerActivity::Stopped);
        if c.started {
            self.send(
                "PlaybackStopped",
                json!({"token": c.item.token, "offsetInMilliseconds": offset}),
                false,
            )
            .await;
        }
    }

    async fn failed(
        &mut self,
        item: &Item,
        offset: u64,
        activity: PlayerActivity,
        error: &MediaError,
    ) {
        tracing::warn!(token = item.token, error = %error, "stream failed");
        let payload = json!({
            "token": item.token,
            "currentPlaybackState": {
                "token": item.token,
                "offsetInMilliseconds": offset,
                "playerActivity": activity,
            },
            "error": {"type": error.kind.as_str(), "message": error.message},
        });
        self.send("PlaybackFailed", payload, false).await;
    }

    async fn send(&mut self, name: &str, payload: Value, with_context: bool) {
        tracing::debug!(name, "AudioPlayer event");
        let mut event = Event::new("AudioPlayer", name).with_payload(payload);
        if with_context {
            event = event.with_context((self.context)());
        }
        self.post(event.to_json()).await;
    }

    /// Queue an event for AVS. Never waits: while AVS cannot be reached
    /// the sender waits for the link, and the player must go on (and the
    /// router behind it must not stall), so an event past a full outbox
    /// is dropped and logged.
    async fn post(&mut self, metadata: String) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        match outbox.try_send(metadata) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    "{OUTBOX} AudioPlayer events wait for AVS already; dropping one (is AVS reachable?)"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.outbox = None,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What happened to the stream playing.
enum Progress {
    Player(Option<PlayerEvent>),
    Stream(Result<(), MediaError>),
}

async fn progress(current: &mut Option<Current>) -> Progress {
    let Some(c) = current else {
        return std::future::pending().await;
    };
    let outcome = async {
        match c.outcome.as_mut() {
            Some(rx) => rx.await.unwrap_or(Ok(())),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        event = c.player.next_event() => Progress::Player(event),
        outcome = outcome => Progress::Stream(outcome),
    }
}

/// Sends the player's events one at a time, in order.
async fn send_events(
    connection: ConnectionHandle,
    mut rx: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    loop {
        let metadata = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        if let Err(e) = connection.send(metadata, None).await {
            tracing::warn!("cannot send an AudioPlayer event to AVS: {e}");
        }
    }
}
