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
use crate::auth::{AccessToken, AuthCommand, AuthError, AuthState, AuthStatus};
use kit::backoff::Backoff;
use kit::clock::unix_now;
use kit::published::Publisher;
use kit::secret::Secret;

/// The longest poll interval `slow_down` can double to (the SDK's cap).
const MAX_INTERVAL: u64 = 60;
/// The shortest wait between refresh tries near a token's expiry.
const MIN_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    CodePair,
    Poll,
    Refresh,
}

enum Outcome {
    CodePair(Result<CodePair, LwaCallError>),
    Tokens(Job, Result<Tokens, LwaCallError>),
}

/// The actor (see the module doc).
pub struct CodeActor {
    s: CodeSettings,
    status: Publisher<AuthStatus>,
    tokens: watch::Sender<u64>,
    saved: Option<Saved>,
    token: Option<(AccessToken, Instant)>,
    backoff: Backoff,
    wake: Option<(Instant, Job)>,
    jobs: JoinSet<Outcome>,
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
            self.fail(message.clone());
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

    fn forget(&mut self) {
        self.jobs = JoinSet::new();
        self.wake = None;
        self.token = None;
        self.saved = None;
        self.backoff.reset();
        if let Err(e) = store::remove(&self.s.state_dir) {
            tracing::warn!("cannot delete the saved LWA token: {e}");
        }
    }

    fn refresh_token(&self) -> Option<Secret> {
        self.saved.as_ref().and_then(|s| s.refresh_token.clone())
    }

    fn pending(&self) -> Option<Pending> {
        self.saved.as_ref().and_then(|s| s.pending.clone())
    }

    fn launch(&mut self, job: Job) {
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

    fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::CodePair(Ok(pair)) => self.got_pair(pair),
            Outcome::CodePair(Err(LwaCallError::Refused(code))) => self.fail(format!(
                "LWA refused to give a login code (`{code}`); check auth.client_id (the client \
                 id of a security profile of type \"Other devices and platforms\") and \
                 device.product_id, then run `avsctl login`"
            )),
            Outcome::CodePair(Err(e)) => self.retry(Job::CodePair, &e),
            Outcome::Tokens(job, Ok(t)) => self.got_tokens(job, t),
            Outcome::Tokens(job, Err(LwaCallError::Refused(code))) => self.refused(job, &code),
            Outcome::Tokens(job, Err(e)) => self.retry(job, &e),
        }
    }

    fn got_pair(&mut self, pair: CodePair) {
        let Ok(lwa) = &self.s.lwa else { return };
        let interval = pair.interval.clamp(1, MAX_INTERVAL);
        let saved = Saved {
            lwa_url: lwa.base().to_string(),
            client_id: lwa.client_id().to_string(),
            product_id: self.s.product_id.clone(),
            dsn: self.s.dsn.clone(),
            refresh_token: None,
            pending: Some(Pending {
                device_code: pair.device_code,
                user_code: pair.user_code,
                verification_uri: pair.verification_uri,
                expires_at: unix_now() + pair.expires_in,
                interval,
            }),
        };
        let error = self.save(&saved);
        // The code itself is shown on D-Bus only (to root and group avsd).
        tracing::info!(
            "waiting for login: open {} and enter the code `avsctl login` shows",
            saved
                .pending
                .as_ref()
                .map_or("", |p| p.verification_uri.as_str())
        );
        self.saved = Some(saved);
        self.backoff.reset();
        self.publish_waiting(error.unwrap_or_default());
        self.schedule(Job::Poll, Duration::from_secs(interval));
    }

    fn got_tokens(&mut self, job: Job, t: Tokens) {
        let refresh = t.refresh_token.filter(|r| !r.is_empty());
        // The device-code grant must give a refresh token; a refresh that
        // gives none leaves the saved one in use.
        let refresh = match (job, refresh) {
            (_, Some(r)) => Some(r),
            (Job::Refresh, None) => self.refresh_token(),
            (_, None) => None,
        };
        if !t.token_type.eq_ignore_ascii_case("bearer")
            || t.expires_in == 0
            || t.access_token.is_empty()
            || refresh.is_none()
        {
            let e = LwaCallError::Unexpected {
                url: self
                    .s
                    .lwa
                    .as_ref()
                    .map(|l| l.base().to_string())
                    .unwrap_or_default(),
                status: 200,
                body: format!(
                    "an incomplete token answer (token_type `{}`, expires_in {}, refresh token {})",
                    t.token_type,
                    t.expires_in,
                    if refresh.is_some() {
                        "given"
                    } else {
                        "missing"
                    }
                ),
            };
            return self.retry(job, &e);
        }
        let mut error = None;
        if let Some(mut saved) = self.saved.clone() {
            saved.refresh_token = refresh;
            saved.pending = None;
            error = self.save(&saved);
            self.saved = Some(saved);
        }
        if job == Job::Poll {
            tracing::info!("login complete: avsd is authorized");
        }
        let expires_at = unix_now() + t.expires_in;
        let life = Duration::from_secs(t.expires_in);
        self.token = Some((
            AccessToken {
                value: t.access_token,
                expires_at,
            },
            Instant::now() + life,
        ));
        self.tokens.send_modify(|n| *n += 1);
        self.backoff.reset();
        self.publish(AuthStatus {
            state: AuthState::Authorized,
            token_expires_at: expires_at,
            last_error: error.unwrap_or_default(),
            ..AuthStatus::default()
        });
        let head_start = self.s.renew_before.min(life / 2);
        tracing::debug!("token valid for {life:?}; refreshing {head_start:?} before expiry");
        self.schedule(Job::Refresh, life - head_start);
    }

    fn refused(&mut self, job: Job, code: &str) {
        let interval = self.pending().map_or(5, |p| p.interval);
        match (job, code) {
            (Job::Poll, "authorization_pending") => {
                self.schedule(Job::Poll, Duration::from_secs(interval));
            }
            (Job::Poll, "slow_down") => {
                let next = (interval * 2).min(MAX_INTERVAL);
                if let Some(p) = self.saved.as_mut().and_then(|s| s.pending.as_mut()) {
                    p.interval = next;
                }
                tracing::info!("LWA asked to poll more slowly; polling every {next} s");
                self.schedule(Job::Poll, Duration::from_secs(next));
            }
            // `invalid_code_pair` is the AVS Device SDK's name for it.
            (Job::Poll, "expired_token" | "invalid_code_pair") => self.code_expired(),
            (Job::Poll, "access_denied") => {
                self.forget();
                self.fail(
                    "the login was denied at Amazon's page; run `avsctl login` for a new code \
                     and press Allow"
                        .to_string(),
                );
            }
            (Job::Poll, "invalid_grant") => {
                self.forget();
                self.fail(
                    "LWA no longer knows this login code (already used, or unknown; \
                     `invalid_grant`); run `avsctl login` for a new code"
                        .to_string(),
                );
            }
            (Job::Refresh, "invalid_grant") => {
                self.forget();
                self.fail(
                    "Amazon no longer accepts this device's refresh token (the link was removed \
                     in the Amazon account, or it expired; `invalid_grant`); run `avsctl login` \
                     to link again"
                        .to_string(),
                );
            }
            (_, "server_error" | "temporarily_unavailable") => {
                let e = LwaCallError::Refused(code.to_string());
                self.retry(job, &e);
            }
            (_, other) => {
                self.forget();
                self.fail(format!(
                    "LWA refused the login (`{other}`); check auth.client_id and \
                     device.product_id, then run `avsctl login`"
                ));
            }
        }
    }

    fn code_expired(&mut self) {
        self.forget();
        self.fail(
            "the login code expired before it was entered at Amazon's page; run `avsctl login` \
             for a new code"
                .to_string(),
        );
    }

    /// Back off and try again, keeping what is held; a poll never sooner
    /// than the interval, a refresh never past half the token's time left.
    fn retry(&mut self, job: Job, e: &LwaCallError) {
        let attempt = self.backoff.attempt() + 1;
        let mut delay = self.backoff.next_delay();
        match job {
            Job::Poll => {
                let interval = self.pending().map_or(5, |p| p.interval);
                delay = delay.max(Duration::from_secs(interval));
            }
            Job::Refresh => {
                if let Some((_, expiry)) = &self.token {
                    let left = expiry.saturating_duration_since(Instant::now());
                    delay = delay.min((left / 2).max(MIN_RETRY));
                }
            }
            Job::CodePair => {}
        }
        tracing::warn!(
            "LWA call failed (attempt {attempt}, next try in {:.1} s): {e}",
            delay.as_secs_f64()
        );
        let mut status = self.status_now();
        status.last_error = format!(
            "{e}; retrying in {} s (attempt {attempt})",
            delay.as_secs().max(1)
        );
        if job == Job::CodePair {
            status.state = AuthState::Error;
        }
        self.publish(status);
        self.schedule(job, delay);
    }

    fn expired(&mut self) {
        self.token = None;
        let mut status = self.status_now();
        status.state = AuthState::Error;
        status.token_expires_at = 0;
        if status.last_error.is_empty() {
            status.last_error = "the access token expired before it could be refreshed".into();
        }
        tracing::warn!("access token expired: {}", status.last_error);
        self.publish(status);
    }

    fn fail(&mut self, message: String) {
        tracing::warn!("{message}");
        self.publish(AuthStatus {
            state: AuthState::Error,
            last_error: message,
            ..AuthStatus::default()
        });
    }

    fn publish_waiting(&self, last_error: String) {
        let Some(p) = self.pending() else { return };
        self.publish(AuthStatus {
            state: AuthState::WaitingForUser,
            login_url: p.verification_uri,
            user_code: p.user_code,
            token_expires_at: 0,
            last_error,
        });
    }

    fn save(&self, saved: &Saved) -> Option<String> {
        store::save(&self.s.state_dir, saved).err().map(|e| {
            let msg = format!(
                "cannot save the LWA token in {}: {e}; a restart will need a new login",
                self.s.state_dir.display()
            );
            tracing::error!("{msg}");
            msg
        })
    }

    fn schedule(&mut self, job: Job, after: Duration) {
        self.wake = Some((Instant::now() + after, job));
    }

    fn publish(&self, next: AuthStatus) {
        self.status.send_if_modified(|cur| {
            let changed = *cur != next;
            *cur = next;
            changed
        });
    }

    fn status_now(&self) -> AuthStatus {
        self.status.borrow().clone()
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
