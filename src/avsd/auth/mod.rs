//! Authorization: the one owner of avsd's LWA access token, got through the
//! companion (the default) or by code-based linking (`code/`). Everything else reads its status from a `watch`
//! channel and asks it for "a valid token now" through an [`AuthHandle`].

mod actor;
pub mod code;
pub mod companion_client;
mod flow;
pub mod session;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use avsd_config::AvsdConfig;
use kit::actor::{ActorError, MAILBOX, REPLY_TIMEOUT, call};
use kit::published::{self, Subscriber};
use kit::secret::Secret;

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
    /// `last_error` as one of a closed set, for programs; set with it.
    pub last_error_reason: AuthReason,
}

/// The `Authorization.LastErrorReason` values: why `LastError` says what
/// it says, for programs that branch on it or translate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthReason {
    /// No problem (`LastError` is empty).
    #[default]
    None,
    /// A config key the login needs is missing or wrong.
    NotConfigured,
    /// The companion cannot be reached (network, TLS, timeout).
    CompanionUnreachable,
    /// The companion answered something avsd cannot use.
    CompanionError,
    /// LWA cannot be reached (method `code`).
    LwaUnreachable,
    /// LWA answered something avsd cannot use (method `code`).
    LwaError,
    /// The user denied the login at Amazon's page.
    LoginDenied,
    /// The companion or Amazon refused the login for a reason of the
    /// device's set-up (client id, product id).
    LoginRefused,
    /// The login code expired or was already used before the login.
    CodeExpired,
    /// The link was removed: the companion forgot the device, or Amazon
    /// no longer accepts its refresh token.
    LinkRevoked,
    /// The access token ran out before a new one arrived.
    TokenExpired,
    /// The session or token could not be saved in the state directory.
    StateNotSaved,
}

impl AuthReason {
    /// Every value, in the order the introspection lists them.
    pub const ALL: [Self; 12] = [
        Self::None,
        Self::NotConfigured,
        Self::CompanionUnreachable,
        Self::CompanionError,
        Self::LwaUnreachable,
        Self::LwaError,
        Self::LoginDenied,
        Self::LoginRefused,
        Self::CodeExpired,
        Self::LinkRevoked,
        Self::TokenExpired,
        Self::StateNotSaved,
    ];

    /// The wire name on D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::NotConfigured => "not-configured",
            Self::CompanionUnreachable => "companion-unreachable",
            Self::CompanionError => "companion-error",
            Self::LwaUnreachable => "lwa-unreachable",
            Self::LwaError => "lwa-error",
            Self::LoginDenied => "login-denied",
            Self::LoginRefused => "login-refused",
            Self::CodeExpired => "code-expired",
            Self::LinkRevoked => "link-revoked",
            Self::TokenExpired => "token-expired",
            Self::StateNotSaved => "state-not-saved",
        }
    }
}

impl AuthStatus {
    /// The status as published: a reason only beside an error, and an
    /// error never without one (a spot that forgot it is logged).
    pub(crate) fn settled(mut self) -> Self {
        if self.last_error.is_empty() {
            self.last_error_reason = AuthReason::None;
        } else if self.last_error_reason == AuthReason::None {
            tracing::error!(
                "Authorization.LastError set without a reason (a bug in avsd): {}",
                self.last_error
            );
        }
        self
    }
}

/// A valid LWA access token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token.
    pub value: Secret,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Why an authorization command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Something the user must set in the config is missing or wrong.
    #[error("{0}")]
    NotConfigured(String),
    /// No valid access token now.
    #[error("{0}")]
    NotAuthorized(String),
    /// The actor did not answer.
    #[error(transparent)]
    Actor(#[from] ActorError),
}

/// Commands the authorization actor takes.
#[derive(Debug)]
pub enum AuthCommand {
    /// Begin (or restart) registration with the companion.
    Start(oneshot::Sender<Result<(), AuthError>>),
    /// Forget the session and any token, and revoke the session at the
    /// companion; the reply says in words whether the companion did.
    Reset(oneshot::Sender<String>),
    /// The current token, if it is valid.
    Token(oneshot::Sender<Result<AccessToken, AuthError>>),
    /// AVS rejected this token (HTTP 403): renew now.
    Rejected(Secret),
    /// Liveness check for the watchdog.
    Ping(oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to the authorization actor.
#[derive(Debug, Clone)]
pub struct AuthHandle {
    tx: mpsc::Sender<AuthCommand>,
    status: Subscriber<AuthStatus>,
    tokens: watch::Receiver<u64>,
    method: &'static str,
}

impl AuthHandle {
    /// Begin (or restart) registration.
    pub async fn start(&self) -> Result<(), AuthError> {
        call("authorization", &self.tx, REPLY_TIMEOUT, AuthCommand::Start).await?
    }

    /// Forget the session and tokens, and revoke the session at the
    /// companion (see [`AuthHandle::reset_report`]).
    pub async fn reset(&self) -> Result<(), AuthError> {
        self.reset_report().await.map(|_| ())
    }

    /// Like [`AuthHandle::reset`], with what happened at the companion in
    /// words for the user: revoked there, or forgotten here only because
    /// the companion could not be reached (within
    /// [`companion_client::REVOKE_TIMEOUT`], so the reply stays quick).
    pub async fn reset_report(&self) -> Result<String, AuthError> {
        Ok(call("authorization", &self.tx, REPLY_TIMEOUT, AuthCommand::Reset).await?)
    }

    /// A valid access token now, or why there is none.
    pub async fn access_token(&self) -> Result<AccessToken, AuthError> {
        call("authorization", &self.tx, REPLY_TIMEOUT, AuthCommand::Token).await?
    }

    /// Report that AVS refused `token`; the actor renews it early.
    pub async fn token_rejected(&self, token: Secret) -> Result<(), AuthError> {
        self.tx
            .send(AuthCommand::Rejected(token))
            .await
            .map_err(|_| AuthError::Actor(ActorError::Gone("authorization")))
    }

    /// Answer within `timeout` or count as wedged.
    pub async fn ping(&self, timeout: Duration) -> Result<(), ActorError> {
        call("authorization", &self.tx, timeout, AuthCommand::Ping).await
    }

    /// The login path in use: `companion` or `code` (`[auth] method`).
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// A receiver of every status change.
    pub fn status(&self) -> Subscriber<AuthStatus> {
        self.status.clone()
    }

    /// A counter bumped with every new access token: a new token can leave
    /// the status as it was (same state, same expiry second), and whoever
    /// waits for one after a refusal must still learn of it.
    pub fn token_changes(&self) -> watch::Receiver<u64> {
        self.tokens.clone()
    }
}

/// What the actor needs from the config, resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The companion client, or why it cannot be built.
    pub companion: Result<companion_client::CompanionClient, String>,
    /// Product ID at Amazon.
    pub product_id: String,
    /// Device serial number.
    pub dsn: String,
    /// Where the session file lives.
    pub state_dir: PathBuf,
    /// Register at start-up when there is no session.
    pub register_on_start: bool,
    /// Head start for renewals.
    pub renew_before: Duration,
}

impl Settings {
    /// Resolve settings from the config.
    pub fn from_config(config: &AvsdConfig) -> Self {
        let companion = if config.companion.url.is_empty() {
            Err(missing("companion.url"))
        } else if config.device.product_id.is_empty() {
            Err(missing("device.product_id"))
        } else {
            companion_client::CompanionClient::new(&config.companion).map_err(|e| e.to_string())
        };
        Self {
            companion,
            product_id: config.device.product_id.clone(),
            dsn: crate::device::serial(config.device.serial.as_deref()),
            state_dir: config.state_dir(),
            register_on_start: config.companion.register_on_start,
            renew_before: Duration::from_secs(config.companion.renew_before_secs),
        }
    }
}

fn missing(key: &str) -> String {
    format!(
        "cannot register: `{key}` is not set in the config; set it (see the commented sample \
         /etc/avsd/avsd.toml), restart avsd, then start the login again"
    )
}

/// Start the authorization actor on `tracker`; it stops on `shutdown`.
pub fn spawn(settings: Settings, tracker: &TaskTracker, shutdown: CancellationToken) -> AuthHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (status_tx, status) = published::channel(AuthStatus::default());
    let (tokens_tx, tokens) = watch::channel(0);
    let actor = actor::Actor::new(settings, status_tx, tokens_tx);
    tracker.spawn(actor.run(rx, shutdown));
    AuthHandle {
        tx,
        status,
        tokens,
        method: "companion",
    }
}

/// Start the login path `[auth] method` names: the companion's actor, or
/// code-based linking's. Both answer the same commands through the same
/// [`AuthHandle`].
pub fn spawn_configured(
    config: &AvsdConfig,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> AuthHandle {
    if !config.auth.is_code() {
        return spawn(Settings::from_config(config), tracker, shutdown);
    }
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (status_tx, status) = published::channel(AuthStatus::default());
    let (tokens_tx, tokens) = watch::channel(0);
    let actor = code::CodeActor::new(
        code::CodeSettings::from_config(config),
        status_tx,
        tokens_tx,
    );
    tracker.spawn(actor.run(rx, shutdown));
    AuthHandle {
        tx,
        status,
        tokens,
        method: "code",
    }
}

#[cfg(test)]
mod tests;
