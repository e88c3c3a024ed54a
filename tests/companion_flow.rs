//! The companion's whole flow over real HTTPS against `avs-sim lwa`, and
//! every bad path ending in a clear page or JSON error with nothing changed.

use serde_json::json;
use support::companion::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_with_a_redirect_following_cookie_keeping_client() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let (code, session, login_url) = device.register_ok("0001").await;
    assert_eq!(code.len(), 8);
    assert_eq!(login_url, format!("{}/provision/{code}", s.companion.base));
    assert_eq!(device.poll_error(&session).await, "authorization_pending");

    // A browser that follows redirects and keeps cookies, as a person's does.
    let browser = s
        .env
        .client_builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .unwrap();
    let page = browser.get(&login_url).send().await.unwrap();
    let headers = page.headers().clone();
    let page = page.text().await.unwrap();
    assert!(page.contains(PRODUCT) && page.contains("0001"), "{page}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers.get("set-cookie").is_none(),
        "viewing the device page sets no cookie (and stores nothing)"
    );
    assert_eq!(
        headers["strict-transport-security"], "max-age=31536000",
        "HSTS on every page"
    );
    let press = press_url(&login_url, &page);

    // The button: a fresh cookie and a redirect to LWA's consent page.
    let first = s.browser().client.get(&press).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let cookie = first.headers()["set-cookie"].to_str().unwrap();
    for part in [
        "__Host-avs-login=",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }

    let consent = browser.get(&press).send().await.unwrap();
    let consent_url = consent.url().to_string();
    let q = query_of(&consent_url);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["scope"], "alexa:all");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["redirect_uri"], s.redirect);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["state"].len() >= 22, "state carries at least 128 bits");
    let scope: serde_json::Value = serde_json::from_str(&q["scope_data"]).unwrap();
    assert_eq!(
        scope,
        json!({"alexa:all": {"productID": PRODUCT, "productInstanceAttributes": {"deviceSerialNumber": "0001"}}})
    );
    let consent = consent.text().await.unwrap();
    let request = attr_value(&consent, "name=\"request\" value=\"");
    let done = browser
        .post(format!("{}/ap/oa/consent", s.sim.base))
        .form(&[("request", request.as_str()), ("decision", "allow")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.url().path(), "/authresponse");
    assert_eq!(done.status(), 200);
    let result = done.text().await.unwrap();
    assert!(result.contains("Device linked"), "{result}");

    s.clock.advance(5);
    let (status, v) = device.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["token_type"], "bearer");
    let token = v["access_token"].as_str().unwrap();
    let claims =
        avs_sim::token::verify_access_token(&s.env.token_key, token, avs_sim::token::unix_now())
            .expect("the stand-in's token verifies");
    assert_eq!(claims.client_id, CLIENT_ID);
    let expires_in = v["expires_in"].as_u64().unwrap();
    assert!((3000..=3600).contains(&expires_in), "{expires_in}");
    assert!(v.get("refresh_token").is_none());

    // Asking again well before expiry: the cached token, no call to LWA.
    let (_, again) = device.poll(&session).await;
    assert_eq!(again["access_token"], v["access_token"]);
    assert_eq!(s.sim.counter("refresh_grants").await, 0);
    assert_eq!(s.sim.counter("code_grants").await, 1);
    // The registration code is single use.
    let (status, page, _) = s.browser().get(&login_url).await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("already been used"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_faster_than_the_interval_gets_slow_down() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let (_, session, _) = device.register_ok("0001").await;
    assert_eq!(device.poll_error(&session).await, "authorization_pending");
    assert_eq!(device.poll_error(&session).await, "slow_down");
    // The interval grew by 5 s: 5 s later is still too fast.
    s.clock.advance(5);
    assert_eq!(device.poll_error(&session).await, "slow_down");
    s.clock.advance(15);
    assert_eq!(device.poll_error(&session).await, "authorization_pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_tells_the_device_access_denied() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let (_, session, login_url) = device.register_ok("0001").await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, false).await;
    assert_eq!(query_of(&back)["error"], "access_denied");
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200);
    assert!(page.contains("Access not allowed"), "{page}");
    assert_eq!(device.poll_error(&session).await, "access_denied");
    assert_eq!(s.sim.counter("token_calls").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_state_values_are_refused_and_change_nothing() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let (_, session, login_url) = device.register_ok("0001").await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    let q = query_of(&back);
    let base = format!("{}/authresponse", s.companion.base);
    let before = s.db().await;
    assert_eq!(before.rows("login_states").len(), 1);

    // Missing state.
    let (status, page, _) = browser.get(&format!("{base}?code={}", q["code"])).await;
    assert_eq!(status, 400);
    assert!(page.contains("could not be checked"), "{page}");
    s.assert_db_unchanged(&before, "a missing state").await;
    // Wrong state.
    let (status, page, _) = browser
        .get(&format!(
            "{base}?code={}&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            q["code"]
        ))
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("already used"), "{page}");
    s.assert_db_unchanged(&before, "a wrong state").await;
    // The right state from another browser (no cookie).
    let other = s.browser();
    let (status, page, _) = other.get(&back).await;
    assert_eq!(status, 400);
    assert!(page.contains("another browser"), "{page}");
    s.assert_db_unchanged(&before, "the state from another browser")
        .await;
    // Nothing was used up: no code exchange, device still waiting.
    assert_eq!(s.sim.counter("token_calls").await, 0);
    assert_eq!(device.poll_error(&session).await, "authorization_pending");

    // The real browser still completes.
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Device linked"));
    // Reloading the success page (the same answer, state and code, in the
    // browser that signed in) says the device is linked, and uses nothing.
    let linked = s.db().await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Device linked") && page.contains("already used to link it"),
        "{page}"
    );
    assert!(!page.contains("Login with Amazon again"), "{page}");
    s.assert_db_unchanged(&linked, "a reloaded success page")
        .await;
    // Replayed from another browser, it is refused.
    let (status, page, _) = s.browser().get(&back).await;
    assert_eq!(status, 400);
    assert!(page.contains("already used"), "{page}");
    s.assert_db_unchanged(&linked, "a replayed state and code")
        .await;
    assert_eq!(s.sim.counter("token_calls").await, 1);
    s.clock.advance(5);
    let (status, _) = device.poll(&session).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_code_with_a_fresh_state_is_refused_and_changes_nothing() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let browser = s.browser();
    // A first login completes: its code C1 is used up at LWA.
    let (_, first, login_url) = device.register_ok("0001").await;
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    let used_code = query_of(&back)["code"].clone();
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    s.clock.advance(5);
    let (status, v) = device.poll(&first).await;
    assert_eq!(status, 200, "{v}");
    let first_token = v["access_token"].as_str().unwrap().to_string();

    // A second login in the same browser gives a fresh, valid state S2.
    let (second_code, second, login_url) = device.register_ok("0002").await;
    let consent = browser.open_device_page(&login_url).await;
    let fresh_state = query_of(&consent)["state"].clone();
    assert_eq!(device.poll_error(&second).await, "authorization_pending");
    let before = s.db().await;
    assert_eq!(before.rows("sessions").len(), 2);
    assert!(
        before
            .rows("login_states")
            .iter()
            .any(|r| r.contains(&fresh_state)),
        "S2 is stored"
    );

    // S2 with the old code: the state check passes, LWA refuses the code.
    let mut replay = url::Url::parse(&format!("{}/authresponse", s.companion.base)).unwrap();
    replay
        .query_pairs_mut()
        .append_pair("code", &used_code)
        .append_pair("state", &fresh_state);
    let (status, page, _) = browser.get(replay.as_str()).await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("Linking failed"), "{page}");
    assert!(page.contains("did not accept the sign-in"), "{page}");
    assert!(
        page.contains("Login with Amazon again"),
        "says what to do: {page}"
    );
    let counters = s.sim.get("counters").await;
    assert_eq!(counters["errors"]["invalid_grant"], 1, "{counters}");
    assert_eq!(counters["code_grants"], 1, "{counters}");

    // Nothing stored or changed: both sessions as they were; only S2 is
    // gone, because a state is single use.
    let after = s.db().await;
    assert_eq!(after.rows("sessions"), before.rows("sessions"));
    let without_s2: Vec<_> = before
        .rows("login_states")
        .iter()
        .filter(|r| !r.contains(&fresh_state))
        .cloned()
        .collect();
    assert_eq!(after.rows("login_states"), without_s2.as_slice());

    // The second registration still waits; the first still has its token.
    s.clock.advance(5);
    assert_eq!(device.poll_error(&second).await, "authorization_pending");
    let (status, v) = device.poll(&first).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["access_token"], first_token.as_str());

    // Doing what the page says links the second device.
    let consent = browser
        .open_device_page(&format!("{}/provision/{second_code}", s.companion.base))
        .await;
    let back = browser.consent(&consent, true).await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Device linked"), "{page}");
    s.clock.advance(5);
    assert_eq!(device.poll(&second).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_state_is_refused() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let (_, session, login_url) = device.register_ok("0001").await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    s.clock.advance(601);
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 400);
    assert!(page.contains("took too long"), "{page}");
    assert_eq!(s.sim.counter("token_calls").await, 0);
    assert_eq!(device.poll_error(&session).await, "expired_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_expired_codes_and_sessions() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let browser = s.browser();
    let empty = s.db().await;
    assert!(
        empty.counts().values().all(|n| *n == 0),
        "{:?}",
        empty.counts()
    );
    let (status, page, _) = browser
        .get(&format!("{}/provision/ABCDEFGH", s.companion.base))
        .await;
    assert_eq!(status, 404);
    assert!(page.contains("Code not found"), "{page}");
    s.assert_db_unchanged(&empty, "an unknown code").await;
    let (status, page, _) = browser
        .get(&format!("{}/provision/%3Cscript%3E", s.companion.base))
        .await;
    assert_eq!(status, 404);
    assert!(!page.contains("<script>"));
    s.assert_db_unchanged(&empty, "a code that cannot be one")
        .await;
    // A wrong code on the form: the form again, with what was typed kept
    // and the message tied to the field.
    let (status, page, _) = browser
        .get(&format!("{}/?code=abcd-efgh", s.companion.base))
        .await;
    assert_eq!(status, 404);
    assert!(
        page.contains("No device is waiting with this code"),
        "{page}"
    );
    assert!(page.contains("value=\"abcd-efgh\""), "{page}");
    assert!(
        page.contains("aria-invalid=\"true\" aria-describedby=\"code-error code-hint\"")
            && page.contains("id=\"code-error\""),
        "{page}"
    );
    let (status, page, _) = browser
        .get(&format!("{}/?code=%22%3E%3Cb%3Enope", s.companion.base))
        .await;
    assert_eq!(status, 400);
    assert!(page.contains("not a code"), "{page}");
    assert!(page.contains("value=\"&quot;&gt;&lt;b&gt;nope\""), "{page}");
    s.assert_db_unchanged(&empty, "the code form").await;

    let (code, session, login_url) = device.register_ok("0001").await;
    // A code a device waits with goes from the form to its page.
    let (status, _, headers) = browser
        .get(&format!(
            "{}/?code={}",
            s.companion.base,
            code.to_lowercase()
        ))
        .await;
    assert_eq!(status, 302);
    assert_eq!(headers["location"], format!("/provision/{code}"));
    s.clock.advance(601);
    let registered = s.db().await;
    assert_eq!(registered.rows("sessions").len(), 1);
    let (status, page, _) = browser.get(&login_url).await;
    assert_eq!(status, 410);
    assert!(page.contains("Code expired"), "{page}");
    s.assert_db_unchanged(&registered, "opening an expired code")
        .await;
    assert_eq!(device.poll_error(&session).await, "expired_token");
    s.assert_db_unchanged(&registered, "polling an expired registration")
        .await;
    assert_eq!(
        device.poll_error("no-such-session").await,
        "invalid_session"
    );
    s.assert_db_unchanged(&registered, "polling an unknown session")
        .await;
    let (status, v) = device.post("/provision/accessToken", json!({})).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_request"))
    );
    s.assert_db_unchanged(&registered, "polling without a session id")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_and_serials_not_allowed_are_refused() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let empty = s.db().await;
    assert_eq!(empty.rows("sessions").len(), 0);
    let (status, v) = device.register("someone-elses-product", "0001").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (403, Some("unauthorized_client"))
    );
    s.assert_db_unchanged(&empty, "a product that is not allowed")
        .await;
    let (status, _) = device.register("dsn-limited", "0002").await;
    assert_eq!(status, 403);
    s.assert_db_unchanged(&empty, "a serial number that is not allowed")
        .await;
    let (status, _) = device.register("dsn-limited", "0001").await;
    assert_eq!(status, 200);
    let one = s.db().await;
    assert_eq!(one.rows("sessions").len(), 1, "the allowed one is stored");
    let (status, v) = device
        .post("/provision/regCode", json!({"productId": PRODUCT}))
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_request"))
    );
    s.assert_db_unchanged(&one, "a registration without a DSN")
        .await;
}

/// A code is single-use (RFC 6749 §4.1.2, RFC 9700 §2.1.1): after an
/// ambiguous failure of the exchange it is not sent again; the login ends
/// with a page saying to sign in again, and a new login links the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_ends_that_login_and_a_new_login_links() {
    let s = Setup::new(&[]).await;
    let device = s.device();
    let (_, session, login_url) = device.register_ok("0001").await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    s.sim
        .control("fail", json!({"count": 1, "status": 503}))
        .await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 503, "{page}");
    assert!(
        page.contains("Linking failed") && page.contains("Login with Amazon again"),
        "{page}"
    );
    assert_eq!(s.sim.counter("injected_failures").await, 1);
    assert_eq!(
        s.sim.counter("token_calls").await,
        1,
        "the code was sent once, never retried"
    );
    assert_eq!(device.poll_error(&session).await, "authorization_pending");

    // The user presses the button again: a new state, a new code.
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Device linked"));
    assert_eq!(s.sim.counter("token_calls").await, 2);
    s.clock.advance(5);
    assert_eq!(device.poll(&session).await.0, 200);
}

/// Link a device and return its session id and first access token.
async fn linked(s: &Setup) -> (String, String) {
    let device = s.device();
    let (_, session, login_url) = device.register_ok("0001").await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    s.clock.advance(5);
    let (status, v) = device.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    (session, v["access_token"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_expiry_the_token_is_refreshed_with_back_off() {
    let s = Setup::new(&[]).await;
    let (session, first) = linked(&s).await;
    let device = s.device();
    // 3600 s tokens, 600 s margin: at +3001 s the token is within the margin.
    s.clock.advance(2990);
    let (_, v) = device.poll(&session).await;
    assert_eq!(
        v["access_token"],
        first.as_str(),
        "still outside the margin"
    );
    s.clock.advance(20);
    s.sim
        .control("fail", json!({"count": 2, "status": 500}))
        .await;
    let (status, v) = device.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    let second = v["access_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(s.sim.counter("refresh_grants").await, 1);
    assert_eq!(s.sim.counter("injected_failures").await, 2);
    // The rotated refresh token was stored: the next refresh works.
    s.clock.advance(3100);
    let (status, v) = device.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    assert_ne!(v["access_token"], second.as_str());
    assert_eq!(s.sim.counter("refresh_grants").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_on_refresh_ends_the_session() {
    let s = Setup::new(&[]).await;
    let (session, _) = linked(&s).await;
    let device = s.device();
    let revoked = s.sim.control("revoke", json!({})).await;
    assert_eq!(revoked["revoked"], 1);
    s.clock.advance(3100);
    assert_eq!(device.poll_error(&session).await, "access_denied");
    assert_eq!(device.poll_error(&session).await, "access_denied");
    let errors = s.sim.get("counters").await["errors"]["invalid_grant"].as_u64();
    assert_eq!(
        errors,
        Some(1),
        "one refresh attempt, then the session is over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_login_keeps_the_session() {
    let mut s = Setup::new(&[]).await;
    let device = s.device();
    let (_, session, login_url) = device.register_ok("0001").await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    let (status, _, _) = browser.get(&back).await;
    assert_eq!(status, 200);
    s.restart().await;
    let device = s.device();
    s.clock.advance(5);
    let (status, v) = device.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["access_token"].as_str().unwrap().starts_with("Atza|"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_waiting_for_the_user_keeps_the_registration() {
    let mut s = Setup::new(&[]).await;
    let (code, session, _) = s.device().register_ok("0001").await;
    s.restart().await;
    let device = s.device();
    assert_eq!(device.poll_error(&session).await, "authorization_pending");
    // The user opens the code's page on the restarted service (new port).
    let browser = s.browser();
    let consent = browser
        .open_device_page(&format!("{}/provision/{code}", s.companion.base))
        .await;
    let back = browser.consent(&consent, true).await;
    // LWA sends the browser to the URL registered before the restart.
    let back = back.replace(&s.redirect, &format!("{}/authresponse", s.companion.base));
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    s.clock.advance(5);
    assert_eq!(device.poll(&session).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_polls_near_expiry_refresh_once() {
    let s = Setup::new(&[]).await;
    let (session, first) = linked(&s).await;
    s.clock.advance(3100);
    // Hold the refresh at the stand-in so the polls overlap.
    s.sim
        .control("delay", json!({"count": 1, "millis": 300}))
        .await;
    let device = s.device();
    let (a, b, c) = tokio::join!(
        device.poll(&session),
        device.poll(&session),
        device.poll(&session)
    );
    let tokens: Vec<_> = [a, b, c]
        .into_iter()
        .map(|(status, v)| {
            assert_eq!(status, 200, "{v}");
            v["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        tokens.iter().all(|t| *t == tokens[0] && *t != first),
        "one new token for all"
    );
    assert_eq!(s.sim.counter("refresh_grants").await, 1);
    assert_eq!(
        s.sim.get("counters").await["errors"]["invalid_grant"].as_u64(),
        None
    );
}
