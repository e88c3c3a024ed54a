//! The browser side: the code form, the device page with the "Login with
//! Amazon" link, and `/authresponse` where LWA sends the user back.

use std::collections::HashMap;

use http::{HeaderMap, StatusCode};

use super::flow::{Flow, normalize_code, pkce_challenge, random_token};
use super::limits::client_key;
use super::pages;
use super::store::{LoginState, Session, Status, TakeState, Tokens};
use https::Peer;
use https::http::{self as h, Resp};
use kit::secret::Secret;

/// The cookie that binds a login `state` to this browser. `__Host-` makes
/// browsers insist on Secure, Path=/ and no Domain.
pub const COOKIE: &str = "__Host-avs-login";

fn fail(status: StatusCode, title: &str, what: &str, todo: &str) -> Resp {
    h::html(status, pages::failure(title, what, todo))
}

fn db_down() -> Resp {
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The service could not read or write its database.",
        "Try again in a minute; if it keeps happening, check the service log.",
    )
}

/// 429 for a browser that sent too many wrong codes.
fn too_many_codes(wait: std::time::Duration) -> Resp {
    h::too_many(
        super::limits::retry_after_secs(wait),
        pages::failure(
            "Too many wrong codes",
            "Too many codes that do not belong to any device were tried from this network.",
            "Wait a minute, then type the code shown on your device again.",
        ),
    )
}

/// `GET /`, or `GET /?code=…` from its own form, from `peer`. A code no
/// device waits with is answered on the form itself, with what was typed
/// still in the field, so it can be corrected.
pub async fn home(flow: &Flow, query: &HashMap<String, String>, peer: &Peer) -> Resp {
    let Some(raw) = query.get("code") else {
        return h::html(StatusCode::OK, pages::home(None, ""));
    };
    let client = client_key(peer.addr.ip());
    if let Err(wait) = flow.limits.wrong_codes_per_address.check(&client) {
        return too_many_codes(wait);
    }
    // Shown back as typed, but never more than a code's worth of it.
    let typed: String = raw.chars().take(16).collect();
    let (status, problem) = match normalize_code(raw) {
        Some(code) => {
            let lookup = code.clone();
            match flow.store.call(move |s| s.session_by_code(&lookup)).await {
                // Found (the device page tells an expired code apart).
                Ok(Some(_)) => return h::redirect(&format!("/provision/{code}")),
                Ok(None) => (
                    StatusCode::NOT_FOUND,
                    "No device is waiting with this code. Check it against your device, \
                     or start linking on the device again to get a new one.",
                ),
                Err(_) => return db_down(),
            }
        }
        None => (
            StatusCode::BAD_REQUEST,
            "That is not a code from a device: codes have 8 letters and digits, like ABCD-2345.",
        ),
    };
    if let Err(wait) = flow.limits.wrong_codes_per_address.take(&client) {
        return too_many_codes(wait);
    }
    h::html(status, pages::home(Some(problem), &typed))
}

/// The pending, unexpired session a code from a browser names, or the
/// page to answer with. Wrong codes count against the client's address
/// (RFC 8628 §5.1), and over the limit every code is answered with 429.
async fn session_for_code(
    flow: &Flow,
    raw_code: &str,
    peer: &Peer,
) -> Result<(String, Session), Resp> {
    let client = client_key(peer.addr.ip());
    if let Err(wait) = flow.limits.wrong_codes_per_address.check(&client) {
        return Err(too_many_codes(wait));
    }
    let gone = || {
        if let Err(wait) = flow.limits.wrong_codes_per_address.take(&client) {
            return too_many_codes(wait);
        }
        fail(
            StatusCode::NOT_FOUND,
            "Code not found",
            "This code is unknown or has already been used.",
            "Check the code on your device, or restart registration on the device to get a new one.",
        )
    };
    let Some(code) = normalize_code(raw_code) else {
        return Err(gone());
    };
    let lookup = code.clone();
    let session = match flow.store.call(move |s| s.session_by_code(&lookup)).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(gone()),
        Err(_) => return Err(db_down()),
    };
    if flow.now() >= session.reg_expires_at {
        return Err(fail(
            StatusCode::GONE,
            "Code expired",
            "This code is too old to use.",
            "Restart registration on the device to get a new code, then use it within a few minutes.",
        ));
    }
    Ok((code, session))
}

/// `GET /provision/{regCode}`: show the device and the "Login with Amazon"
/// button. Nothing is stored: a page view costs no row.
pub async fn device_page(flow: &Flow, raw_code: &str, peer: &Peer) -> Resp {
    match session_for_code(flow, raw_code, peer).await {
        Ok((code, session)) => {
            let page = pages::device(
                &code,
                &session.product_id,
                &session.dsn,
                &format!("/provision/{code}/login"),
            );
            h::html(StatusCode::OK, page)
        }
        Err(resp) => resp,
    }
}

/// `GET /provision/{regCode}/login`, the button: a fresh `state` bound to
/// a freshly minted cookie (never a value the client chose), stored, and a
/// redirect to LWA's consent page.
pub async fn start_login(flow: &Flow, raw_code: &str, peer: &Peer) -> Resp {
    let (_, session) = match session_for_code(flow, raw_code, peer).await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    let now = flow.now();
    let cookie = random_token(32);
    let ttl = flow.config.timing.state_ttl_secs;
    let login = LoginState {
        state: Secret::new(random_token(32)),
        session_id: session.id.clone(),
        cookie: Secret::new(cookie.clone()),
        verifier: Secret::new(random_token(32)),
        expires_at: now + ttl,
    };
    let url = match consent_url(flow, &session.product_id, &session.dsn, &login) {
        Some(u) => u,
        None => return db_down(),
    };
    let stored = login.clone();
    if flow
        .store
        .call(move |s| s.add_state(&stored))
        .await
        .is_err()
    {
        return db_down();
    }
    h::set_cookie(
        h::redirect(&url),
        &format!("{COOKIE}={cookie}; Max-Age={ttl}; Path=/; Secure; HttpOnly; SameSite=Lax"),
    )
}

/// The LWA consent URL (protocol §A.2) for this login.
fn consent_url(flow: &Flow, product: &str, dsn: &str, login: &LoginState) -> Option<String> {
    let lwa = &flow.config.lwa;
    let mut url = url::Url::parse(&lwa.authorize_url).ok()?;
    let scope_data = serde_json::json!({
        "alexa:all": {
            "productID": product,
            "productInstanceAttributes": { "deviceSerialNumber": dsn }
        }
    });
    url.query_pairs_mut()
        .append_pair("client_id", &lwa.client_id)
        .append_pair("scope", "alexa:all")
        .append_pair("scope_data", &scope_data.to_string())
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &lwa.redirect_uri)
        .append_pair("state", login.state.expose())
        .append_pair("code_challenge", &pkce_challenge(login.verifier.expose()))
        .append_pair("code_challenge_method", "S256");
    Some(url.to_string())
}

/// `GET /authresponse`: check `state`, then exchange the code.
pub async fn auth_response(
    flow: &Flow,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Resp {
    let again = "Go back to the device page (or type the code at this site's start page) and press Login with Amazon again.";
    let Some(state) = query.get("state").filter(|s| !s.is_empty()).cloned() else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Sign-in could not be checked",
            "Amazon's answer did not carry the check value this service sent, so it cannot be trusted.",
            again,
        );
    };
    let cookie = h::cookie(headers, COOKIE);
    let now = flow.now();
    let (spent, browser) = (state.clone(), cookie.clone());
    let taken = flow
        .store
        .call(move |s| s.take_state(&state, cookie.as_deref(), now))
        .await;
    let login = match taken {
        Ok(TakeState::Taken(l)) => l,
        Ok(TakeState::Unknown) => {
            // A reload of the success page, in the browser that signed in.
            if let Some((product, dsn)) = flow.recent_links.find(&spent, browser.as_deref(), now) {
                return h::html(StatusCode::OK, pages::success(&product, &dsn, true));
            }
            return fail(
                StatusCode::BAD_REQUEST,
                "Sign-in link already used",
                "This sign-in answer was already used, or it was not started here.",
                again,
            );
        }
        Ok(TakeState::Expired) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "Sign-in took too long",
                "The sign-in was started too long ago.",
                again,
            );
        }
        Ok(TakeState::WrongBrowser) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "Different browser",
                "This sign-in was started in another browser (or cookies are blocked), so it was not accepted.",
                "Open the device page in this browser, with cookies allowed, and sign in from there.",
            );
        }
        Err(_) => return db_down(),
    };
    let sid = login.session_id.expose().to_string();
    let key = sid.clone();
    let session = match flow.store.call(move |s| s.session(&key)).await {
        Ok(Some(s)) if s.status == Status::Pending && now < s.reg_expires_at => s,
        Ok(Some(s)) if s.status == Status::Pending => {
            // The device has been told its code expired (and may have
            // registered again): this login must not link it any more.
            tracing::info!(product = %h::loggable(&s.product_id), dsn = %h::loggable(&s.dsn), "sign-in finished after the registration expired; refused");
            return fail(
                StatusCode::GONE,
                "Code expired",
                "The device's code expired before the sign-in finished, so nothing was linked.",
                "Restart registration on the device to get a new code, then sign in within a few minutes.",
            );
        }
        Ok(_) => {
            return fail(
                StatusCode::CONFLICT,
                "Device already handled",
                "This device registration is no longer waiting for a sign-in.",
                "If the device does not work, restart registration on it.",
            );
        }
        Err(_) => return db_down(),
    };
    if let Some(error) = query.get("error") {
        if error == "access_denied" {
            let key = sid.clone();
            if flow
                .store
                .call(move |s| s.end(&key, Status::Denied))
                .await
                .is_err()
            {
                return db_down();
            }
            tracing::info!(product = %h::loggable(&session.product_id), dsn = %h::loggable(&session.dsn), "user declined consent");
            return fail(
                StatusCode::OK,
                "Access not allowed",
                "You chose not to let this device use Alexa. Nothing was linked.",
                "If that was a mistake, restart registration on the device.",
            );
        }
        tracing::warn!(error = %printable(error), "LWA returned an error to /authresponse");
        return fail(
            StatusCode::BAD_GATEWAY,
            "Amazon reported a problem",
            &format!("Amazon answered with the error \"{}\".", printable(error)),
            again,
        );
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty()).cloned() else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Sign-in incomplete",
            "Amazon's answer had neither a code nor an error.",
            again,
        );
    };
    // One try only: a code is single-use (RFC 6749 §4.1.2, RFC 9700
    // §2.1.1), so after an ambiguous failure (a timeout, a 5xx) LWA may
    // have spent it already. The user starts a new login instead.
    let granted = flow.lwa.exchange_code(&code, &login.verifier).await;
    let g = match granted {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "code exchange failed; the user must sign in again");
            let (status, what) = if e.is_transient() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Login with Amazon could not be reached, or did not answer clearly, so this sign-in was ended.",
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    "Amazon did not accept the sign-in (it may have expired).",
                )
            };
            return fail(status, "Linking failed", what, again);
        }
    };
    let now = flow.now();
    super::device::warn_if_short_lived(g.expires_in, flow.config.lwa.refresh_margin_secs);
    let tokens = Tokens {
        access: g.access,
        access_expires_at: now + g.expires_in,
        refresh: g.refresh,
    };
    match flow.store.call(move |s| s.link(&sid, &tokens)).await {
        Ok(true) => {
            tracing::info!(product = %h::loggable(&session.product_id), dsn = %h::loggable(&session.dsn), "device linked");
            if let Some(cookie) = &browser {
                let until = now + flow.config.timing.state_ttl_secs;
                flow.recent_links.remember(
                    &spent,
                    cookie,
                    &session.product_id,
                    &session.dsn,
                    until,
                );
            }
            h::html(
                StatusCode::OK,
                pages::success(&session.product_id, &session.dsn, false),
            )
        }
        Ok(false) => fail(
            StatusCode::CONFLICT,
            "Device already handled",
            "This device registration is no longer waiting for a sign-in.",
            "If the device does not work, restart registration on it.",
        ),
        Err(_) => db_down(),
    }
}

/// An error code from the query, cut to something safe to show and log.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}
