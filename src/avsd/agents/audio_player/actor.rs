//! The player's actor: owns the queue and the stream playing, turns the
//! speaker's counters and the media stream's events into AudioPlayer
//! events at their documented moments, and sends the PlaybackController
//! events of the buttons. One task; its mailbox is bounded and fed by the
//! agent and D-Bus.
//!
//! By job: the queue and the mailbox here; starting and ending streams in
//! `playing.rs`; the media events (metadata, stutters) in `media.rs`;
//! progress reports and pauses in `reports.rs`; the outgoing events in
//! `outbox.rs`; the state of an item in `item.rs`.

mod item;
mod media;
mod outbox;
mod playing;
mod reports;

use std::collections::{HashMap, VecDeque};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::directive::{ClearBehavior, Play, PlayBehavior};
use super::state::PlayerState;
use super::stream::{self, Kept};
use super::{Button, Command};
use crate::audio::{PlayerEvent, Speaker};
use crate::avs::connection::{ConnectionHandle, ContextSource};
use crate::media::{MediaClient, MediaEvent};
use avs_proto::message::Event;
use item::{Current, Item};

/// Items the queue holds beyond the one playing; AVS enqueues one or two.
const MAX_QUEUE: usize = 16;
/// Attachments kept for `cid:` items not yet played.
const MAX_KEPT: usize = 4;
/// Events waiting to be sent, in order.
const OUTBOX: usize = 32;
/// How long a `cid:` item waits for its attachment (it follows the Play
/// in the same message, so this only bounds a broken one).
const ATTACHMENT_WAIT: Duration = Duration::from_secs(10);

/// What the actor is built from.
pub(super) struct Actor {
    speaker: Result<Speaker, crate::audio::AudioError>,
    connection: ConnectionHandle,
    context: ContextSource,
    state: PlayerState,
    media: Result<MediaClient, String>,
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
        outputs: super::Outputs,
        connection: ConnectionHandle,
        context: ContextSource,
        state: PlayerState,
    ) -> Self {
        Self {
            speaker: outputs.speaker,
            connection,
            context,
            state,
            media: outputs.media,
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
        tokio::spawn(outbox::send_events(
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
                    Progress::Media(event) => self.media_event(event).await,
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
                self.send("PlaybackQueueCleared", json!({})).await;
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
    /// `None`: the event channel closed.
    Media(Option<MediaEvent>),
}

async fn progress(current: &mut Option<Current>) -> Progress {
    let Some(c) = current else {
        return std::future::pending().await;
    };
    let media = async {
        match c.events.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        event = c.player.next_event() => Progress::Player(event),
        event = media => Progress::Media(event),
    }
}
