//! HTTP side of code-based linking at the LWA stand-in:
//! `POST /auth/o2/create/codepair`, the user's pages under `/code` (enter
//! the code, then Allow or Deny), and `/_sim/cbl` for tests. The
//! device-code grant itself is answered from the token endpoint in
//! `routes.rs` through [`device_grant`].

use std::collections::HashMap;

use http::header;
use http::{Method, StatusCode};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::cbl::Cbl;
use super::routes::Shared;
use super::state::LwaError;
use https::http::{self as h, Resp};
use https::page::{escape, layout};

/// Route a code-based-linking request; the request back if it is not one.
pub async fn handle(req: Request<Incoming>, shared: &Shared) -> Result<Resp, Request<Incoming>> {
    let path = req.uri().path().to_string();
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::POST, "/auth/o2/create/codepair") => codepair(req, shared).await,
        (Method::GET, "/code") => enter_page(None),
        (Method::POST, "/code") => consent_page(req, shared).await,
        (Method::POST, "/code/consent") => decision(req, shared).await,
        (Method::GET, "/_sim/cbl") => h::json(StatusCode::OK, &shared.cbl().report()),
        (Method::POST, "/_sim/cbl/slow_down") => {
            let body = match h::read_body(req).await {
                Ok(b) => b,
                Err(resp) => return Ok(resp),
            };
            let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
            let n = v.get("count").and_then(Value::as_u64).unwrap_or(1);
            let mut cbl = shared.cbl();
            cbl.slow_down_next = u32::try_from(n).unwrap_or(u32::MAX);
            h::json(
                StatusCode::OK,
                &json!({"slow_down_next": cbl.slow_down_next}),
            )
        }
        _ => return Err(req),
    })
}

/// The device-code grant (`grant_type=device_code`): no client secret (the
/// device has none); the device code names the client.
pub fn device_grant(shared: &Shared, form: &HashMap<String, String>) -> Result<Value, LwaError> {
    let mut st = shared.lock();
    let now = st.now();
    let (family, grant) = shared.cbl().poll(form, now)?;
    Ok(st.issue(family, grant))
}

/// A refresh by the code-based-linking client: `client_id` of that client
/// and no secret, as the device holds none.
pub fn is_public_refresh(shared: &Shared, form: &HashMap<String, String>, basic: bool) -> bool {
    !basic
        && form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && !form.contains_key("client_secret")
        && form
            .get("client_id")
            .is_some_and(|c| shared.cbl().rules.client_id.as_deref() == Some(c.as_str()))
}

async fn codepair(req: Request<Incoming>, shared: &Shared) -> Resp {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_string());
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = match h::read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let (now, web_client) = {
        let mut st = shared.lock();
        if st.fail_next > 0 {
            st.fail_next -= 1;
            st.counters.injected_failures += 1;
            let status =
                StatusCode::from_u16(st.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return h::json(
                status,
                &json!({"error": "server_error", "error_description": "injected failure (avs-sim)"}),
            );
        }
        (st.now(), st.rules.client_id.clone())
    };
    let result = if !form_type.starts_with("application/x-www-form-urlencoded") {
        Err(LwaError {
            status: 400,
            error: "invalid_request",
            description: "Content-Type must be application/x-www-form-urlencoded".into(),
        })
    } else {
        let (form, dup) = h::form_pairs(&body);
        match dup.first() {
            Some(k) => Err(LwaError {
                status: 400,
                error: "invalid_request",
                description: format!("parameter {k} given more than once"),
            }),
            None => {
                let uri = format!("https://{host}/code");
                shared.cbl().create(&form, &web_client, &uri, now)
            }
        }
    };
    match result {
        Ok(v) => h::json(StatusCode::OK, &v),
        Err(e) => {
            tracing::info!(error = e.error, "code pair request refused");
            h::json(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
                &e.body(),
            )
        }
    }
}

fn enter_page(problem: Option<&str>) -> Resp {
    let note = problem
        .map(|p| format!("<p class=\"error\" id=\"problem\">{}</p>", escape(p)))
        .unwrap_or_default();
    h::html(
        if problem.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        },
        layout(
            "Amazon (stand-in): register a device",
            &format!(
                "<h1>Enter the code shown on your device</h1>{note}\
                 <form method=\"post\" action=\"/code\">\
                 <input id=\"code\" name=\"user_code\" autocomplete=\"off\" \
                 autocapitalize=\"characters\" required>\
                 <button id=\"continue\" type=\"submit\">Continue</button></form>"
            ),
        ),
    )
}

async fn form_of(req: Request<Incoming>) -> Result<HashMap<String, String>, Resp> {
    let body = h::read_body(req).await?;
    Ok(h::form_pairs(&body).0)
}

async fn consent_page(req: Request<Incoming>, shared: &Shared) -> Resp {
    let form = match form_of(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let typed = form.get("user_code").cloned().unwrap_or_default();
    let now = shared.lock().now();
    let Some((code, product, dsn)) = shared.cbl().find(&typed, now) else {
        return enter_page(Some(
            "That code is not valid or has expired. Check the code on your device.",
        ));
    };
    h::html(
        StatusCode::OK,
        layout(
            "Amazon (stand-in): allow access?",
            &format!(
                "<h1>Allow Alexa for this device?</h1>\
                 <dl><dt>Product</dt><dd id=\"product\">{p}</dd>\
                 <dt>Serial</dt><dd id=\"serial\">{d}</dd></dl>\
                 <p>avs-sim, a stand-in for Login with Amazon, asks whether this device \
                 may use Alexa on your behalf.</p>\
                 <form method=\"post\" action=\"/code/consent\">\
                 <input type=\"hidden\" name=\"user_code\" value=\"{c}\">\
                 <button id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\
                 <button id=\"deny\" class=\"secondary\" name=\"decision\" value=\"deny\">Deny</button>\
                 </form>",
                p = escape(&product),
                d = escape(&dsn),
                c = escape(&code)
            ),
        ),
    )
}

async fn decision(req: Request<Incoming>, shared: &Shared) -> Resp {
    let form = match form_of(req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let code = form.get("user_code").cloned().unwrap_or_default();
    let allow = form.get("decision").map(String::as_str) == Some("allow");
    let now = shared.lock().now();
    if !shared.cbl().decide(&code, allow, now) {
        return enter_page(Some("That code was already answered or has expired."));
    }
    let (title, text) = if allow {
        ("Device linked", "You may now return to your device.")
    } else {
        (
            "Access not allowed",
            "The device was not given access to your account.",
        )
    };
    h::html(
        StatusCode::OK,
        layout(
            title,
            &format!("<h1 id=\"result\">{title}</h1><p>{text}</p>"),
        ),
    )
}

impl Shared {
    /// The code pairs (locked after the state when both are needed).
    pub fn cbl(&self) -> std::sync::MutexGuard<'_, Cbl> {
        // A panic while holding the lock leaves plain data; keep serving.
        self.cbl.lock().unwrap_or_else(|p| p.into_inner())
    }
}
