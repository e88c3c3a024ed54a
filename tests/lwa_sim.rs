//! `avs-sim lwa` enforces what LWA enforces, black-box over HTTPS.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};
use support::companion::*;

const REDIRECT: &str = "https://device.example:8443/authresponse";

/// Query overrides: a parameter and its value, or `None` to leave it out.
type Over<'a> = Vec<(&'a str, Option<&'a str>)>;

fn scope_data(product: &str, dsn: &str) -> String {
    json!({"alexa:all": {"productID": product, "productInstanceAttributes": {"deviceSerialNumber": dsn}}})
        .to_string()
}

fn authorize_url(base: &str, over: &[(&str, Option<&str>)]) -> String {
    let sd = scope_data("p1", "d1");
    let mut params: Vec<(&str, Option<&str>)> = vec![
        ("client_id", Some(CLIENT_ID)),
        ("scope", Some("alexa:all")),
        ("scope_data", Some(sd.as_str())),
        ("response_type", Some("code")),
        ("redirect_uri", Some(REDIRECT)),
        ("state", Some("st-1")),
    ];
    for (k, v) in over {
        match params.iter_mut().find(|(pk, _)| pk == k) {
            Some(p) => p.1 = *v,
            None => params.push((k, *v)),
        }
    }
    let mut url = url::Url::parse(&format!("{base}/ap/oa")).unwrap();
    for (k, v) in params {
        if let Some(v) = v {
            url.query_pairs_mut().append_pair(k, v);
        }
    }
    url.to_string()
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, String, Option<String>) {
    let r = c.get(url).send().await.unwrap();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), r.text().await.unwrap(), loc)
}

async fn token(
    env: &Env,
    sim: &Sim,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut req = env
        .client()
        .post(format!("{}/auth/o2/token", sim.base))
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// An authorization code from the auto-approving stand-in.
async fn code(env: &Env, sim: &Sim, extra: &[(&str, Option<&str>)]) -> String {
    let (status, _, loc) = get(&env.client(), &authorize_url(&sim.base, extra)).await;
    assert_eq!(status, 302);
    query_of(&loc.unwrap())["code"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_checks_client_redirect_type_scope_and_scope_data() {
    let env = Env::new();
    let sim = Sim::start(&env, REDIRECT, &[]).await;
    let c = env.client();
    // Untrusted client or return URL: a page, never a redirect.
    for over in [
        vec![("client_id", Some("amzn1.other"))],
        vec![(
            "redirect_uri",
            Some("https://device.example:8443/authresponse/"),
        )],
        vec![("redirect_uri", None)],
    ] {
        let (status, page, loc) = get(&c, &authorize_url(&sim.base, &over)).await;
        assert_eq!((status, loc), (400, None), "{over:?}: {page}");
    }
    let bad_sd = r#"{"alexa:all":{"productID":"p1"}}"#;
    let cases: Vec<(Over, &str)> = vec![
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (vec![("scope", Some("profile"))], "invalid_scope"),
        (vec![("scope_data", None)], "invalid_request"),
        (vec![("scope_data", Some("{not json"))], "invalid_request"),
        (vec![("scope_data", Some(bad_sd))], "invalid_request"),
        (
            vec![("code_challenge_method", Some("S256"))],
            "invalid_request",
        ),
        (
            vec![
                ("code_challenge", Some("short")),
                ("code_challenge_method", Some("S256")),
            ],
            "invalid_request",
        ),
    ];
    for (over, error) in cases {
        let (status, _, loc) = get(&c, &authorize_url(&sim.base, &over)).await;
        assert_eq!(status, 302, "{over:?}");
        let loc = loc.unwrap();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        let q = query_of(&loc);
        assert_eq!(
            (q["error"].as_str(), q["state"].as_str()),
            (error, "st-1"),
            "{over:?}"
        );
    }
    // A good request shows the consent page with both buttons.
    let (status, page, _) = get(&c, &authorize_url(&sim.base, &[])).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("id=\"allow\"") && page.contains("id=\"deny\""),
        "{page}"
    );
    assert!(page.contains("p1") && page.contains("d1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_deny_and_single_use_requests() {
    let env = Env::new();
    let sim = Sim::start(&env, REDIRECT, &[]).await;
    let browser = Browser {
        client: env.client(),
    };
    let url = authorize_url(&sim.base, &[]);
    let back = browser.consent(&url, false).await;
    let q = query_of(&back);
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st-1")
    );
    let back = browser.consent(&url, true).await;
    let q = query_of(&back);
    assert_eq!(q["scope"], "alexa:all");
    assert!(!q["code"].is_empty());
    // Answering the same consent request twice is refused.
    let (_, page, _) = get(&env.client(), &url).await;
    let request = attr_value(&page, "name=\"request\" value=\"");
    let consent = format!("{}/ap/oa/consent", sim.base);
    for expect in [302, 400] {
        let r = env
            .client()
            .post(&consent)
            .form(&[("request", request.as_str()), ("decision", "allow")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expect);
    }
    assert_eq!(sim.counter("allowed").await, 2);
    assert_eq!(sim.counter("denied").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_authenticates_the_client_and_checks_the_code() {
    let env = Env::new();
    let sim = Sim::start(&env, REDIRECT, &["--auto-approve"]).await;
    let secret = env.secret.clone();
    let grant = |code: &str| {
        vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("redirect_uri".to_string(), REDIRECT.to_string()),
            ("client_id".to_string(), CLIENT_ID.to_string()),
        ]
    };
    let with = |mut f: Vec<(String, String)>, extra: &[(&str, &str)]| {
        f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    };
    let send = |f: Vec<(String, String)>, basic: Option<(&'static str, String)>| {
        let env = &env;
        let sim = &sim;
        async move {
            let pairs: Vec<(&str, &str)> =
                f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match &basic {
                Some((id, s)) => token(env, sim, &pairs, Some((id, s.as_str()))).await,
                None => token(env, sim, &pairs, None).await,
            }
        }
    };

    let c = code(&env, &sim, &[]).await;
    let (st, v) = send(grant(&c), None).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("invalid_client")),
        "no secret"
    );
    let (st, v) = send(with(grant(&c), &[("client_secret", "wrong")]), None).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(v["error_description"].is_string());
    let (st, v) = send(
        with(grant(&c), &[("client_secret", &secret)]),
        Some((CLIENT_ID, secret.clone())),
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_request")),
        "two methods"
    );
    let mut other_redirect = grant(&c);
    other_redirect[2].1 = "https://elsewhere.example/authresponse".into();
    let (st, v) = send(with(other_redirect, &[("client_secret", &secret)]), None).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "redirect bound"
    );
    // HTTP Basic works, and the code is then used up.
    let (st, v) = send(grant(&c), Some((CLIENT_ID, secret.clone()))).await;
    assert_eq!(st, 200, "{v}");
    let access = v["access_token"].as_str().unwrap();
    assert!(access.starts_with("Atza|") && access.len() >= 350);
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert!(refresh.starts_with("Atzr|"));
    assert_eq!(
        (v["token_type"].as_str(), v["expires_in"].as_u64()),
        (Some("bearer"), Some(3600))
    );
    let (st, v) = send(with(grant(&c), &[("client_secret", &secret)]), None).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "replayed code"
    );
    // The replay revoked what the code gave (RFC 6749 §4.1.2).
    let rf = |t: &str| {
        vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), t.to_string()),
            ("client_id".to_string(), CLIENT_ID.to_string()),
            ("client_secret".to_string(), secret.clone()),
        ]
    };
    assert_eq!(send(rf(&refresh), None).await.1["error"], "invalid_grant");

    // Refresh tokens rotate: the old one dies, the new one works.
    let c = code(&env, &sim, &[]).await;
    let (_, v) = send(with(grant(&c), &[("client_secret", &secret)]), None).await;
    let r1 = v["refresh_token"].as_str().unwrap().to_string();
    let (st, v) = send(rf(&r1), None).await;
    assert_eq!(st, 200, "{v}");
    let r2 = v["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert_eq!(send(rf(&r1), None).await.1["error"], "invalid_grant");
    let mut no_secret = rf(&r2);
    no_secret.pop();
    assert_eq!(send(no_secret, None).await.0, 401);
    assert_eq!(send(rf(&r2), None).await.0, 200);

    // Codes expire.
    let c = code(&env, &sim, &[]).await;
    sim.control("advance", json!({"secs": 301})).await;
    let (st, v) = send(with(grant(&c), &[("client_secret", &secret)]), None).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "expired code"
    );

    let gt = |g: &str| {
        vec![
            ("grant_type".to_string(), g.to_string()),
            ("client_id".to_string(), CLIENT_ID.to_string()),
            ("client_secret".to_string(), secret.clone()),
        ]
    };
    assert_eq!(
        send(gt("password"), None).await.1["error"],
        "unsupported_grant_type"
    );
    assert_eq!(
        send(gt("device_code"), None).await.1["error"],
        "unauthorized_client"
    );
    let (st, v) = send(gt("authorization_code"), None).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_request")),
        "missing code"
    );
    let r = env
        .client()
        .post(format!("{}/auth/o2/token", sim.base))
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "JSON bodies are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_is_checked_when_a_challenge_was_sent() {
    let env = Env::new();
    let sim = Sim::start(&env, REDIRECT, &["--auto-approve"]).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let pkce = [
        ("code_challenge", Some(challenge.as_str())),
        ("code_challenge_method", Some("S256")),
    ];
    let secret = env.secret.clone();
    let form = |code: &str, v: Option<&str>| {
        let mut f: HashMap<&str, String> = HashMap::from([
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", REDIRECT.to_string()),
            ("client_id", CLIENT_ID.to_string()),
            ("client_secret", secret.clone()),
        ]);
        if let Some(v) = v {
            f.insert("code_verifier", v.to_string());
        }
        f
    };
    for (v, expect) in [
        (None, 400),
        (Some("wrong-verifier-wrong-verifier-wrong-verifier-x"), 400),
        (Some(verifier), 200),
    ] {
        let c = code(&env, &sim, &pkce).await;
        let f = form(&c, v);
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, body) = token(&env, &sim, &pairs, None).await;
        assert_eq!(st, expect, "{v:?}: {body}");
        if expect == 400 {
            assert_eq!(body["error"], "invalid_grant");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knobs_fail_and_delay_token_calls() {
    let env = Env::new();
    let sim = Sim::start(
        &env,
        REDIRECT,
        &["--auto-approve", "--token-lifetime", "120"],
    )
    .await;
    sim.control("fail", json!({"count": 2, "status": 500}))
        .await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    assert_eq!(
        token(&env, &sim, &form, Some((CLIENT_ID, &env.secret)))
            .await
            .0,
        500
    );
    assert_eq!(
        token(&env, &sim, &form, Some((CLIENT_ID, &env.secret)))
            .await
            .0,
        500
    );
    assert_eq!(
        token(&env, &sim, &form, Some((CLIENT_ID, &env.secret)))
            .await
            .0,
        400
    );
    sim.control("delay", json!({"count": 1, "millis": 300}))
        .await;
    let start = std::time::Instant::now();
    token(&env, &sim, &form, Some((CLIENT_ID, &env.secret))).await;
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(sim.counter("token_calls").await, 4);
    assert_eq!(sim.counter("injected_failures").await, 2);
    let c = code(&env, &sim, &[]).await;
    let (st, v) = token(
        &env,
        &sim,
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
        ],
        Some((CLIENT_ID, &env.secret)),
    )
    .await;
    assert_eq!((st, v["expires_in"].as_u64()), (200, Some(120)));
    let t = v["access_token"].as_str().unwrap();
    let now = avs_sim::token::unix_now();
    assert!(avs_sim::token::verify_access_token(&env.token_key, t, now).is_ok());
    assert!(avs_sim::token::verify_access_token(&env.token_key, t, now + 121).is_err());
}

#[tokio::test]
async fn refuses_to_start_without_a_readable_secret() {
    let env = Env::new();
    let out = tokio::process::Command::new(support::bin("avs-sim"))
        .args([
            "lwa",
            "--client-secret-file",
            "/nonexistent/secret",
            "--redirect-uri",
            REDIRECT,
        ])
        .arg("--tls-cert")
        .arg(&env.cert_file)
        .arg("--tls-key")
        .arg(&env.key_file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/secret"), "{err}");
}

/// A code exchange and then refreshes: the refresh tokens in the order LWA
/// issued them, and the last answer.
async fn grant_and_refresh(env: &Env, sim: &Sim, refreshes: usize) -> (Vec<String>, Value) {
    let c = code(env, sim, &[]).await;
    let auth = Some((CLIENT_ID, env.secret.as_str()));
    let (st, mut v) = token(
        env,
        sim,
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
        ],
        auth,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let mut issued = vec![v["refresh_token"].as_str().unwrap().to_string()];
    for _ in 0..refreshes {
        let old = issued.last().unwrap().clone();
        let (st, next) = refresh(env, sim, &old).await;
        assert_eq!(st, 200, "{next}");
        issued.push(next["refresh_token"].as_str().unwrap().to_string());
        v = next;
    }
    (issued, v)
}

async fn refresh(env: &Env, sim: &Sim, rt: &str) -> (u16, Value) {
    token(
        env,
        sim,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        Some((CLIENT_ID, env.secret.as_str())),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_rotation_revokes_the_grant_when_a_superseded_token_comes_back() {
    let env = Env::new();
    let sim = Sim::start(
        &env,
        REDIRECT,
        &["--auto-approve", "--rotate-refresh-tokens", "strict"],
    )
    .await;
    let (issued, last) = grant_and_refresh(&env, &sim, 2).await;
    assert_eq!(issued.len(), 3);
    assert_eq!(
        issued
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3,
        "every refresh hands out a new refresh token"
    );
    // Another grant, untouched by the reuse below.
    let (other, _) = grant_and_refresh(&env, &sim, 0).await;
    // The first token comes back (a leak, or two clients racing).
    let (st, v) = refresh(&env, &sim, &issued[0]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    assert!(
        v["error_description"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    // The whole grant is gone: its newest refresh token too…
    let (st, v) = refresh(&env, &sim, &issued[2]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    // …and its access token is on the list `avs-sim avs` reads.
    let claims = avs_sim::token::verify_access_token(
        &env.token_key,
        last["access_token"].as_str().unwrap(),
        avs_sim::token::unix_now(),
    )
    .unwrap();
    let list = avs_sim::token::revocation_list(&env.token_key_file);
    assert!(avs_sim::token::revoked(&list, &claims).is_some());
    // The other grant still refreshes.
    let (st, v) = refresh(&env, &sim, &other[0]).await;
    assert_eq!(st, 200, "{v}");
    // A second reuse is counted, the grant is not revoked twice.
    let (st, _) = refresh(&env, &sim, &issued[1]).await;
    assert_eq!(st, 400);
    let c = sim.get("counters").await;
    assert_eq!(c["reused_refresh_tokens"], 2, "{c}");
    assert_eq!(c["reuse_revocations"], 1, "{c}");
    assert_eq!(c["grants_revoked"], 1, "{c}");
    assert_eq!(c["refresh_grants"], 3, "{c}");
    let g = sim.get("grants").await;
    assert_eq!(g["mode"], "strict", "{g}");
    assert_eq!(g["reused_refresh_tokens"], 2, "{g}");
    let grants = g["grants"].as_object().unwrap();
    assert_eq!(grants.len(), 2, "{g}");
    let revoked: Vec<&Value> = grants
        .values()
        .filter(|s| s["revoked_for_reuse"] == true)
        .collect();
    assert_eq!(revoked.len(), 1, "{g}");
    assert_eq!(revoked[0]["refreshes"], 2, "{g}");
    assert!(revoked[0]["min_gap_ms"].is_u64(), "{g}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rotation_refuses_a_superseded_token_and_keeps_the_grant() {
    let env = Env::new();
    let sim = Sim::start(&env, REDIRECT, &["--auto-approve"]).await;
    let (issued, _) = grant_and_refresh(&env, &sim, 1).await;
    let (st, v) = refresh(&env, &sim, &issued[0]).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let (st, v) = refresh(&env, &sim, &issued[1]).await;
    assert_eq!(st, 200, "the grant lives on: {v}");
    let c = sim.get("counters").await;
    assert_eq!(
        (
            c["reused_refresh_tokens"].as_u64(),
            c["reuse_revocations"].as_u64()
        ),
        (Some(1), Some(0)),
        "{c}"
    );
    assert_eq!(sim.get("grants").await["mode"], "rotate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_ratio_fails_a_share_of_token_calls() {
    let env = Env::new();
    let sim = Sim::start(&env, REDIRECT, &["--auto-approve"]).await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    let auth = Some((CLIENT_ID, env.secret.as_str()));
    let r = env
        .client()
        .post(format!("{}/_sim/fail", sim.base))
        .json(&json!({"ratio": 1.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A ratio alone scripts no count.
    let v = sim.control("fail", json!({"ratio": 1.0})).await;
    assert_eq!(
        (v["fail_next"].as_u64(), v["ratio"].as_f64()),
        (Some(0), Some(1.0))
    );
    for _ in 0..3 {
        assert_eq!(token(&env, &sim, &form, auth).await.0, 503);
    }
    sim.control("fail", json!({"ratio": 0.5})).await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(token(&env, &sim, &form, auth).await.0);
    }
    // Both kinds within 40 calls (all alike: odds 2 in 2^40).
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&400), "{statuses:?}");
    let failed = statuses.iter().filter(|s| **s == 503).count() as u64;
    assert_eq!(sim.counter("injected_failures").await, 3 + failed);
    sim.control("fail", json!({"ratio": 0.0})).await;
    assert_eq!(token(&env, &sim, &form, auth).await.0, 400);
}
