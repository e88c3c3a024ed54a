//! Watching a connected link: the downchannel (reopened on malformed
//! bytes, which are reported to AVS, after a back-off that grows while it
//! keeps breaking), pings after idle time or a stalled exchange, and the
//! token.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ConnectError, End, Established, open_downchannel};
use crate::auth::{AuthHandle, AuthState};
use crate::avs::connection::Settings;
use crate::avs::inbound::{Inbound, PumpError};
use crate::avs::link::Link;
use kit::backoff::Backoff;

/// Watch a connected link until it ends, pinging it while idle.
pub(super) async fn watch_link(
    mut est: Established,
    settings: Arc<Settings>,
    auth: AuthHandle,
    inbound: mpsc::Sender<Inbound>,
) -> End {
    let mut status = auth.status();
    let mut opened = est.link.last_opened();
    // A server that breaks every downchannel it opens would otherwise have
    // avsd reopen it as fast as the round trip allows; a downchannel that
    // stayed good for `stable_after` starts the table again.
    let mut reopen = Backoff::avs_connect();
    let mut downchannel_since = Instant::now();
    loop {
        // Ping only a connection that has been idle for the interval.
        let idle_until = *opened.borrow_and_update() + settings.ping_interval;
        tokio::select! {
            r = &mut est.downchannel.done => {
                // Bytes we cannot parse are AVS's problem or ours, not the
                // connection's: reopen the downchannel on the same link.
                if let Ok(Err(e @ (PumpError::Multipart(_) | PumpError::ContentType(..)))) = &r
                    && est.link.closed_now().is_none()
                {
                    if downchannel_since.elapsed() >= settings.stable_after {
                        reopen.reset();
                    }
                    let ceiling = reopen.next_ceiling();
                    let delay = reopen.next_delay();
                    tracing::warn!(
                        "the downchannel sent malformed data ({e}); reopening it in {:.1} s \
                         (attempt {}, ceiling {} ms)",
                        delay.as_secs_f64(),
                        reopen.attempt(),
                        ceiling.as_millis()
                    );
                    // Reported like any malformed directive (§D.5), once a
                    // downchannel is open again (AVS takes no event without one).
                    let report = format!("the downchannel's multipart body is malformed: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        how = est.link.closed() => return End::Closed(how),
                    }
                    let reopened = match auth.access_token().await {
                        Ok(token) => {
                            match open_downchannel(&est.link, &token.value, &settings, &inbound)
                                .await
                            {
                                // A refused token is renewed, not retried.
                                Err(ConnectError::Forbidden(t)) => return End::Forbidden(t),
                                r => r.map_err(|e| e.to_string()),
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    match reopened {
                        Ok(rx) => {
                            est.downchannel = rx;
                            downchannel_since = Instant::now();
                            report_malformed(&inbound, report).await;
                            continue;
                        }
                        Err(e) => {
                            let reopen = format!("cannot reopen the downchannel: {e}");
                            return End::Malformed { reopen, report };
                        }
                    }
                }
                let why = match r {
                    Ok(Ok(())) => "the downchannel ended".to_string(),
                    Ok(Err(e)) => format!("the downchannel failed: {e}"),
                    Err(_) => "the downchannel reader stopped".to_string(),
                };
                // A GOAWAY ends the downchannel too; report it as such.
                return match est.link.closed_now() {
                    Some(how) => End::Closed(how),
                    None => End::Downchannel(why),
                };
            }
            how = est.link.closed() => return End::Closed(how),
            () = est.link.suspected() => {
                tracing::warn!("an exchange with AVS stalled; pinging the connection now");
                if let Err(end) = ping_once(&est.link, &settings, &auth).await {
                    return end;
                }
            }
            _ = tokio::time::sleep_until(idle_until) => {
                if opened.has_changed().unwrap_or(false) {
                    continue;
                }
                if let Err(end) = ping_once(&est.link, &settings, &auth).await {
                    return end;
                }
            }
            changed = status.changed() => {
                let lost = changed.is_err() || {
                    let s = status.borrow_and_update();
                    s.state != AuthState::Authorized && s.token_expires_at == 0
                };
                if lost {
                    return End::AuthLost;
                }
            }
        }
    }
}

/// Hand a malformed-downchannel report to the router, which sends
/// System.ExceptionEncountered.
pub(super) async fn report_malformed(inbound: &mpsc::Sender<Inbound>, reason: String) {
    let _ = inbound
        .send(Inbound::Malformed {
            raw: String::new(),
            reason,
        })
        .await;
}

async fn ping_once(link: &Link, settings: &Settings, auth: &AuthHandle) -> Result<(), End> {
    let token = auth.access_token().await.map_err(|_| End::AuthLost)?;
    match tokio::time::timeout(settings.ping_timeout, link.get("/ping", &token.value)).await {
        Ok(Ok(resp)) if resp.status().as_u16() == 204 => {
            tracing::debug!("ping answered");
            Ok(())
        }
        Ok(Ok(resp)) if resp.status().as_u16() == 403 => Err(End::Forbidden(token.value)),
        Ok(Ok(resp)) => Err(End::Ping(format!("ping answered HTTP {}", resp.status()))),
        Ok(Err(e)) => Err(End::Ping(format!("ping failed: {e}"))),
        Err(_) => Err(End::Ping(format!(
            "no ping answer within {:?}",
            settings.ping_timeout
        ))),
    }
}
