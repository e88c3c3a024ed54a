//! The dialog: the one owner of the attention state (idle, listening,
//! thinking, speaking) and of what the talk buttons do. The AVS connection
//! state is published next to it so D-Bus clients see both together.
//!
//! A talk button opens the microphone and starts a `SpeechRecognizer.Recognize`
//! whose audio part streams while the user speaks (`mic_stream`). The answer's
//! directives come back through the router: `StopCapture` closes the audio,
//! `Speak` plays its MP3 attachment as it arrives (`speech`), `ExpectSpeech`
//! listens again. Directives of one dialog run in order; a directive of an
//! older dialog is dropped, as the protocol asks (§D.1).
//!
//! Tap or Hold while listening or thinking is refused with `Busy`; while
//! speaking it interrupts the answer and listens (barge-in). Stop when idle,
//! and Release with no Hold in progress on a connected device, do nothing
//! and succeed.

mod actor;
mod mic_stream;
mod speech;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio::{CaptureConfig, PlaybackConfig};
use crate::auth::AuthStatus;
use crate::avs::connection::{ConnectionHandle, ConnectionState, ContextSource, Reconnect};
use crate::avs::inbound::Inbound;
use avs_proto::message::{ExpectSpeech, Header, Speak, SpeechState};
use avsd_config::AudioConfig;
use kit::actor::{ActorError, MAILBOX, REPLY_TIMEOUT, call};
use kit::published::{self, Subscriber};

/// The `Dialog.State` values: the AVS attention states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DialogState {
    /// Nothing going on.
    #[default]
    Idle,
    /// The microphone is streaming to AVS.
    Listening,
    /// Waiting for AVS to answer.
    Thinking,
    /// Playing Alexa's answer.
    Speaking,
}

impl DialogState {
    /// The wire name on D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Listening => "listening",
            Self::Thinking => "thinking",
            Self::Speaking => "speaking",
        }
    }
}

/// What the dialog actor publishes (the connection state is published by
/// the AVS connection supervisor, its only owner).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DialogStatus {
    /// Attention state.
    pub state: DialogState,
    /// The last problem with a dialog (microphone, speaker, AVS's answer),
    /// in words a person can act on; empty when none.
    pub last_error: String,
    /// `last_error` as one of a closed set, for programs; set with it.
    pub last_error_reason: DialogReason,
}

/// The `Dialog.LastErrorReason` values: why `LastError` says what it says,
/// for programs that branch on it or translate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DialogReason {
    /// No problem (`LastError` is empty).
    #[default]
    None,
    /// The microphone privacy switch is on (Microphone.Muted).
    MicrophoneMuted,
    /// The microphone could not be opened or failed while listening.
    MicrophoneFailed,
    /// Alexa's answer could not be played.
    SpeakerFailed,
    /// avsd holds no valid access token.
    NotAuthorized,
    /// avsd is not connected to Alexa.
    NotConnected,
    /// AVS refused the access token (HTTP 403).
    TokenRefused,
    /// Alexa did not answer the request (an error status, a broken stream).
    AnswerFailed,
    /// The wake-word model file (`wakeword.model`) does not exist.
    ModelMissing,
    /// The wake-word model file exists but cannot be used.
    ModelUnusable,
}

impl DialogReason {
    /// Every value, in the order the introspection lists them.
    pub const ALL: [Self; 10] = [
        Self::None,
        Self::MicrophoneMuted,
        Self::MicrophoneFailed,
        Self::SpeakerFailed,
        Self::NotAuthorized,
        Self::NotConnected,
        Self::TokenRefused,
        Self::AnswerFailed,
        Self::ModelMissing,
        Self::ModelUnusable,
    ];

    /// The wire name on D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::MicrophoneMuted => "microphone-muted",
            Self::MicrophoneFailed => "microphone-failed",
            Self::SpeakerFailed => "speaker-failed",
            Self::NotAuthorized => "not-authorized",
            Self::NotConnected => "not-connected",
            Self::TokenRefused => "token-refused",
            Self::AnswerFailed => "answer-failed",
            Self::ModelMissing => "model-missing",
            Self::ModelUnusable => "model-unusable",
        }
    }
}

/// Why a talk command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// No valid LWA token.
    #[error("{0}")]
    NotAuthorized(String),
    /// No AVS connection.
    #[error("{0}")]
    NotConnected(String),
    /// Another dialog is in the way.
    #[error("{0}")]
    Busy(String),
    /// The microphone could not be opened.
    #[error("{0}")]
    Audio(String),
    /// The microphone privacy switch is on.
    #[error("{0}")]
    MicrophoneMuted(String),
    /// The actor did not answer.
    #[error(transparent)]
    Actor(#[from] ActorError),
}

impl DialogError {
    /// The `Dialog.LastErrorReason` for this refusal.
    pub fn reason(&self) -> DialogReason {
        match self {
            Self::NotAuthorized(_) => DialogReason::NotAuthorized,
            Self::NotConnected(_) => DialogReason::NotConnected,
            Self::MicrophoneMuted(_) => DialogReason::MicrophoneMuted,
            // Busy is never a LastError; the others are the microphone's.
            Self::Busy(_) | Self::Audio(_) | Self::Actor(_) => DialogReason::MicrophoneFailed,
        }
    }
}

/// A talk trigger, as the D-Bus methods name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// NEAR_FIELD Recognize, ended by AVS.
    Tap,
    /// CLOSE_TALK Recognize, ended by `Release`.
    Hold,
    /// End a `Hold`.
    Release,
    /// Stop listening or speaking now.
    Stop,
}

/// Commands the dialog actor takes.
#[derive(Debug)]
pub enum DialogCommand {
    /// A button press from D-Bus.
    Trigger(Trigger, oneshot::Sender<Result<(), DialogError>>),
    /// Liveness check for the watchdog.
    Ping(oneshot::Sender<()>),
}

/// What the dialog needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The microphone.
    pub capture: CaptureConfig,
    /// The speaker.
    pub playback: PlaybackConfig,
    /// The longest one request may listen.
    pub max_listen: Duration,
    /// RMS above which ExpectSpeech hears the user.
    pub speech_threshold: f64,
}

impl Settings {
    /// From the `[audio]` section.
    pub fn from_config(audio: &AudioConfig) -> Self {
        Self {
            capture: CaptureConfig::from_config(audio),
            playback: PlaybackConfig::from_config(audio),
            max_listen: audio.max_listen(),
            speech_threshold: audio.speech_threshold,
        }
    }
}

/// A speech directive of SpeechRecognizer or SpeechSynthesizer, its
/// payload parsed once by its capability agent (`crate::agents`).
#[derive(Debug)]
pub struct SpeechDirective {
    /// Its header: the dialogRequestId ties it to a dialog.
    pub header: Header,
    /// The JSON part as received, for a report to AVS if it cannot run.
    pub raw: String,
    /// What to do.
    pub directive: Speech,
}

impl SpeechDirective {
    /// `Namespace.Name`, for logs.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.header.namespace, self.header.name)
    }
}

/// The speech directives the dialog runs, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Speech {
    /// `SpeechRecognizer.StopCapture`.
    StopCapture,
    /// `SpeechRecognizer.ExpectSpeech`.
    ExpectSpeech(ExpectSpeech),
    /// `SpeechSynthesizer.Speak`.
    Speak(Speak),
}

/// What the speech agents hand the dialog, in the order AVS sent it.
#[derive(Debug)]
pub enum Input {
    /// A directive to run.
    Directive(SpeechDirective),
    /// An attachment, or the note that a Recognize's answer is complete.
    Inbound(Inbound),
}

/// Everything the dialog talks to.
pub struct Links {
    /// Authorization, to refuse talk before login.
    pub auth: Subscriber<AuthStatus>,
    /// Where Recognize and the speech events go.
    pub connection: ConnectionHandle,
    /// The router's queue, which the end-of-answer notes join so that they
    /// arrive after the answer's directives.
    pub router: mpsc::Sender<Inbound>,
    /// Speech directives, attachments and end-of-answer notes from the
    /// speech agents.
    pub inbound: mpsc::Receiver<Input>,
    /// The SpeechSynthesizer state, published for the context.
    pub speech: watch::Sender<SpeechState>,
    /// The device's context for Recognize and reports, built from the
    /// registered agents.
    pub context: ContextSource,
    /// The daemon's one speaker, shared with the AudioPlayer and the
    /// alerts so that focus ducks and pauses them under Alexa's voice (or
    /// why it could not start).
    pub speaker: Result<crate::audio::Speaker, crate::audio::AudioError>,
    /// The microphone privacy switch: muted ends listening and refuses talk.
    pub microphone: crate::audio::MicSwitch,
    /// The wake word.
    pub wake: crate::wakeword::Wake,
}

/// A cheap, cloneable way to talk to the dialog actor.
#[derive(Debug, Clone)]
pub struct DialogHandle {
    tx: mpsc::Sender<DialogCommand>,
    status: Subscriber<DialogStatus>,
    connection: Subscriber<ConnectionState>,
    reconnect: Subscriber<Reconnect>,
}

impl DialogHandle {
    /// Press a talk button.
    pub async fn trigger(&self, trigger: Trigger) -> Result<(), DialogError> {
        call("dialog", &self.tx, REPLY_TIMEOUT, |r| {
            DialogCommand::Trigger(trigger, r)
        })
        .await?
    }

    /// Answer within `timeout` or count as wedged.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<(), ActorError> {
        call("dialog", &self.tx, timeout, DialogCommand::Ping).await
    }

    /// A receiver of every status change.
    pub fn status(&self) -> Subscriber<DialogStatus> {
        self.status.clone()
    }

    /// A receiver of every AVS connection state change.
    pub fn connection(&self) -> Subscriber<ConnectionState> {
        self.connection.clone()
    }

    /// A receiver of every change of the AVS connection's back-off.
    pub fn reconnect(&self) -> Subscriber<Reconnect> {
        self.reconnect.clone()
    }
}

/// Start the dialog actor.
pub fn spawn(
    settings: Settings,
    links: Links,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> DialogHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (status_tx, status) = published::channel(DialogStatus::default());
    let connection = links.connection.state();
    let reconnect = links.connection.reconnect();
    tracker.spawn(actor::run(
        settings,
        links,
        status_tx,
        rx,
        tracker.clone(),
        shutdown,
    ));
    DialogHandle {
        tx,
        status,
        connection,
        reconnect,
    }
}
