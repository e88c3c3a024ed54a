//! What the authorization actor does with each answer from the companion:
//! the registration and token state machine (RFC 8628-style polling,
//! renewal ahead of expiry, back-off while the companion is down).

use std::time::Duration;

use tokio::time::Instant;

use super::actor::{Actor, Job, Outcome};
use super::companion_client::{CallError, Registration, TokenResponse};
use super::session::{self, Session};
use super::{AccessToken, AuthReason, AuthState, AuthStatus};
use kit::clock::unix_now;
use kit::secret::Secret;

/// RFC 8628 §3.5: on `slow_down` the interval grows by 5 seconds.
const SLOW_DOWN_STEP: u64 = 5;

/// The shortest wait between renewal tries near a token's expiry.
const MIN_RENEW_RETRY: Duration = Duration::from_secs(1);

/// How long to wait before retrying a renewal: the back-off's draw, but
/// never past half the time the token has left (nor under a second). The
/// back-off table climbs to minutes; without this a short outage of the
/// companion late in a token's life could let one long draw outlive the
/// token (a soak caught 8.7 s drawn with 6.5 s left), and avsd would fall
/// out of `authorized` although the companion was back in time.
fn renew_retry_delay(drawn: Duration, left: Duration) -> Duration {
    drawn.min((left / 2).max(MIN_RENEW_RETRY))
}

impl Actor {
    pub(super) fn outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Registered(Ok(reg)) => self.registered(reg),
            Outcome::Registered(Err(CallError::Refused(code))) => self.fail(
                AuthReason::LoginRefused,
                format!(
                    "the companion refused to register this device (`{code}`); check \
                 device.product_id and that the companion allows this product"
                ),
            ),
            Outcome::Registered(Err(e)) => self.retry(Job::Register, &e),
            Outcome::Token(_, told, Ok(tok)) => self.got_token(tok, told),
            Outcome::Token(job, _, Err(CallError::Refused(code))) => self.refused(job, &code),
            Outcome::Token(job, _, Err(e)) => self.retry(job, &e),
        }
    }

    fn registered(&mut self, reg: Registration) {
        let Ok(client) = &self.settings.companion else {
            return;
        };
        let session = Session {
            companion_url: client.base().to_string(),
            product_id: self.settings.product_id.clone(),
            dsn: self.settings.dsn.clone(),
            session_id: reg.session_id,
            linked: false,
            login_url: reg.login_url,
            user_code: reg.reg_code,
            code_expires_at: unix_now() + reg.expires_in,
            interval: reg.interval.max(1),
        };
        let save_error = self.save(&session);
        tracing::info!(
            "waiting for login: open {} and enter code {}",
            session.login_url,
            session.user_code
        );
        let interval = session.interval;
        self.session = Some(session);
        self.backoff.reset();
        self.publish_waiting(save_error);
        self.schedule(Job::Poll, Duration::from_secs(interval));
    }

    pub(super) fn publish_waiting(&self, last_error: Option<String>) {
        let Some(s) = &self.session else { return };
        self.publish(AuthStatus {
            state: AuthState::WaitingForUser,
            login_url: s.login_url.clone(),
            user_code: s.user_code.clone(),
            token_expires_at: 0,
            last_error: last_error.unwrap_or_default(),
            last_error_reason: AuthReason::StateNotSaved,
        });
    }

    /// A token from the companion; `told` is the refused token the call
    /// reported (none for a call that began before AVS refused).
    fn got_token(&mut self, tok: TokenResponse, told: Option<Secret>) {
        if !tok.token_type.eq_ignore_ascii_case("bearer") || tok.expires_in == 0 {
            let e = CallError::Unexpected {
                url: String::new(),
                status: 200,
                body: format!(
                    "token_type `{}`, expires_in {}",
                    tok.token_type, tok.expires_in
                ),
            };
            return self.retry(Job::Renew, &e);
        }
        if self.refused.as_ref() == Some(&tok.access_token)
            && told.as_ref() != self.refused.as_ref()
        {
            // The call began before AVS refused: ask again, saying so.
            tracing::info!(
                "the companion answered the refused token to a call made before the refusal; \
                 asking again now"
            );
            return self.launch(Job::Renew);
        }
        if self.refused.as_ref() == Some(&tok.access_token) {
            // The companion knew and still answered it (an older companion
            // without refusedToken, or a refresh that failed): never a
            // silent wait.
            let attempt = self.backoff.attempt() + 1;
            let delay = self.backoff.next_delay().max(MIN_RENEW_RETRY);
            tracing::warn!(
                "the companion answered the access token AVS refused; asking again in {:.1} s \
                 (attempt {attempt})",
                delay.as_secs_f64()
            );
            return self.schedule(Job::Renew, delay);
        }
        if self.refused.take().is_some() {
            tracing::info!("a new access token replaces the one AVS refused");
        }
        // Compared by value: a refresh within the same second as the last
        // one has the same expiry second and is still a new token.
        let same = self
            .token
            .as_ref()
            .is_some_and(|(t, _)| t.value == tok.access_token);
        let expires_at = unix_now() + tok.expires_in;
        let deadline = Instant::now() + Duration::from_secs(tok.expires_in);
        let mut save_error = None;
        if let Some(s) = self.session.as_mut().filter(|s| !s.linked) {
            s.linked = true;
            s.login_url.clear();
            s.user_code.clear();
            let snapshot = s.clone();
            save_error = self.save(&snapshot);
            tracing::info!("login complete: avsd is authorized");
        }
        self.token = Some((
            AccessToken {
                value: tok.access_token,
                expires_at,
            },
            deadline,
        ));
        if !same {
            self.tokens.send_modify(|n| *n += 1);
        }
        self.publish(AuthStatus {
            state: AuthState::Authorized,
            token_expires_at: expires_at,
            last_error: save_error.unwrap_or_default(),
            last_error_reason: AuthReason::StateNotSaved,
            ..AuthStatus::default()
        });
        if same {
            // The companion handed back the token we already had: ask again
            // a little later instead of spinning.
            let delay = self.backoff.next_delay();
            tracing::info!(
                "the companion answered the token avsd already holds; asking again in {:.1} s",
                delay.as_secs_f64()
            );
            return self.schedule(Job::Renew, delay);
        }
        self.backoff.reset();
        let life = Duration::from_secs(tok.expires_in);
        if life <= self.settings.renew_before {
            tracing::warn!(
                "the access token lives only {} s, no more than companion.renew_before_secs ({} s); \
                 renewing at half its life instead. Lower renew_before_secs, or check the \
                 companion's lwa.refresh_margin_secs and LWA's token lifetime",
                life.as_secs(),
                self.settings.renew_before.as_secs()
            );
        }
        let head_start = self.settings.renew_before.min(life / 2);
        tracing::debug!("token valid for {life:?}; renewing {head_start:?} before expiry");
        self.schedule(Job::Renew, life - head_start);
    }

    fn refused(&mut self, job: Job, code: &str) {
        let interval = self.session.as_ref().map(|s| s.interval).unwrap_or(5);
        match code {
            "authorization_pending" => self.schedule(job, Duration::from_secs(interval)),
            "slow_down" if job == Job::Renew => {
                // The companion's limit on refreshes for refused tokens.
                let attempt = self.backoff.attempt() + 1;
                let delay = self
                    .backoff
                    .next_delay()
                    .max(Duration::from_secs(interval.max(1)));
                tracing::warn!(
                    "the companion limits refreshes of refused tokens (`slow_down`); asking \
                     again in {:.1} s (attempt {attempt})",
                    delay.as_secs_f64()
                );
                self.schedule(job, delay);
            }
            "slow_down" => {
                if let Some(s) = self.session.as_mut() {
                    s.interval += SLOW_DOWN_STEP;
                }
                tracing::info!("the companion asked to poll more slowly");
                self.schedule(job, Duration::from_secs(interval + SLOW_DOWN_STEP));
            }
            "expired_token" => {
                tracing::info!("the registration code expired; registering again");
                self.launch(Job::Register);
            }
            "access_denied" => {
                self.forget();
                self.fail(
                    AuthReason::LoginDenied,
                    "Amazon refused the login, or access was revoked; run `avsctl login` to \
                     log in again"
                        .to_string(),
                );
            }
            // The companion deletes a registration as soon as its code
            // expires, so a device still waiting for the user hears
            // `invalid_session` where it used to hear `expired_token`.
            "invalid_session" if self.session.as_ref().is_some_and(|s| !s.linked) => {
                tracing::info!("the registration code expired; registering again");
                self.launch(Job::Register);
            }
            "invalid_session" => {
                self.forget();
                self.fail(
                    AuthReason::LinkRevoked,
                    "the companion no longer knows this device (was its database reset?); run \
                     `avsctl login` to register again"
                        .to_string(),
                );
            }
            other => {
                let e = CallError::Refused(other.to_string());
                self.retry(job, &e);
            }
        }
    }

    /// A call failed in a way worth retrying: back off, keep what we hold.
    fn retry(&mut self, job: Job, e: &CallError) {
        let attempt = self.backoff.attempt() + 1;
        let ceiling = self.backoff.next_ceiling();
        let mut delay = self.backoff.next_delay();
        if let (Job::Renew, Some((_, expiry))) = (job, &self.token) {
            delay = renew_retry_delay(delay, expiry.saturating_duration_since(Instant::now()));
        }
        tracing::warn!(
            "companion call failed (attempt {attempt}, next try in {:.1} s): {e}",
            delay.as_secs_f64()
        );
        // The ceiling shows the back-off growing; the jittered delay alone
        // cannot (a short draw under a high ceiling looks like no back-off).
        tracing::debug!(
            "retrying in {} ms (ceiling {} s)",
            delay.as_millis(),
            ceiling.as_secs()
        );
        let mut status = self.status_now();
        status.last_error = format!(
            "{e}; retrying in {} s (attempt {attempt})",
            delay.as_secs().max(1)
        );
        status.last_error_reason = match e {
            CallError::Unreachable { .. } => AuthReason::CompanionUnreachable,
            CallError::Refused(_) | CallError::Unexpected { .. } => AuthReason::CompanionError,
        };
        if job == Job::Register && status.state != AuthState::Authorized {
            status.state = AuthState::Error;
        }
        self.publish(status);
        self.schedule(job, delay);
    }

    /// The token ran out before a renewal arrived.
    pub(super) fn expired(&mut self) {
        self.token = None;
        let mut status = self.status_now();
        status.state = AuthState::Error;
        status.token_expires_at = 0;
        if status.last_error.is_empty() {
            status.last_error = "the access token expired before it could be renewed".to_string();
            status.last_error_reason = AuthReason::TokenExpired;
        }
        tracing::warn!("access token expired: {}", status.last_error);
        self.publish(status);
    }

    fn fail(&mut self, reason: AuthReason, message: String) {
        tracing::warn!("{message}");
        self.publish(AuthStatus {
            state: AuthState::Error,
            last_error: message,
            last_error_reason: reason,
            ..AuthStatus::default()
        });
    }

    /// Save the session; on failure return the sentence for LastError.
    fn save(&self, s: &Session) -> Option<String> {
        session::save(&self.settings.state_dir, s).err().map(|e| {
            let msg = format!(
                "cannot save the session in {}: {e}; a restart will need a new login",
                self.settings.state_dir.display()
            );
            tracing::error!("{msg}");
            msg
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_retry_never_outlives_the_token() {
        let s = Duration::from_secs;
        // Early in the token's life the back-off decides.
        assert_eq!(renew_retry_delay(s(4), s(600)), s(4));
        // Late, half the time left: 6.5 s left, 8.7 s drawn.
        let d = renew_retry_delay(Duration::from_millis(8700), Duration::from_millis(6500));
        assert_eq!(d, Duration::from_millis(3250));
        // At the very end, one try a second until it expires.
        assert_eq!(renew_retry_delay(s(30), Duration::from_millis(800)), s(1));
        assert_eq!(renew_retry_delay(s(30), Duration::ZERO), s(1));
        // A short draw stays short.
        assert_eq!(
            renew_retry_delay(Duration::from_millis(10), s(1)),
            Duration::from_millis(10)
        );
    }
}
