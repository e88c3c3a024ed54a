//! Refreshing a session's tokens at LWA once per due time across every
//! instance sharing the database. The rules (each tested against both
//! store backends in `store::suite`):
//! - only the holder of a session's refresh lease sends its refresh token
//!   to LWA, and it re-reads the session under the lease first (someone may
//!   have refreshed while it waited);
//! - the new tokens are stored with a compare-and-swap on the session's
//!   token version;
//! - an `invalid_grant` after the version moved refused a superseded token:
//!   the stored, newer one is used, the session is not revoked;
//! - in the background, due sessions are leased in batches of at most
//!   `lwa.background_refreshes_per_second` a second, each started at a
//!   random point of its second, and a failed refresh holds the lease for a
//!   random back-off, so a backlog after an LWA outage is spread out.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::flow::{Flow, random_token, with_retry};
use super::lwa_client::LwaError;
use super::store::{Lease, Session, Tokens};
use kit::backoff::Backoff;

/// How a refresh under a lease ended.
#[derive(Debug)]
pub enum Outcome {
    /// New tokens, stored.
    Refreshed(Tokens),
    /// Someone else changed the tokens meanwhile (an expired lease, or a
    /// superseded token refused): the session as it now stands.
    Superseded(Box<Session>),
    /// LWA refused the current refresh token: the session is revoked.
    Revoked,
    /// LWA or the database failed; the lease was given back.
    Unavailable,
}

/// Longer than one request to LWA can take: the holder renews the lease
/// before each request (see [`refresh_leased`]), so a live holder's lease
/// never runs out under a request, and a dead holder's (an instance killed
/// mid-refresh) frees the session within seconds, not after a whole retry
/// budget.
pub fn lease_secs(flow: &Flow) -> u64 {
    flow.config.lwa.request_timeout_secs + LEASE_MARGIN_SECS
}

/// Room in a lease beyond one request: the database round trips around it.
const LEASE_MARGIN_SECS: u64 = 5;

/// The error code that stops a refresh whose lease another holder took
/// (never sent by LWA: OAuth codes have no dashes).
const LEASE_LOST: &str = "lease-lost";

/// A new lease, from now.
pub fn new_lease(flow: &Flow) -> Lease {
    let now = flow.now();
    Lease {
        token: random_token(16),
        now,
        until: now + lease_secs(flow),
    }
}

/// Refresh `session`, read under `lease`, at LWA (retrying transient
/// failures within `budget`) and store what came of it. `hold` (seconds):
/// after a failure, keep others off for a random time up to it (the
/// background's back-off); 0 gives the lease straight back.
pub async fn refresh_leased(
    flow: &Flow,
    session: &Session,
    lease: &Lease,
    budget: Duration,
    hold: u64,
) -> Outcome {
    let id = session.id.expose().to_string();
    let Some(old) = session.tokens.clone() else {
        return Outcome::Revoked;
    };
    let version = session.version;
    let mut backoff = Backoff::token_service();
    let result = with_retry(&mut backoff, budget, "refresh", || async {
        // The refresh token goes to LWA only while the lease is this
        // holder's: one that ran out during a back-off may have been taken
        // over, and two uses of one refresh token can revoke the grant.
        let (key, token, until) = (
            id.clone(),
            lease.token.clone(),
            flow.now() + lease_secs(flow),
        );
        match flow
            .store
            .call(move |s| s.renew_refresh(&key, &token, until))
            .await
        {
            Ok(true) => flow.lwa.refresh(&old.refresh).await,
            Ok(false) => Err(LwaError::Rejected {
                status: 0,
                error: LEASE_LOST.into(),
            }),
            Err(e) => Err(LwaError::Unavailable(format!(
                "cannot renew the refresh lease: {e}"
            ))),
        }
    })
    .await;
    let now = flow.now();
    match result {
        Ok(g) => {
            let tokens = Tokens {
                access: g.access,
                access_expires_at: now + g.expires_in,
                refresh: g.refresh,
            };
            super::device::warn_if_short_lived(g.expires_in, flow.config.lwa.refresh_margin_secs);
            let (key, stored) = (id.clone(), tokens.clone());
            // Stored before anyone is answered, so a rotated refresh token
            // is never lost to a crash.
            match flow
                .store
                .call(move |s| s.update_tokens(&key, version, &stored))
                .await
            {
                Ok(true) => {
                    tracing::info!(product = %session.product_id, dsn = %session.dsn, "access token refreshed");
                    Outcome::Refreshed(tokens)
                }
                Ok(false) => {
                    tracing::warn!(product = %session.product_id, dsn = %session.dsn,
                        "tokens changed while this refresh ran (its lease ran out); using the stored ones");
                    reread(flow, &id).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store refreshed tokens");
                    Outcome::Unavailable
                }
            }
        }
        Err(e) if e.is_invalid_grant() => {
            let key = id.clone();
            match flow
                .store
                .call(move |s| s.revoke_if_unchanged(&key, version))
                .await
            {
                Ok(true) => {
                    tracing::warn!(product = %session.product_id, dsn = %session.dsn, "LWA refused the refresh token; session ended");
                    Outcome::Revoked
                }
                Ok(false) => {
                    tracing::info!(product = %session.product_id, dsn = %session.dsn,
                        "LWA refused a refresh token another refresh had replaced; using the new one");
                    reread(flow, &id).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot record a refused refresh token");
                    Outcome::Unavailable
                }
            }
        }
        Err(LwaError::Rejected { error, .. }) if error == LEASE_LOST => {
            // Another holder refreshes now; the device asks again and gets
            // what that one stores.
            tracing::info!(product = %session.product_id, dsn = %session.dsn,
                "this refresh's lease ran out during a back-off and another holder took it; leaving the refresh to it");
            Outcome::Unavailable
        }
        Err(e) => {
            tracing::warn!(error = %e, product = %session.product_id, dsn = %session.dsn, "refresh failed");
            let hold_until = (hold > 0).then(|| now + rand::rng().random_range(1..=hold));
            let (key, token) = (id, lease.token.clone());
            if let Err(e) = flow
                .store
                .call(move |s| s.release_refresh(&key, &token, hold_until))
                .await
            {
                tracing::warn!(error = %e, "cannot release a refresh lease; it runs out by itself");
            }
            Outcome::Unavailable
        }
    }
}

async fn reread(flow: &Flow, id: &str) -> Outcome {
    let key = id.to_string();
    match flow.store.call(move |s| s.session(&key)).await {
        Ok(Some(s)) => Outcome::Superseded(Box::new(s)),
        Ok(None) => Outcome::Revoked,
        Err(_) => Outcome::Unavailable,
    }
}

/// The background refresher: each second, lease the sessions due within
/// the refresh margin, at most `lwa.background_refreshes_per_second`, and
/// refresh them spread over the second. Off when that is 0.
pub async fn run(flow: Arc<Flow>, shutdown: CancellationToken) {
    let rate = flow.config.lwa.background_refreshes_per_second;
    if rate == 0 {
        return;
    }
    let tick = Duration::from_secs(1);
    // A failed background refresh waits up to this long (random) before
    // anyone tries it in the background again.
    let hold = 60;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let lease = new_lease(&flow);
        let due_by = lease.now + flow.config.lwa.refresh_margin_secs;
        let batch_lease = lease.clone();
        let batch = match flow
            .store
            .call(move |s| s.lease_due(due_by, &batch_lease, rate as usize))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "background refresh: cannot lease due sessions");
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        tracing::debug!(sessions = batch.len(), "background refresh");
        let mut running = tokio::task::JoinSet::new();
        for session in batch {
            let (flow, lease) = (flow.clone(), lease.clone());
            let start = rand::rng().random_range(0..tick.as_millis() as u64);
            running.spawn(async move {
                tokio::time::sleep(Duration::from_millis(start)).await;
                // One try each: a failure waits for its back-off, not here.
                refresh_leased(&flow, &session, &lease, Duration::ZERO, hold).await
            });
        }
        // The next batch only after this one: a slow LWA slows the
        // background down instead of piling refreshes up.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { while running.join_next().await.is_some() {} } => {}
        }
    }
}
