//! The AudioPlayer interface (1.4): music, radio, podcasts. This agent
//! parses Play, Stop and ClearQueue once and hands them, with the `cid:`
//! attachments they name, to the player's actor (`actor.rs`), which owns
//! the queue and the stream playing on the Content focus channel (the
//! lowest: ducked under Alexa's voice, paused under an alert) and sends
//! every AudioPlayer event. The context's PlaybackState is read live
//! (`state.rs`). Where the bytes come from is one seam, `stream.rs`, in
//! front of the media module (`crate::media`).

mod actor;
pub mod directive;
pub mod state;
pub mod stream;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CapabilityAgent, ContextReader, Env};
use crate::audio::{AudioError, Speaker};
use crate::avs::connection::{ConnectionHandle, ContextSource};
use crate::avs::discovery::Capability;
use crate::avs::inbound::Inbound;
use avs_proto::message::{ContextEntry, Directive, DirectiveError};
use directive::{ClearQueue, Play};
pub use state::{PlayerState, View};

/// Commands waiting for the player's actor.
const MAILBOX: usize = 16;
/// `cid:` names remembered from Plays whose attachment has not come yet.
const MAX_PENDING_CIDS: usize = 8;

/// A media button (D-Bus, avsctl): sent to AVS as a PlaybackController
/// event; AVS answers with the AudioPlayer directive that acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// Play / resume.
    Play,
    /// Pause.
    Pause,
    /// Play when paused or stopped, else pause.
    PlayPause,
    /// Next item.
    Next,
    /// Previous item.
    Previous,
}

/// What the player's actor is asked to do.
pub(crate) enum Command {
    Play(Box<Play>),
    Stop,
    ClearQueue(directive::ClearBehavior),
    Attachment {
        content_id: String,
        data: mpsc::Receiver<Bytes>,
    },
    Button(Button),
}

/// The player's handle: for the agent, D-Bus and the context. Made before
/// the registry; the actor starts with [`PlayerLink::spawn`] once the
/// connection exists.
#[derive(Clone)]
pub struct PlayerLink {
    tx: mpsc::Sender<Command>,
    /// What plays, for the context and D-Bus.
    pub state: PlayerState,
}

/// Where the player's sound goes and where its streams come from. An
/// `Err` fails each item that needs it with its words, as PlaybackFailed.
pub struct Outputs {
    /// The one speaker.
    pub speaker: Result<Speaker, AudioError>,
    /// The client media URLs are fetched with.
    pub media: Result<crate::media::MediaClient, String>,
}

/// The actor's end of a [`PlayerLink`], until it is spawned.
pub struct PlayerMailbox(mpsc::Receiver<Command>);

impl PlayerLink {
    /// A link and the mailbox its actor will read.
    pub fn new() -> (Self, PlayerMailbox) {
        let (tx, rx) = mpsc::channel(MAILBOX);
        (
            Self {
                tx,
                state: PlayerState::default(),
            },
            PlayerMailbox(rx),
        )
    }

    /// Starts the actor: it plays on the speaker what the media client
    /// fetches (`outputs`) and sends on `connection`;
    /// the PlaybackController events carry `context`.
    pub fn spawn(
        &self,
        mailbox: PlayerMailbox,
        outputs: Outputs,
        connection: ConnectionHandle,
        context: ContextSource,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let actor = actor::Actor::new(outputs, connection, context, self.state.clone());
        tracker.spawn(actor.run(mailbox.0, shutdown));
    }

    /// A button was pressed. `Err` when the player is gone or busy.
    pub fn press(&self, button: Button) -> Result<(), String> {
        self.tx
            .try_send(Command::Button(button))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    "the player is busy with earlier commands; press again".to_string()
                }
                mpsc::error::TrySendError::Closed(_) => "the player has stopped".to_string(),
            })
    }
}

/// The AudioPlayer agent.
pub struct AudioPlayer {
    link: PlayerLink,
    /// `cid:` names of Plays whose attachment is still to come.
    pending: VecDeque<String>,
}

impl AudioPlayer {
    /// The agent in front of the player behind `link`.
    pub fn new(link: PlayerLink) -> Self {
        Self {
            link,
            pending: VecDeque::new(),
        }
    }

    async fn to_actor(&self, cmd: Command) {
        // The actor is gone only while the daemon stops.
        let _ = self.link.tx.send(cmd).await;
    }
}

impl CapabilityAgent for AudioPlayer {
    fn namespace(&self) -> &'static str {
        "AudioPlayer"
    }

    fn discovery(&self) -> Capability {
        Capability::new("AudioPlayer", "1.4")
    }

    fn context(&self) -> Option<ContextReader> {
        let state = self.link.state.clone();
        Some(Arc::new(move || {
            ContextEntry::PlaybackState(state.playback_state())
        }))
    }

    fn directives(&self) -> &'static [&'static str] {
        &["Play", "Stop", "ClearQueue"]
    }

    fn events(&self) -> &'static [&'static str] {
        &[
            "PlaybackStarted",
            "PlaybackNearlyFinished",
            "ProgressReportDelayElapsed",
            "ProgressReportIntervalElapsed",
            "PlaybackStutterStarted",
            "PlaybackStutterFinished",
            "PlaybackFinished",
            "PlaybackFailed",
            "PlaybackStopped",
            "PlaybackPaused",
            "PlaybackResumed",
            "PlaybackQueueCleared",
            "StreamMetadataExtracted",
        ]
    }

    fn handle<'a>(
        &'a mut self,
        directive: &'a Directive,
        _raw: &'a str,
        _env: &'a Env,
    ) -> BoxFuture<'a, Result<(), DirectiveError>> {
        Box::pin(async move {
            let cmd = match directive.header.name.as_str() {
                "Play" => {
                    let play: Play = directive.payload()?;
                    play.check().map_err(|why| directive.invalid(why))?;
                    if let Some(cid) = play.audio_item.stream.url.strip_prefix("cid:") {
                        if self.pending.len() >= MAX_PENDING_CIDS {
                            self.pending.pop_front();
                        }
                        self.pending.push_back(cid.to_string());
                    }
                    Command::Play(Box::new(play))
                }
                "Stop" => Command::Stop,
                "ClearQueue" => {
                    let clear: ClearQueue = directive.payload()?;
                    Command::ClearQueue(clear.clear_behavior)
                }
                _ => return Err(directive.unsupported()),
            };
            self.to_actor(cmd).await;
            Ok(())
        })
    }

    fn inbound(&mut self, item: Inbound) -> BoxFuture<'_, Option<Inbound>> {
        Box::pin(async move {
            match item {
                Inbound::Attachment { content_id, data }
                    if self.pending.iter().any(|c| *c == content_id) =>
                {
                    self.pending.retain(|c| *c != content_id);
                    self.to_actor(Command::Attachment { content_id, data })
                        .await;
                    None
                }
                item => Some(item),
            }
        })
    }
}
