//! The code-login actor: one LWA call in flight at a time (as a task, so
//! the actor keeps answering the watchdog), one timer, and the saved file
//! written before anything that depends on it is announced.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::CodeSettings;
use super::lwa::{CodePair, LwaCallError, LwaClient, Tokens};
use super::store::{self, Pending, Saved};
use crate::auth::{AccessToken, AuthCommand, AuthError, AuthReason, AuthState, AuthStatus};
use kit::backoff::Backoff;
use kit::clock::unix_now;
use kit::published::Publisher;
use kit::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    CodePair,
    Poll,
    Refresh,
}

pub(super) enum Outcome {
    CodePair(Result<CodePair, LwaCallError>),
    Tokens(Job, Result<Tokens, LwaCallError>),
}

/// The actor (see the module doc).
pub struct CodeActor {
    pub(super) s: CodeSettings,
    pub(super) status: Publisher<AuthStatus>,
    pub(super) tokens: watch::Sender<u64>,
    pub(super) saved: Option<Saved>,
    pub(super) token: Option<(AccessToken, Instant)>,
    pub(super) backoff: Backoff,
    pub(super) wake: Option<(Instant, Job)>,
    pub(super) jobs: JoinSet<Outcome>,
}

impl CodeActor {
    /// A new actor; nothing runs until [`CodeActor::run`].
    pub fn new(s: CodeSettings, status: Publisher<AuthStatus>, tokens: watch::Sender<u64>) -> Self {
        Self {
            s,
            status,
            tokens,
            saved: None,
            token: None,
            backoff: Backoff::token_service(),
            wake: None,
            jobs: JoinSet::new(),
        }
    }

    /// Serve commands until `shutdown` or until every handle is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<AuthCommand>, shutdown: CancellationToken) {
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
                Some(Ok(done)) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    self.outcome(done);
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
                let _ = reply.send(match &self.token {
                    Some((t, at)) if *at > Instant::now() => Ok(t.clone()),
                    _ => Err(AuthError::NotAuthorized(
                        "avsd holds no valid access token; see Authorization.LastError".into(),
                    )),
                });
            }
            AuthCommand::Rejected(token) => {
                let held = self.token.as_ref().is_some_and(|(t, _)| t.value == token);
                if held && self.jobs.is_empty() && self.refresh_token().is_some() {
                    tracing::info!("AVS refused the access token; refreshing at LWA now");
                    self.launch(Job::Refresh);
                }
            }
            AuthCommand::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn resume(&mut self) {
        let Ok(lwa) = self.s.lwa.clone() else {
            if let Err(e) = &self.s.lwa {
                tracing::info!("not logging in: {e}");
            }
            return;
        };
        match store::load(&self.s.state_dir) {
            Ok(Some(saved)) if self.belongs(&saved, &lwa) => {
                let refresh = saved.refresh_token.is_some();
                let pending = saved.pending.clone();
                self.saved = Some(saved);
                if refresh {
                    tracing::info!("saved refresh token found; asking LWA for an access token");
                    return self.launch(Job::Refresh);
                }
                if let Some(p) = pending.filter(|p| p.expires_at > unix_now()) {
                    tracing::info!("a code login was under way; polling LWA again");
                    self.publish_waiting(String::new());
                    return self.schedule(Job::Poll, Duration::from_secs(p.interval));
                }
            }
            Ok(Some(_)) => {
                tracing::info!(
                    "the saved LWA token is for another LWA, client id, product or serial; it is \
                     dropped"
                );
                self.forget();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; logging in again"),
        }
        if self.s.register_on_start {
            self.launch(Job::CodePair);
        }
    }

    fn belongs(&self, s: &Saved, lwa: &LwaClient) -> bool {
        s.lwa_url == lwa.base()
            && s.client_id == lwa.client_id()
            && s.product_id == self.s.product_id
            && s.dsn == self.s.dsn
    }

    fn start(&mut self) -> Result<(), AuthError> {
        if let Err(message) = &self.s.lwa {
            let message = message.clone();
            self.fail(AuthReason::NotConfigured, message.clone());
            return Err(AuthError::NotConfigured(message));
        }
        self.forget();
        self.publish(AuthStatus::default());
        self.launch(Job::CodePair);
        Ok(())
    }

    fn reset(&mut self, reply: oneshot::Sender<String>) {
        let had = self.refresh_token().is_some();
        self.forget();
        self.publish(AuthStatus::default());
        tracing::info!("LWA token forgotten; state is unregistered");
        let words = if had {
            // LWA documents no revocation call for a device's refresh token.
            "the refresh token was deleted from this device; to end the link at Amazon too, \
             remove the device in your Amazon account (Manage Your Content and Devices)"
        } else {
            "no login was held; nothing to revoke"
        };
        let _ = reply.send(words.to_string());
    }

    pub(super) fn forget(&mut self) {
        self.jobs = JoinSet::new();
        self.wake = None;
        self.token = None;
        self.saved = None;
        self.backoff.reset();
        if let Err(e) = store::remove(&self.s.state_dir) {
            tracing::warn!("cannot delete the saved LWA token: {e}");
        }
    }

    pub(super) fn refresh_token(&self) -> Option<Secret> {
        self.saved.as_ref().and_then(|s| s.refresh_token.clone())
    }

    pub(super) fn pending(&self) -> Option<Pending> {
        self.saved.as_ref().and_then(|s| s.pending.clone())
    }

    pub(super) fn launch(&mut self, job: Job) {
        self.wake = None;
        let Ok(lwa) = self.s.lwa.clone() else { return };
        if !self.jobs.is_empty() {
            return;
        }
        match job {
            Job::CodePair => {
                let (product, dsn) = (self.s.product_id.clone(), self.s.dsn.clone());
                self.jobs
                    .spawn(async move { Outcome::CodePair(lwa.code_pair(&product, &dsn).await) });
            }
            Job::Poll => {
                let Some(p) = self.pending() else { return };
                if p.expires_at <= unix_now() {
                    return self.code_expired();
                }
                self.jobs.spawn(async move {
                    Outcome::Tokens(job, lwa.device_token(&p.device_code, &p.user_code).await)
                });
            }
            Job::Refresh => {
                let Some(r) = self.refresh_token() else {
                    return;
                };
                self.jobs
                    .spawn(async move { Outcome::Tokens(job, lwa.refresh(&r).await) });
            }
        }
    }

    pub(super) fn publish_waiting(&self, last_error: String) {
        let Some(p) = self.pending() else { return };
        self.publish(AuthStatus {
            state: AuthState::WaitingForUser,
            login_url: p.verification_uri,
            user_code: p.user_code,
            token_expires_at: 0,
            last_error,
            last_error_reason: AuthReason::StateNotSaved,
        });
    }

    pub(super) fn save(&self, saved: &Saved) -> Option<String> {
        store::save(&self.s.state_dir, saved).err().map(|e| {
            let msg = format!(
                "cannot save the LWA token in {}: {e}; a restart will need a new login",
                self.s.state_dir.display()
            );
            tracing::error!("{msg}");
            msg
        })
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
