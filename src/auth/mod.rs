//! Authorization: the one owner of avsd's LWA session and access token.
//! Everything else reads its status from a `watch` channel and sends it
//! commands through an [`AuthHandle`].

mod actor;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actor::{ActorError, MAILBOX, REPLY_TIMEOUT, call};
use crate::config::AvsdConfig;

/// The `Authorization.State` values of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthState {
    /// No session with the companion.
    #[default]
    Unregistered,
    /// Registered; the user has to log in with the shown URL and code.
    WaitingForUser,
    /// A valid access token is held.
    Authorized,
    /// Registration or renewal failed; `last_error` says why.
    Error,
}

impl AuthState {
    /// The wire name on D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unregistered => "unregistered",
            Self::WaitingForUser => "waiting-for-user",
            Self::Authorized => "authorized",
            Self::Error => "error",
        }
    }
}

/// Everything the Authorization interface shows, published on every change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthStatus {
    /// Where registration stands.
    pub state: AuthState,
    /// Companion page for the user; empty unless waiting for the user.
    pub login_url: String,
    /// Registration code shown with the URL; empty unless waiting.
    pub user_code: String,
    /// Unix seconds when the access token expires; 0 without one.
    pub token_expires_at: u64,
    /// Last problem in words a person can act on; empty when none.
    pub last_error: String,
}

/// Why an authorization command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Something the user must set in the config is missing.
    #[error("{0}")]
    NotConfigured(String),
    /// The actor did not answer.
    #[error(transparent)]
    Actor(#[from] ActorError),
}

/// Commands the authorization actor takes.
#[derive(Debug)]
pub enum AuthCommand {
    /// Begin (or restart) registration with the companion.
    Start(tokio::sync::oneshot::Sender<Result<(), AuthError>>),
    /// Forget the session and any token.
    Reset(tokio::sync::oneshot::Sender<()>),
    /// Liveness check for the watchdog.
    Ping(tokio::sync::oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to the authorization actor.
#[derive(Debug, Clone)]
pub struct AuthHandle {
    tx: mpsc::Sender<AuthCommand>,
    status: watch::Receiver<AuthStatus>,
}

impl AuthHandle {
    /// Begin (or restart) registration.
    pub async fn start(&self) -> Result<(), AuthError> {
        call("authorization", &self.tx, REPLY_TIMEOUT, AuthCommand::Start).await?
    }

    /// Forget the session and tokens.
    pub async fn reset(&self) -> Result<(), AuthError> {
        Ok(call("authorization", &self.tx, REPLY_TIMEOUT, AuthCommand::Reset).await?)
    }

    /// Answer within `timeout` or count as wedged.
    pub async fn ping(&self, timeout: std::time::Duration) -> Result<(), ActorError> {
        call("authorization", &self.tx, timeout, AuthCommand::Ping).await
    }

    /// A receiver of every status change.
    pub fn status(&self) -> watch::Receiver<AuthStatus> {
        self.status.clone()
    }
}

/// Start the authorization actor on `tracker`; it stops on `shutdown`.
pub fn spawn(
    config: &AvsdConfig,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> AuthHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (status_tx, status) = watch::channel(AuthStatus::default());
    let actor = actor::Actor::new(config, status_tx);
    tracker.spawn(actor.run(rx, shutdown));
    AuthHandle { tx, status }
}
