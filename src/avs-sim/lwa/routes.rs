//! HTTP side of the LWA stand-in: `/ap/oa` (consent), `/auth/o2/token`, and
//! the `/_sim/` control API for tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::state::{LwaError, SimState};
use https::http::{self as h, Resp};
use https::page::{escape, layout};

/// State shared by all connections.
pub struct Shared {
    /// The stand-in's state.
    pub state: Mutex<SimState>,
    /// Approve without showing the consent page.
    pub auto_approve: bool,
    /// Code-based linking's code pairs (see `cbl_routes.rs`).
    pub cbl: Mutex<super::cbl::Cbl>,
    /// Token calls being answered now.
    pub in_progress: AtomicU64,
}

/// Counts a token call as in progress until dropped.
struct InProgress<'a>(&'a AtomicU64);

impl<'a> InProgress<'a> {
    fn new(n: &'a AtomicU64) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Route one request.
pub async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Resp {
    let req = match super::cbl_routes::handle(req, &shared).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/ap/oa") => authorize(&req, &shared),
        (Method::POST, "/ap/oa/consent") => consent(req, &shared).await,
        (Method::POST, "/auth/o2/token") => token(req, &shared).await,
        (Method::GET, "/_sim/counters") => {
            let mut c = shared.lock().counters.clone();
            c.token_calls_in_progress = shared.in_progress.load(Ordering::SeqCst);
            h::json(StatusCode::OK, &json!(c))
        }
        (Method::GET, "/_sim/grants") => {
            let st = shared.lock();
            let r = &st.rotation;
            h::json(
                StatusCode::OK,
                &json!({
                    "mode": r.mode,
                    "reused_refresh_tokens": r.reused,
                    "reuse_revocations": r.revoked_for_reuse,
                    "grants": r.grants(),
                }),
            )
        }
        (Method::GET, "/_sim/issued") => {
            let t = shared.lock().issued_refresh_tokens().to_vec();
            h::json(StatusCode::OK, &json!({ "refresh_tokens": t }))
        }
        (Method::POST, p) if p.starts_with("/_sim/") => control(req, &shared).await,
        _ => h::plain(StatusCode::NOT_FOUND, "not found"),
    }
}

fn authorize(req: &Request<Incoming>, shared: &Shared) -> Resp {
    let q = h::query(req);
    let result = shared.lock().authorize(&q);
    match result {
        Err((None, e)) => h::html(
            StatusCode::BAD_REQUEST,
            layout(
                "Sign-in request refused",
                &format!(
                    "<h1 class=\"error\">We cannot sign you in</h1><p>{}: {}</p>",
                    e.error,
                    escape(&e.description)
                ),
            ),
        ),
        Err((Some((uri, state)), e)) => {
            tracing::info!(error = e.error, "authorize request refused");
            match error_redirect(&uri, &e, state.as_deref()) {
                Some(loc) => h::redirect(&loc),
                None => h::plain(StatusCode::BAD_REQUEST, "bad redirect_uri"),
            }
        }
        Ok(id) if shared.auto_approve => match shared.lock().decide(&id, true) {
            Some(loc) => h::redirect(&loc),
            None => h::plain(StatusCode::INTERNAL_SERVER_ERROR, "consent vanished"),
        },
        Ok(id) => {
            let st = shared.lock();
            let Some(p) = st.pending(&id) else {
                return h::plain(StatusCode::INTERNAL_SERVER_ERROR, "consent vanished");
            };
            let page = layout(
                "Amazon (stand-in): allow access?",
                &format!(
                    "<h1>Allow Alexa for this device?</h1>\
                     <dl><dt>Product</dt><dd>{p}</dd><dt>Serial</dt><dd>{d}</dd></dl>\
                     <p>avs-sim, a stand-in for Login with Amazon, asks whether this \
                     device may use Alexa on your behalf.</p>\
                     <form method=\"post\" action=\"/ap/oa/consent\">\
                     <input type=\"hidden\" name=\"request\" value=\"{id}\">\
                     <button id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\
                     <button id=\"deny\" class=\"secondary\" name=\"decision\" value=\"deny\">Deny</button>\
                     </form>",
                    p = escape(&p.product_id),
                    d = escape(&p.dsn),
                    id = escape(&id)
                ),
            );
            let mut resp = h::html(StatusCode::OK, page);
            // Browsers apply form-action to the redirect after the POST too,
            // and that redirect goes to the client's site.
            let csp = https::page::csp_with("'self' https:");
            if let Ok(v) = HeaderValue::from_str(&csp) {
                resp.headers_mut()
                    .insert(header::CONTENT_SECURITY_POLICY, v);
            }
            resp
        }
    }
}

fn error_redirect(uri: &str, e: &LwaError, state: Option<&str>) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", e.error);
        q.append_pair("error_description", &e.description);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
    }
    Some(url.to_string())
}

async fn consent(req: Request<Incoming>, shared: &Shared) -> Resp {
    let body = match h::read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let (form, _) = h::form_pairs(&body);
    let id = form.get("request").cloned().unwrap_or_default();
    let allow = form.get("decision").map(String::as_str) == Some("allow");
    match shared.lock().decide(&id, allow) {
        Some(loc) => h::redirect(&loc),
        None => h::html(
            StatusCode::BAD_REQUEST,
            layout(
                "Request expired",
                "<h1 class=\"error\">This sign-in request was already answered or has expired</h1>",
            ),
        ),
    }
}

async fn token(req: Request<Incoming>, shared: &Shared) -> Resp {
    let _counted = InProgress::new(&shared.in_progress);
    let delay = {
        let mut st = shared.lock();
        st.counters.token_calls += 1;
        if st.delay_next > 0 {
            st.delay_next -= 1;
            st.delay
        } else {
            Duration::ZERO
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    {
        let mut st = shared.lock();
        let scripted = st.fail_next > 0;
        if scripted || (st.fail_ratio > 0.0 && rand::random_bool(st.fail_ratio)) {
            st.fail_next = st.fail_next.saturating_sub(u32::from(scripted));
            st.counters.injected_failures += 1;
            let status =
                StatusCode::from_u16(st.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return h::json(
                status,
                &json!({"error": "server_error", "error_description": "injected failure (avs-sim)"}),
            );
        }
    }
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match h::read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let result = (|| {
        if !form_type.starts_with("application/x-www-form-urlencoded") {
            return Err(LwaError {
                status: 400,
                error: "invalid_request",
                description: "Content-Type must be application/x-www-form-urlencoded".into(),
            });
        }
        let (mut form, dup) = h::form_pairs(&body);
        if let Some(k) = dup.first() {
            return Err(LwaError {
                status: 400,
                error: "invalid_request",
                description: format!("parameter {k} given more than once"),
            });
        }
        if form.get("grant_type").map(String::as_str) == Some("device_code") {
            return super::cbl_routes::device_grant(shared, &form);
        }
        let mut st = shared.lock();
        let public = super::cbl_routes::is_public_refresh(shared, &form, basic.is_some());
        if !public {
            authenticate(&st, &mut form, basic.as_deref())?;
        }
        st.token(&form, public)
    })();
    let mut st = shared.lock();
    match result {
        Ok(v) => h::json(StatusCode::OK, &v),
        Err(e) => {
            *st.counters.errors.entry(e.error.to_string()).or_default() += 1;
            tracing::info!(error = e.error, "token request refused");
            h::json(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                &e.body(),
            )
        }
    }
}

/// Client authentication: HTTP Basic or `client_id` + `client_secret` form
/// fields, never both. A code exchange with a PKCE verifier may omit the
/// secret (a public client, as in the companion-app flow).
fn authenticate(
    st: &SimState,
    form: &mut HashMap<String, String>,
    basic: Option<&str>,
) -> Result<(), LwaError> {
    let client = |d: &str| LwaError {
        status: 401,
        error: "invalid_client",
        description: d.to_string(),
    };
    let (id, secret) = match basic {
        Some(b) => {
            if form.contains_key("client_secret") {
                return Err(LwaError {
                    status: 400,
                    error: "invalid_request",
                    description: "use one client authentication method, not two".into(),
                });
            }
            let encoded = b
                .strip_prefix("Basic ")
                .ok_or_else(|| client("bad Authorization"))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| client("bad Basic credentials"))?;
            let raw = String::from_utf8(raw).map_err(|_| client("bad Basic credentials"))?;
            let (id, secret) = raw
                .split_once(':')
                .ok_or_else(|| client("bad Basic credentials"))?;
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (Some(dec(id)), Some(dec(secret)))
        }
        None => (
            form.get("client_id").cloned(),
            form.get("client_secret").cloned(),
        ),
    };
    form.remove("client_secret");
    if id.as_deref() != Some(st.rules.client_id.as_str()) {
        return Err(client("unknown client_id"));
    }
    match secret {
        Some(s) => {
            let ok = https::ct_eq(s.as_bytes(), st.rules.client_secret.expose().as_bytes());
            if !ok {
                return Err(client("client authentication failed"));
            }
        }
        None => {
            let public = form.get("grant_type").map(String::as_str) == Some("authorization_code")
                && form.contains_key("code_verifier");
            if !public {
                return Err(client("client authentication required"));
            }
        }
    }
    Ok(())
}

async fn control(req: Request<Incoming>, shared: &Shared) -> Resp {
    let path = req.uri().path().to_string();
    let body = match h::read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return h::json(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
        }
    };
    let num = |k: &str, d: u64| v.get(k).and_then(Value::as_u64).unwrap_or(d);
    let mut st = shared.lock();
    let out = match path.as_str() {
        "/_sim/fail" => {
            // `ratio` alone sets the random share and scripts no count.
            let ratio = v.get("ratio").and_then(Value::as_f64);
            let count = num("count", if ratio.is_some() { 0 } else { 1 });
            st.fail_next = u32::try_from(count).unwrap_or(u32::MAX);
            st.fail_status = u16::try_from(num("status", 503)).unwrap_or(503);
            if let Some(r) = ratio {
                if !(0.0..=1.0).contains(&r) {
                    return h::json(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "ratio must be between 0 and 1"}),
                    );
                }
                st.fail_ratio = r;
            }
            json!({"fail_next": st.fail_next, "status": st.fail_status, "ratio": st.fail_ratio})
        }
        "/_sim/delay" => {
            st.delay_next = u32::try_from(num("count", 1)).unwrap_or(u32::MAX);
            st.delay = Duration::from_millis(num("millis", 1000));
            json!({"delay_next": st.delay_next})
        }
        "/_sim/revoke" => match st.revoke(v.get("refresh_token").and_then(Value::as_str)) {
            Ok(n) => json!({ "revoked": n }),
            Err(e) => return h::json(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
        },
        "/_sim/expire" => match st.expire_access_tokens() {
            Ok(n) => json!({ "expired": n }),
            Err(e) => return h::json(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
        },
        "/_sim/advance" => {
            st.clock_offset += num("secs", 0);
            json!({ "clock_offset": st.clock_offset })
        }
        _ => return h::plain(StatusCode::NOT_FOUND, "unknown control"),
    };
    h::json(StatusCode::OK, &out)
}
