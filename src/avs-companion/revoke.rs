//! `POST /provision/revoke {"sessionId"}`: a device ends its own session
//! (`avsctl reset`), so a copy of the session id left on an old SD card or
//! in a backup gets no more tokens. Authenticated like the other device
//! routes: by the session id itself, and by the client certificate when
//! mutual TLS is on.

use http::StatusCode;
use serde_json::{Value, json};

use super::device::{DeviceError, check_cert};
use super::flow::Flow;
use super::store::Status;
use https::http::loggable;

/// End the session named in `body`: `{}` once it is revoked (also when it
/// had already ended), `invalid_session` when there is no such session.
pub async fn revoke(flow: &Flow, body: &[u8], cert_names: &[String]) -> Result<Value, DeviceError> {
    let bad = |error, what: &str| DeviceError::new(StatusCode::BAD_REQUEST, error, what);
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad("invalid_request", "send JSON {\"sessionId\"}"))?;
    let id = v
        .get("sessionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or_else(|| bad("invalid_request", "sessionId is missing"))?
        .to_string();
    let key = id.clone();
    let session = flow
        .store
        .call(move |s| s.session(&key))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read a session to revoke");
            internal()
        })?
        .ok_or_else(|| {
            bad(
                "invalid_session",
                "unknown session: nothing to revoke (it may have ended long ago)",
            )
        })?;
    check_cert(flow, cert_names, &session.product_id, &session.dsn)?;
    flow.token_cache.remove(&id);
    flow.store
        .call(move |s| s.end(&id, Status::Revoked))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot revoke a session");
            internal()
        })?;
    tracing::info!(
        product = %loggable(&session.product_id),
        dsn = %loggable(&session.dsn),
        was = session.status.name(),
        "session revoked by its device"
    );
    Ok(json!({}))
}

fn internal() -> DeviceError {
    DeviceError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the companion could not reach its database; try again shortly",
    )
}
