//! What the code-login actor does with each answer from LWA: the code
//! pair, the poll answers (pending, slow_down, expired, denied, used), the
//! tokens, and back-off while LWA fails.

use std::time::Duration;

use tokio::time::Instant;

use super::actor::{CodeActor, Job, Outcome};
use super::lwa::{CodePair, LwaCallError, Tokens};
use super::store::{Pending, Saved};
use crate::auth::{AccessToken, AuthReason, AuthState, AuthStatus};
use kit::clock::unix_now;

/// The longest poll interval `slow_down` can double to (the SDK's cap).
pub(super) const MAX_INTERVAL: u64 = 60;
/// The shortest wait between refresh tries near a token's expiry.
const MIN_RETRY: Duration = Duration::from_secs(1);

impl CodeActor {
    pub(super) fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::CodePair(Ok(pair)) => self.got_pair(pair),
            Outcome::CodePair(Err(LwaCallError::Refused(code))) => self.fail(
                AuthReason::LoginRefused,
                format!(
                    "LWA refused to give a login code (`{code}`); check auth.client_id (the client \
                 id of a security profile of type \"Other devices and platforms\") and \
                 device.product_id, then run `avsctl login`"
                ),
            ),
            Outcome::CodePair(Err(e)) => self.retry(Job::CodePair, &e),
            Outcome::Tokens(job, Ok(t)) => self.got_tokens(job, t),
            Outcome::Tokens(job, Err(LwaCallError::Refused(code))) => self.refused(job, &code),
            Outcome::Tokens(job, Err(e)) => self.retry(job, &e),
        }
    }

    pub(super) fn got_pair(&mut self, pair: CodePair) {
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

    pub(super) fn got_tokens(&mut self, job: Job, t: Tokens) {
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
            last_error_reason: AuthReason::StateNotSaved,
            ..AuthStatus::default()
        });
        let head_start = self.s.renew_before.min(life / 2);
        tracing::debug!("token valid for {life:?}; refreshing {head_start:?} before expiry");
        self.schedule(Job::Refresh, life - head_start);
    }

    pub(super) fn refused(&mut self, job: Job, code: &str) {
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
                    AuthReason::LoginDenied,
                    "the login was denied at Amazon's page; run `avsctl login` for a new code \
                     and press Allow"
                        .to_string(),
                );
            }
            (Job::Poll, "invalid_grant") => {
                self.forget();
                self.fail(
                    AuthReason::CodeExpired,
                    "LWA no longer knows this login code (already used, or unknown; \
                     `invalid_grant`); run `avsctl login` for a new code"
                        .to_string(),
                );
            }
            (Job::Refresh, "invalid_grant") => {
                self.forget();
                self.fail(
                    AuthReason::LinkRevoked,
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
                self.fail(
                    AuthReason::LoginRefused,
                    format!(
                        "LWA refused the login (`{other}`); check auth.client_id and \
                     device.product_id, then run `avsctl login`"
                    ),
                );
            }
        }
    }

    pub(super) fn code_expired(&mut self) {
        self.forget();
        self.fail(
            AuthReason::CodeExpired,
            "the login code expired before it was entered at Amazon's page; run `avsctl login` \
             for a new code"
                .to_string(),
        );
    }

    /// Back off and try again, keeping what is held; a poll never sooner
    /// than the interval, a refresh never past half the token's time left.
    pub(super) fn retry(&mut self, job: Job, e: &LwaCallError) {
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
        status.last_error_reason = match e {
            LwaCallError::Unreachable { .. } => AuthReason::LwaUnreachable,
            _ => AuthReason::LwaError,
        };
        if job == Job::CodePair {
            status.state = AuthState::Error;
        }
        self.publish(status);
        self.schedule(job, delay);
    }

    pub(super) fn expired(&mut self) {
        self.token = None;
        let mut status = self.status_now();
        status.state = AuthState::Error;
        status.token_expires_at = 0;
        if status.last_error.is_empty() {
            status.last_error = "the access token expired before it could be refreshed".into();
            status.last_error_reason = AuthReason::TokenExpired;
        }
        tracing::warn!("access token expired: {}", status.last_error);
        self.publish(status);
    }

    pub(super) fn fail(&mut self, reason: AuthReason, message: String) {
        tracing::warn!("{message}");
        self.publish(AuthStatus {
            state: AuthState::Error,
            last_error: message,
            last_error_reason: reason,
            ..AuthStatus::default()
        });
    }
}
