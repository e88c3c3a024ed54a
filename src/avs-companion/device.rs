//! The device side's token route, `POST /provision/accessToken`, with RFC
//! 8628 §3.5 polling semantics (registration is in [`super::register`]).
//! A device may name the access token AVS refused (`refusedToken`); the companion then refreshes at LWA at once,
//! at most [`RefusalLimiter`]'s number of times a minute per session.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use super::flow::{Flow, RETRY_BUDGET, ct_eq};
use super::store::{Session, Status, Tokens};
use kit::secret::Secret;

/// RFC 8628 adds this much to the interval after each `slow_down`.
const SLOW_DOWN_STEP: u64 = 5;

/// The window of [`RefusalLimiter`].
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// How long a request whose stored token is still valid waits for another
/// holder's refresh before it answers with the stored token.
const HOLDER_WAIT: Duration = Duration::from_secs(5);

/// The longest `refusedToken` taken (LWA's access tokens are under 2 KiB).
const MAX_REFUSED_TOKEN: usize = 4096;

/// Counts the LWA refreshes each session forced by reporting a refused
/// token, over a sliding minute, so a broken or hostile device cannot make
/// the companion hammer LWA. Entries older than a minute are dropped on
/// every use, so the map holds only sessions active in the last minute (and
/// only real ones: the session is checked before the limiter is asked).
#[derive(Debug)]
pub struct RefusalLimiter {
    per_minute: usize,
    taken: Mutex<HashMap<String, VecDeque<tokio::time::Instant>>>,
}

impl RefusalLimiter {
    /// At most `per_minute` refreshes per session in any 60 s.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: usize::try_from(per_minute.max(1)).unwrap_or(1),
            taken: Mutex::new(HashMap::new()),
        }
    }

    /// Take one refresh for session `id`, or learn how long until one is
    /// free again.
    pub fn try_take(&self, id: &str) -> Result<(), Duration> {
        let now = tokio::time::Instant::now();
        let mut map = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= REFUSAL_WINDOW)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = map.entry(id.to_string()).or_default();
        if times.len() >= self.per_minute {
            let oldest = times.front().copied().unwrap_or(now);
            return Err((oldest + REFUSAL_WINDOW).saturating_duration_since(now));
        }
        times.push_back(now);
        Ok(())
    }
}

/// A device-route failure, sent as `{"error", "error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    /// HTTP status.
    pub status: StatusCode,
    /// The error code of the contract.
    pub error: &'static str,
    /// Words a person can act on.
    pub description: String,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

impl DeviceError {
    /// An error with its status, contract code and description.
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// `429 Too Many Requests` with `Retry-After`.
    pub fn limited(wait: std::time::Duration, description: impl Into<String>) -> Self {
        Self {
            retry_after: Some(super::limits::retry_after_secs(wait)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", description)
        }
    }

    pub(super) fn bad(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    pub(super) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the companion could not reach its database; try again shortly",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// When mutual TLS is on, the client certificate must name `product:dsn`
/// (also used by [`super::revoke`]).
pub(super) fn check_cert(
    flow: &Flow,
    cert_names: &[String],
    product: &str,
    dsn: &str,
) -> Result<(), DeviceError> {
    if flow.config.server.device_ca_file.is_none() {
        return Ok(());
    }
    let want = format!("{product}:{dsn}");
    if cert_names.contains(&want) {
        return Ok(());
    }
    let what = if cert_names.is_empty() {
        "this route needs a device client certificate signed by the configured device CA"
    } else {
        "the client certificate does not name this product id and serial (<productId>:<dsn>)"
    };
    Err(DeviceError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        what,
    ))
}

/// `POST /provision/accessToken`.
pub async fn access_token(
    flow: &Flow,
    body: &[u8],
    cert_names: &[String],
) -> Result<Value, DeviceError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| DeviceError::bad("invalid_request", "send JSON {\"sessionId\"}"))?;
    let id = v
        .get("sessionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or_else(|| DeviceError::bad("invalid_request", "sessionId is missing"))?
        .to_string();
    let refused = match v.get("refusedToken") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_REFUSED_TOKEN => {
            Some(Secret::new(t.clone()))
        }
        Some(_) => {
            return Err(DeviceError::bad(
                "invalid_request",
                format!(
                    "refusedToken must be the access token AVS refused (1 to {MAX_REFUSED_TOKEN} characters)"
                ),
            ));
        }
    };
    let unknown = || {
        DeviceError::bad(
            "invalid_session",
            "unknown session: register again with POST /provision/regCode",
        )
    };
    let session = match load(flow, &id).await {
        Ok(s) => s.ok_or_else(unknown)?,
        Err(e) => {
            // The database is unreachable: a token still valid is better
            // than an error (not the one AVS refused, of course).
            let now = flow.now();
            if refused.is_none()
                && let Some(c) = flow.token_cache.get(&id, now)
            {
                check_cert(flow, cert_names, &c.product_id, &c.dsn)?;
                tracing::warn!("the database is unreachable; answered from the token cache");
                return Ok(json!({
                    "access_token": c.access.expose(),
                    "token_type": "bearer",
                    "expires_in": c.expires_at.saturating_sub(now),
                }));
            }
            return Err(e);
        }
    };
    check_cert(flow, cert_names, &session.product_id, &session.dsn)?;
    let now = flow.now();
    match session.status {
        Status::Denied | Status::Revoked => {
            flow.token_cache.remove(&id);
            Err(DeviceError::bad(
                "access_denied",
                "the user refused or revoked access: register again",
            ))
        }
        Status::Pending => {
            if now >= session.reg_expires_at {
                return Err(DeviceError::bad(
                    "expired_token",
                    "the registration code expired before the user logged in: register again",
                ));
            }
            let too_fast = session
                .last_poll_at
                .is_some_and(|last| now < last.saturating_add(session.interval));
            let interval = if too_fast {
                session.interval + SLOW_DOWN_STEP
            } else {
                session.interval
            };
            let key = id.clone();
            flow.store
                .call(move |s| s.touch_poll(&key, now, interval))
                .await
                .map_err(|_| DeviceError::internal())?;
            if too_fast {
                Err(DeviceError::bad(
                    "slow_down",
                    format!("polling too fast: wait at least {interval} seconds between polls"),
                ))
            } else {
                Err(DeviceError::bad(
                    "authorization_pending",
                    "the user has not logged in yet",
                ))
            }
        }
        Status::Linked => {
            let (product_id, dsn) = (session.product_id.clone(), session.dsn.clone());
            let answer = linked(flow, &id, session, refused).await;
            match &answer {
                Ok(v) => {
                    if let (Some(access), Some(expires_in)) =
                        (v["access_token"].as_str(), v["expires_in"].as_u64())
                    {
                        let cached = super::token_cache::Cached {
                            access: Secret::new(access),
                            expires_at: now + expires_in,
                            product_id,
                            dsn,
                        };
                        flow.token_cache.put(&id, cached, now);
                    }
                }
                Err(e) if e.error == "access_denied" => flow.token_cache.remove(&id),
                Err(_) => {}
            }
            answer
        }
    }
}

async fn load(flow: &Flow, id: &str) -> Result<Option<Session>, DeviceError> {
    let key = id.to_string();
    flow.store
        .call(move |s| s.session(&key))
        .await
        .map_err(|_| DeviceError::internal())
}

fn token_json(t: &Tokens, now: u64) -> Value {
    json!({
        "access_token": t.access.expose(),
        "token_type": "bearer",
        "expires_in": t.access_expires_at.saturating_sub(now),
    })
}

/// A linked session: the cached token while it has more than the margin
/// left, else a refresh by whoever holds the session's refresh lease (see
/// [`super::refresh`]), retried with back-off.
/// With `refused` (the token AVS answered 403 to): the cached token if it
/// is another one (someone refreshed already), else a refresh now, within
/// the session's [`RefusalLimiter`] allowance.
async fn linked(
    flow: &Flow,
    id: &str,
    session: Session,
    refused: Option<Secret>,
) -> Result<Value, DeviceError> {
    let margin = flow.config.lwa.refresh_margin_secs;
    let fresh = |s: &Session, now: u64| {
        s.tokens
            .as_ref()
            .filter(|t| t.access_expires_at > now.saturating_add(margin))
            .map(|t| token_json(t, now))
    };
    // Another token than the refused one, still valid: the device only
    // missed a refresh.
    let replaced = |s: &Session, now: u64, refused: &Secret| {
        s.tokens
            .as_ref()
            .filter(|t| t.access_expires_at > now)
            .filter(|t| !ct_eq(t.access.expose().as_bytes(), refused.expose().as_bytes()))
            .map(|t| token_json(t, now))
    };
    let cached = |s: &Session, now: u64| match &refused {
        None => fresh(s, now),
        Some(r) => replaced(s, now, r),
    };
    if let Some(v) = cached(&session, flow.now()) {
        return Ok(v);
    }
    // The refresh lease, shared by every instance: whoever holds it
    // refreshes; the others answer from the database.
    let start = tokio::time::Instant::now();
    loop {
        let lease = super::refresh::new_lease(flow);
        let taking = lease.clone();
        let key = id.to_string();
        let leased = flow
            .store
            .call(move |s| s.lease_refresh(&key, &taking))
            .await
            .map_err(|_| DeviceError::internal())?;
        let Some(session) = leased else {
            let session = load(flow, id).await?.ok_or_else(|| {
                DeviceError::bad("invalid_session", "unknown session: register again")
            })?;
            if session.status != Status::Linked {
                return Err(DeviceError::bad(
                    "access_denied",
                    "the user revoked access: register again",
                ));
            }
            let now = flow.now();
            if let Some(v) = cached(&session, now) {
                return Ok(v);
            }
            // Someone else is refreshing: wait for its new token, but not
            // long while the stored one is still valid (a held lease may be
            // a failed refresh's back-off), unless AVS refused that one.
            let valid = session
                .tokens
                .as_ref()
                .filter(|t| t.access_expires_at > now && refused.is_none());
            let patience = if valid.is_some() {
                HOLDER_WAIT
            } else {
                RETRY_BUDGET
            };
            if start.elapsed() >= patience {
                return match valid {
                    Some(t) => Ok(token_json(t, now)),
                    None => Err(unavailable()),
                };
            }
            let wait = rand::Rng::random_range(&mut rand::rng(), 50..250);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            continue;
        };
        return refresh_under_lease(flow, id, session, lease, refused.as_ref(), &cached).await;
    }
}

fn unavailable() -> DeviceError {
    DeviceError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "Login with Amazon is unreachable; retry in a minute",
    )
}

/// The on-demand refresh, holding the session's lease: re-check (someone
/// may have refreshed while this request waited), then refresh.
async fn refresh_under_lease(
    flow: &Flow,
    id: &str,
    session: Session,
    lease: super::store::Lease,
    refused: Option<&Secret>,
    cached: &(dyn Fn(&Session, u64) -> Option<Value> + Sync),
) -> Result<Value, DeviceError> {
    let release = |token: String| async move {
        let key = id.to_string();
        let _ = flow
            .store
            .call(move |s| s.release_refresh(&key, &token, None))
            .await;
    };
    if let Some(v) = cached(&session, flow.now()) {
        release(lease.token).await;
        return Ok(v);
    }
    let Some(old) = session.tokens.clone() else {
        release(lease.token).await;
        return Err(DeviceError::bad(
            "access_denied",
            "no tokens held: register again",
        ));
    };
    if refused.is_some() {
        if let Err(wait) = flow.refused.try_take(id) {
            release(lease.token).await;
            let wait = wait.as_secs().max(1);
            tracing::warn!(
                product = %session.product_id, dsn = %session.dsn,
                "device reports refused tokens faster than lwa.refused_refreshes_per_minute allows; told to slow down"
            );
            return Err(DeviceError::bad(
                "slow_down",
                format!(
                    "too many refreshes for refused tokens: ask again in {wait} seconds \
                     (the companion allows {} a minute)",
                    flow.config.lwa.refused_refreshes_per_minute
                ),
            ));
        }
        tracing::info!(product = %session.product_id, dsn = %session.dsn, "AVS refused the device's access token; refreshing at LWA now");
    }
    use super::refresh::Outcome;
    match super::refresh::refresh_leased(flow, &session, &lease, RETRY_BUDGET, 0).await {
        Outcome::Refreshed(tokens) => Ok(token_json(&tokens, flow.now())),
        Outcome::Superseded(now_stored) => {
            let now = flow.now();
            match now_stored.tokens {
                Some(t) if now_stored.status == Status::Linked && t.access_expires_at > now => {
                    Ok(token_json(&t, now))
                }
                _ => Err(DeviceError::bad(
                    "access_denied",
                    "the user revoked access: register again",
                )),
            }
        }
        Outcome::Revoked => Err(DeviceError::bad(
            "access_denied",
            "the user revoked access at Amazon: register again",
        )),
        Outcome::Unavailable => {
            let now = flow.now();
            if old.access_expires_at > now && refused.is_none() {
                // Still valid: better a short-lived token than none.
                return Ok(token_json(&old, now));
            }
            Err(unavailable())
        }
    }
}

/// A token that lives no longer than the refresh margin is refreshed on
/// every device request: say so, since only the operator can fix it.
pub(super) fn warn_if_short_lived(expires_in: u64, margin: u64) {
    if expires_in <= margin {
        tracing::warn!(
            "LWA issued an access token that lives {expires_in} s, no more than \
             lwa.refresh_margin_secs ({margin} s): every device request will refresh it; \
             lower refresh_margin_secs"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refused_refreshes_are_limited_per_session_over_a_sliding_minute() {
        let limiter = RefusalLimiter::new(3);
        for _ in 0..3 {
            assert_eq!(limiter.try_take("a"), Ok(()));
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // The fourth within the minute waits until the first is a minute old.
        assert_eq!(limiter.try_take("a"), Err(Duration::from_secs(30)));
        // Another session has its own allowance.
        assert_eq!(limiter.try_take("b"), Ok(()));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(limiter.try_take("a").is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.try_take("a"), Ok(()));
        assert_eq!(limiter.try_take("a"), Err(Duration::from_secs(10)));
        // A quiet minute forgets the session altogether.
        tokio::time::advance(REFUSAL_WINDOW).await;
        for _ in 0..3 {
            assert_eq!(limiter.try_take("a"), Ok(()));
        }
        assert_eq!(limiter.taken.lock().unwrap().len(), 1);
    }
}
