//! The dialog: the one owner of the attention state (idle, listening,
//! thinking, speaking) and of what the talk buttons do. The AVS connection
//! state is published next to it so D-Bus clients see both together.

mod actor;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actor::{ActorError, MAILBOX, REPLY_TIMEOUT, call};
use crate::auth::AuthStatus;

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

/// What the dialog actor publishes (the connection state is published by
/// the AVS connection supervisor, its only owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DialogStatus {
    /// Attention state.
    pub state: DialogState,
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
    /// The actor did not answer.
    #[error(transparent)]
    Actor(#[from] ActorError),
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

/// A cheap, cloneable way to talk to the dialog actor.
#[derive(Debug, Clone)]
pub struct DialogHandle {
    tx: mpsc::Sender<DialogCommand>,
    status: watch::Receiver<DialogStatus>,
    connection: watch::Receiver<ConnectionState>,
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
    pub fn status(&self) -> watch::Receiver<DialogStatus> {
        self.status.clone()
    }

    /// A receiver of every AVS connection state change.
    pub fn connection(&self) -> watch::Receiver<ConnectionState> {
        self.connection.clone()
    }
}

/// Start the dialog actor; it reads authorization from `auth` and the AVS
/// connection state from `connection`.
pub fn spawn(
    auth: watch::Receiver<AuthStatus>,
    connection: watch::Receiver<ConnectionState>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> DialogHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (status_tx, status) = watch::channel(DialogStatus::default());
    tracker.spawn(actor::run(
        auth,
        connection.clone(),
        status_tx,
        rx,
        shutdown,
    ));
    DialogHandle {
        tx,
        status,
        connection,
    }
}
