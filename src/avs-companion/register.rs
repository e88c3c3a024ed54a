//! `POST /provision/regCode`: a device asks for a registration code. Rate
//! limited per client address and per product and serial before anything
//! is stored, and capped in how many registrations may wait for a user.

use http::StatusCode;
use serde_json::{Value, json};

use super::device::{DeviceError, check_cert};
use super::flow::{Flow, new_reg_code, random_token};
use super::limits::client_key;
use super::store::{Session, Status};
use https::Peer;
use https::http::loggable;
use kit::secret::Secret;

/// `POST /provision/regCode`, from `peer`.
pub async fn register(flow: &Flow, body: &[u8], peer: &Peer) -> Result<Value, DeviceError> {
    let cert_names = &peer.cert_names;
    // Before anything is parsed or stored: a flood from one address costs
    // a hash-map lookup each.
    let client = client_key(peer.addr.ip());
    if let Err(wait) = flow.limits.registrations_per_address.take(&client) {
        return Err(DeviceError::limited(
            wait,
            "too many registrations from this address; retry after the time in Retry-After",
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| DeviceError::bad("invalid_request", "send JSON {\"productId\", \"dsn\"}"))?;
    // No control characters: these values end up in logs and pages.
    let field = |k: &str, max: usize| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control))
            .map(str::to_string)
            .ok_or_else(|| {
                DeviceError::bad(
                    "invalid_request",
                    format!(
                        "{k} must be a string of 1 to {max} characters without control characters"
                    ),
                )
            })
    };
    let product = field("productId", 384)?;
    let dsn = field("dsn", 128)?;
    check_cert(flow, cert_names, &product, &dsn)?;
    if !flow.config.allows(&product, &dsn) {
        tracing::warn!(product = %loggable(&product), dsn = %loggable(&dsn), "registration refused: product or DSN not in [products] of the config");
        return Err(DeviceError::new(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "this product id (or serial number) is not allowed by this companion service",
        ));
    }
    if let Err(wait) = flow
        .limits
        .registrations_per_device
        .take(&(product.clone(), dsn.clone()))
    {
        return Err(DeviceError::limited(
            wait,
            "too many registrations for this product id and serial; retry after the time in Retry-After",
        ));
    }
    let now = flow.now();
    let cap = flow.config.limits.max_pending_sessions;
    let pending = flow
        .store
        .call(move |s| {
            // Expired registrations leave as soon as anyone registers, not
            // only at the next periodic purge.
            s.purge(now)?;
            s.pending_count(now)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot count pending registrations");
            DeviceError::internal()
        })?;
    if pending >= cap {
        tracing::warn!(
            pending,
            "registration refused: limits.max_pending_sessions reached"
        );
        return Err(DeviceError::limited(
            std::time::Duration::from_secs(60),
            "too many registrations are waiting for a login; retry after the time in Retry-After",
        ));
    }
    let ttl = flow.config.timing.registration_ttl_secs;
    let interval = flow.config.timing.poll_interval_secs;
    // 40-bit codes collide rarely; a few tries make it certain.
    for _ in 0..8 {
        let code = new_reg_code();
        let session = Session {
            id: Secret::new(random_token(32)),
            reg_code: Some(code.clone()),
            product_id: product.clone(),
            dsn: dsn.clone(),
            reg_expires_at: flow.now() + ttl,
            status: Status::Pending,
            interval,
            last_poll_at: None,
            tokens: None,
            version: 0,
        };
        let id = session.id.clone();
        let created = flow
            .store
            .call(move |s| s.create_session(&session))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot store a registration");
                DeviceError::internal()
            })?;
        if created {
            tracing::info!(product = %loggable(&product), dsn = %loggable(&dsn), "device registered; waiting for the user");
            return Ok(json!({
                "regCode": code,
                "sessionId": id.expose(),
                "loginUrl": format!("{}/provision/{code}", flow.config.public_base()),
                "expiresIn": ttl,
                "interval": interval,
            }));
        }
    }
    Err(DeviceError::internal())
}
