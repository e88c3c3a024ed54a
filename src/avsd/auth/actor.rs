//! The authorization actor's loop: commands, timers and companion calls in
//! flight. Calls run as tasks so the actor keeps answering (and the
//! watchdog keeps being fed) while the companion is slow.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::companion_client::{CallError, Registration, TokenResponse};
use super::session::{self, Session};
use super::{AccessToken, AuthCommand, AuthError, AuthReason, AuthState, AuthStatus, Settings};
use kit::backoff::Backoff;
use kit::published::Publisher;
use kit::secret::Secret;

/// A companion call the actor can schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// `POST /provision/regCode`.
    Register,
    /// `POST /provision/accessToken` while waiting for the user.
    Poll,
    /// `POST /provision/accessToken` to renew a token.
    Renew,
}

/// The result of a call, back on the actor.
pub(super) enum Outcome {
    Registered(Result<Registration, CallError>),
    /// A token call's answer, and the refused token it reported, if any.
    Token(Job, Option<Secret>, Result<TokenResponse, CallError>),
}

pub(super) struct Actor {
    pub(super) settings: Settings,
    status: Publisher<AuthStatus>,
    /// Bumped with every new token (see `AuthHandle::token_changes`).
    pub(super) tokens: watch::Sender<u64>,
    pub(super) session: Option<Session>,
    pub(super) token: Option<(AccessToken, Instant)>,
    pub(super) backoff: Backoff,
    /// The token AVS answered 403 to, until a different one arrives: every
    /// renewal carries it, so the companion refreshes at LWA at once.
    pub(super) refused: Option<Secret>,
    wake: Option<(Instant, Job)>,
    jobs: JoinSet<Outcome>,
}

impl Actor {
    pub(super) fn new(
        settings: Settings,
        status: Publisher<AuthStatus>,
        tokens: watch::Sender<u64>,
    ) -> Self {
        Self {
            settings,
            status,
            tokens,
            session: None,
            token: None,
            backoff: Backoff::token_service(),
            refused: None,
            wake: None,
            jobs: JoinSet::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<AuthCommand>,
        shutdown: CancellationToken,
    ) {
        self.resume();
        loop {
            let wake_at = self.wake.map(|(at, _)| at);
            let expiry = self.token.as_ref().map(|(_, at)| *at);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    if let Ok(outcome) = done {
                        self.outcome(outcome);
                    }
                }
                _ = sleep_until(wake_at), if wake_at.is_some() => {
                    if let Some((_, job)) = self.wake.take() {
                        self.launch(job);
                    }
                }
                _ = sleep_until(expiry), if expiry.is_some() => self.expired(),
            }
        }
    }

    fn command(&mut self, cmd: AuthCommand) {
        match cmd {
            AuthCommand::Start(reply) => {
                let _ = reply.send(self.start());
            }
            AuthCommand::Reset(reply) => self.reset(reply),
            AuthCommand::Token(reply) => {
                let _ = reply.send(self.current_token());
            }
            AuthCommand::Rejected(token) => self.rejected(token),
            AuthCommand::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// AVS answered 403 to `token`. Never a silent no-op: either a renewal
    /// carrying the refused token starts now, or one is in flight (and the
    /// refusal rides on the next one if the answer is that token again), or
    /// a newer token is already held.
    fn rejected(&mut self, token: Secret) {
        let current = self.token.as_ref().map(|(t, _)| &t.value);
        if current.is_some() && current != Some(&token) {
            tracing::info!(
                "AVS refused an earlier access token; a newer one is already held, nothing to renew"
            );
            return;
        }
        if self.session.as_ref().is_none_or(|s| !s.linked) {
            tracing::info!(
                "AVS refused the access token, but there is no linked session to renew it with"
            );
            return;
        }
        let again = self.refused.as_ref() == Some(&token);
        self.refused = Some(token);
        if !self.jobs.is_empty() {
            tracing::info!(
                "AVS refused the access token; a companion call is under way, the refusal goes \
                 with the next one"
            );
            return;
        }
        if again && self.wake.is_some_and(|(_, job)| job == Job::Renew) {
            // A renewal for this very refusal is scheduled (slow_down or
            // back-off): keep its delay, or a 403 loop would undo it.
            tracing::info!("AVS refused the access token again; a renewal is already scheduled");
            return;
        }
        tracing::info!("AVS refused the access token; asking the companion for a new one now");
        self.launch(Job::Renew);
    }

    /// `avsctl reset`: forget everything here at once, then revoke the
    /// session at the companion, replying when it answered or after
    /// [`super::companion_client::REVOKE_TIMEOUT`].
    fn reset(&mut self, reply: tokio::sync::oneshot::Sender<String>) {
        let session = self.session.as_ref().map(|s| s.session_id.clone());
        let client = self.settings.companion.clone().ok();
        self.forget();
        self.publish(AuthStatus::default());
        tracing::info!("session forgotten; state is unregistered");
        let (Some(id), Some(client)) = (session, client) else {
            let _ = reply.send("no session was held; nothing to revoke".to_string());
            return;
        };
        // On its own task so the actor keeps answering; bounded by the
        // request timeout, and one per Reset command.
        tokio::spawn(async move {
            let words = match client.revoke(&id).await {
                Ok(()) => {
                    tracing::info!("the companion revoked the session");
                    "the session was revoked at the companion".to_string()
                }
                Err(e) => {
                    let words = format!(
                        "the session was forgotten on this device only: {e}; to end it at the \
                         companion too, revoke it there (avs-companion sessions)"
                    );
                    tracing::warn!("{words}");
                    words
                }
            };
            let _ = reply.send(words);
        });
    }

    /// At start-up: continue from the saved session, or register.
    fn resume(&mut self) {
        if let Err(e) = &self.settings.companion {
            tracing::info!("not registering: {e}");
            return;
        }
        match session::load(&self.settings.state_dir) {
            Ok(Some(s)) if self.matches(&s) => {
                self.session = Some(s.clone());
                if s.linked {
                    tracing::info!("saved session found; asking the companion for a token");
                    self.launch(Job::Renew);
                } else if s.code_expires_at > kit::clock::unix_now() {
                    self.publish_waiting(None);
                    self.launch(Job::Poll);
                } else {
                    self.launch(Job::Register);
                }
                return;
            }
            Ok(Some(_)) => {
                tracing::info!(
                    "the saved session is for another companion, product or serial; it is dropped"
                );
                self.forget();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; registering again"),
        }
        if self.settings.register_on_start {
            self.launch(Job::Register);
        }
    }

    fn matches(&self, s: &Session) -> bool {
        let base = self
            .settings
            .companion
            .as_ref()
            .map(|c| c.base().to_string());
        base.as_deref() == Ok(s.companion_url.as_str())
            && s.product_id == self.settings.product_id
            && s.dsn == self.settings.dsn
    }

    fn start(&mut self) -> Result<(), AuthError> {
        if let Err(message) = &self.settings.companion {
            let message = message.clone();
            self.publish(AuthStatus {
                state: AuthState::Error,
                last_error: message.clone(),
                last_error_reason: AuthReason::NotConfigured,
                ..AuthStatus::default()
            });
            return Err(AuthError::NotConfigured(message));
        }
        self.forget();
        self.publish(AuthStatus::default());
        self.launch(Job::Register);
        Ok(())
    }

    /// Drop the session, the token, every timer and every call in flight.
    pub(super) fn forget(&mut self) {
        // A new JoinSet aborts the old calls, so no stale result arrives.
        self.jobs = JoinSet::new();
        self.wake = None;
        self.token = None;
        self.refused = None;
        self.session = None;
        self.backoff.reset();
        if let Err(e) = session::remove(&self.settings.state_dir) {
            tracing::warn!("cannot delete the saved session: {e}");
        }
    }

    fn current_token(&self) -> Result<AccessToken, AuthError> {
        match &self.token {
            Some((t, at)) if *at > Instant::now() => Ok(t.clone()),
            _ => Err(AuthError::NotAuthorized(
                "avsd holds no valid access token; see Authorization.LastError".to_string(),
            )),
        }
    }

    pub(super) fn launch(&mut self, job: Job) {
        self.wake = None;
        let Ok(client) = self.settings.companion.clone() else {
            return;
        };
        if !self.jobs.is_empty() {
            return;
        }
        match job {
            Job::Register => {
                let (product, dsn) = (self.settings.product_id.clone(), self.settings.dsn.clone());
                self.jobs.spawn(async move {
                    Outcome::Registered(client.register(&product, &dsn).await)
                });
            }
            Job::Poll | Job::Renew => {
                let Some(s) = &self.session else { return };
                let id = s.session_id.clone();
                let refused = self.refused.clone().filter(|_| job == Job::Renew);
                self.jobs.spawn(async move {
                    let answer = client.access_token(&id, refused.as_ref()).await;
                    Outcome::Token(job, refused, answer)
                });
            }
        }
    }

    pub(super) fn schedule(&mut self, job: Job, after: Duration) {
        self.wake = Some((Instant::now() + after, job));
    }

    pub(super) fn publish(&self, next: AuthStatus) {
        let next = next.settled();
        self.status.send_if_modified(|cur| {
            let changed = *cur != next;
            *cur = next;
            changed
        });
    }

    pub(super) fn status_now(&self) -> AuthStatus {
        self.status.borrow().clone()
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
