//! The authorization actor's loop: commands, timers and companion calls in
//! flight. Calls run as tasks so the actor keeps answering (and the
//! watchdog keeps being fed) while the companion is slow.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::companion::{CallError, Registration, TokenResponse};
use super::session::{self, Session};
use super::{AccessToken, AuthCommand, AuthError, AuthState, AuthStatus, Settings};
use crate::backoff::Backoff;
use crate::published::Publisher;

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
    Token(Job, Result<TokenResponse, CallError>),
}

pub(super) struct Actor {
    pub(super) settings: Settings,
    status: Publisher<AuthStatus>,
    pub(super) session: Option<Session>,
    pub(super) token: Option<(AccessToken, Instant)>,
    pub(super) backoff: Backoff,
    wake: Option<(Instant, Job)>,
    jobs: JoinSet<Outcome>,
}

impl Actor {
    pub(super) fn new(settings: Settings, status: Publisher<AuthStatus>) -> Self {
        Self {
            settings,
            status,
            session: None,
            token: None,
            backoff: Backoff::token_service(),
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
            AuthCommand::Reset(reply) => {
                self.forget();
                self.publish(AuthStatus::default());
                tracing::info!("session forgotten; state is unregistered");
                let _ = reply.send(());
            }
            AuthCommand::Token(reply) => {
                let _ = reply.send(self.current_token());
            }
            AuthCommand::Rejected(token) => {
                let current = self.token.as_ref().map(|(t, _)| &t.value);
                if current == Some(&token) && self.jobs.is_empty() {
                    tracing::info!("AVS refused the access token; renewing it now");
                    self.launch(Job::Renew);
                }
            }
            AuthCommand::Ping(reply) => {
                let _ = reply.send(());
            }
        }
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
                } else if s.code_expires_at > unix_now() {
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
                self.jobs
                    .spawn(async move { Outcome::Token(job, client.access_token(&id).await) });
            }
        }
    }

    pub(super) fn schedule(&mut self, job: Job, after: Duration) {
        self.wake = Some((Instant::now() + after, job));
    }

    pub(super) fn publish(&self, next: AuthStatus) {
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

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
