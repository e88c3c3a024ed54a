//! The companion's limits, revocation and login hygiene, each written as
//! the attack or the misuse it stops, against the real service over HTTPS
//! (in-process on port 0) and `avs-sim lwa`, with the SQLite file read
//! read-only to show what was (not) stored.

use std::net::IpAddr;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::companion::*;

/// A device-like client whose connections come from `from` (any
/// 127.0.0.0/8 address works on loopback).
fn device_from(s: &Setup, from: &str) -> Device {
    let ip: IpAddr = from.parse().unwrap();
    Device {
        client: s.env.client_builder().local_address(ip).build().unwrap(),
        base: s.companion.base.clone(),
    }
}

/// POST a registration; (status, Retry-After, body).
async fn register_raw(d: &Device, dsn: &str) -> (u16, Option<u64>, Value) {
    let r = d
        .client
        .post(format!("{}/provision/regCode", d.base))
        .json(&json!({"productId": PRODUCT, "dsn": dsn}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, r.json().await.unwrap())
}

/// Register, log in through the stand-in, and return the session id once
/// it gets a token.
async fn link(s: &Setup, d: &Device, dsn: &str) -> String {
    let (_, session, login_url) = d.register_ok(dsn).await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    s.clock.advance(5);
    let (status, v) = d.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_gets_429_and_the_database_stops_growing() {
    let s = Setup::new(&[]).await;
    let d = s.device();
    let answers: Vec<_> = futures_util::stream::iter(0..200)
        .map(|n| {
            let d = &d;
            async move { register_raw(d, &format!("flood-{n}")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    println!("{ok} of 200 registrations from one address accepted");
    assert!(
        (10..=12).contains(&ok),
        "{ok} accepted, the limit is 10 a minute"
    );
    for (status, retry, v) in answers.iter().filter(|a| a.0 != 200) {
        assert_eq!(*status, 429, "{v}");
        assert_eq!(v["error"], "rate_limited", "{v}");
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .contains("Retry-After")
        );
        assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    }
    let after = s.db().await;
    assert_eq!(
        after.rows("sessions").len(),
        ok,
        "only accepted ones are stored"
    );
    for n in 0..50 {
        assert_eq!(register_raw(&d, &format!("more-{n}")).await.0, 429);
    }
    s.assert_db_unchanged(&after, "50 more registrations").await;
    // Another client is not affected.
    assert_eq!(
        register_raw(&device_from(&s, "127.0.0.2"), "0001").await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_serial_registered_from_many_addresses_is_limited_too() {
    let s = Setup::new(&[]).await;
    let mut statuses = Vec::new();
    for n in 2..10 {
        let d = device_from(&s, &format!("127.0.0.{n}"));
        statuses.push(register_raw(&d, "0001").await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
    assert_eq!(
        register_raw(&device_from(&s, "127.0.0.20"), "0002").await.0,
        200,
        "other serials are not affected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_registrations_are_capped_and_gone_once_they_expire() {
    let s = Setup::with_server_extra(&[], "\n[limits]\nmax_pending_sessions = 3\n").await;
    let d = s.device();
    for n in 0..3 {
        assert_eq!(register_raw(&d, &format!("cap-{n}")).await.0, 200);
    }
    let (status, retry, v) = register_raw(&d, "cap-3").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    assert!(retry.is_some());
    assert_eq!(s.db().await.rows("sessions").len(), 3);
    // The codes expire (600 s): the rows go at once, not a day later.
    s.clock.advance(601);
    assert_eq!(register_raw(&d, "cap-4").await.0, 200);
    let rows = s.db().await;
    assert_eq!(
        rows.rows("sessions").len(),
        1,
        "{:?}",
        rows.rows("sessions")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_codes_gets_429() {
    let s = Setup::new(&[]).await;
    let (code, _, login_url) = s.device().register_ok("0001").await;
    let guesser = Browser {
        client: s.env.client_builder().build().unwrap(),
    };
    let mut statuses = Vec::new();
    for n in 0..30 {
        let wrong = format!("{}{:04}", "WXYZ", 2345 + n).replace(['0', '1'], "2");
        let (status, _, headers) = guesser
            .get(&format!("{}/provision/{wrong}", s.companion.base))
            .await;
        if status == 429 {
            assert!(headers.contains_key("retry-after"));
        }
        statuses.push(status);
    }
    // 10 a minute: the first 10 wrong codes are answered, then 429 (a
    // slow machine may see one token refilled on the way).
    assert!(statuses[..10].iter().all(|&c| c == 404), "{statuses:?}");
    let limited = statuses[10..].iter().filter(|&&c| c == 429).count();
    assert!(limited >= 18, "{statuses:?}");
    assert!(
        statuses.iter().all(|&c| c == 404 || c == 429),
        "{statuses:?}"
    );
    // Over the limit, the right code is refused too, and the form as well.
    let (status, page, _) = guesser.get(&login_url).await;
    assert_eq!(status, 429, "{page}");
    assert!(page.contains("Too many wrong codes"));
    let (status, _, _) = guesser
        .get(&format!("{}/?code={code}", s.companion.base))
        .await;
    assert_eq!(status, 429);
    // The owner, elsewhere, is not locked out.
    let owner = Browser {
        client: s
            .env
            .client_builder()
            .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
            .build()
            .unwrap(),
    };
    assert_eq!(owner.get(&login_url).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewing_the_device_page_stores_nothing_only_the_button_does() {
    let s = Setup::new(&[]).await;
    let (_, _, login_url) = s.device().register_ok("0001").await;
    let before = s.db().await;
    let browser = s.browser();
    let mut page = String::new();
    for _ in 0..100 {
        let (status, p, headers) = browser.get(&login_url).await;
        assert_eq!(status, 200, "{p}");
        assert!(headers.get("set-cookie").is_none());
        page = p;
    }
    s.assert_db_unchanged(&before, "100 views of the device page")
        .await;
    browser.press_login(&press_url(&login_url, &page)).await;
    assert_eq!(s.db().await.rows("login_states").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_cookie_is_always_minted_never_adopted() {
    let s = Setup::new(&[]).await;
    let (_, _, login_url) = s.device().register_ok("0001").await;
    let browser = s.browser();
    let (_, page, _) = browser.get(&login_url).await;
    let chosen = "A".repeat(43);
    let r = s
        .env
        .client()
        .get(press_url(&login_url, &page))
        .header("cookie", format!("__Host-avs-login={chosen}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    let value = set
        .strip_prefix("__Host-avs-login=")
        .and_then(|v| v.split(';').next())
        .unwrap();
    assert_eq!(value.len(), 43, "{set}");
    assert_ne!(value, chosen, "the client's chosen value was adopted");
    let rows = s.db().await;
    assert!(
        !rows
            .rows("login_states")
            .iter()
            .flatten()
            .any(|c| c == &chosen),
        "the chosen value is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_finishing_after_the_code_expired_links_nothing() {
    let s = Setup::new(&[]).await;
    let d = s.device();
    let (_, session, login_url) = d.register_ok("0001").await;
    // Late in the code's life the user presses the button (the state is
    // good for 600 s from now, the code for 300 more)…
    s.clock.advance(300);
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    // …and comes back after the device was told its code expired.
    s.clock.advance(301);
    assert_eq!(d.poll_error(&session).await, "expired_token");
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("Code expired"), "{page}");
    assert_eq!(
        s.sim.counter("code_grants").await,
        0,
        "the code was not spent"
    );
    assert_eq!(d.poll_error(&session).await, "expired_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_gets_no_more_tokens() {
    let s = Setup::new(&[]).await;
    let d = s.device();
    let session = link(&s, &d, "0001").await;
    let (status, v) = d
        .post("/provision/revoke", json!({"sessionId": session}))
        .await;
    assert_eq!((status, &v), (200, &json!({})));
    let (status, v) = d.poll(&session).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("access_denied")),
        "{v}"
    );
    let rows = s.db().await;
    let row = &rows.rows("sessions")[0];
    assert!(row.contains(&"revoked".to_string()), "{row:?}");
    assert!(
        !rows
            .rows("sessions")
            .iter()
            .flatten()
            .any(|c| c.starts_with("Atzr")),
        "the refresh token is deleted"
    );
    let (status, v) = d
        .post("/provision/revoke", json!({"sessionId": "no-such-session"}))
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_session"))
    );
    let (status, v) = d.post("/provision/revoke", json!({})).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_retires_the_old_session_once_linked() {
    let s = Setup::new(&[]).await;
    let d = s.device();
    let old = link(&s, &d, "0001").await;
    // A copy of `old` stays somewhere (a backup, an SD card given away).
    let (_, new, login_url) = d.register_ok("0001").await;
    assert_eq!(d.poll(&old).await.0, 200, "not retired before the new link");
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    assert_eq!(browser.get(&back).await.0, 200);
    s.clock.advance(5);
    assert_eq!(d.poll(&new).await.0, 200);
    let (status, v) = d.poll(&old).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("access_denied")),
        "{v}"
    );
}

fn companion_cli(s: &Setup, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(support::bin("avs-companion"))
        .arg("--config")
        .arg(s.env.dir.path().join("companion.toml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_lists_and_revokes_sessions() {
    let s = Setup::new(&[]).await;
    let d = s.device();
    let one = link(&s, &d, "0001").await;
    let two = link(&s, &d, "0002").await;
    let (ok, list, err) = tokio::task::block_in_place(|| companion_cli(&s, &["sessions", "list"]));
    assert!(ok, "{err}");
    println!("{list}");
    assert!(list.contains(PRODUCT) && list.contains("0001") && list.contains("linked"));
    assert!(list.contains("2 session(s)"), "{list}");
    for secret in [&one, &two] {
        assert!(!list.contains(secret.as_str()), "a session id is shown");
        assert!(
            !list.contains(&secret[..8]),
            "part of a session id is shown"
        );
    }
    assert!(!list.contains("Atz"), "a token is shown");

    let (ok, out, err) =
        tokio::task::block_in_place(|| companion_cli(&s, &["sessions", "revoke", PRODUCT, "0001"]));
    assert!(ok, "{err}");
    assert!(out.contains("revoked 1"), "{out}");
    assert_eq!(d.poll_error(&one).await, "access_denied");
    assert_eq!(d.poll(&two).await.0, 200, "other devices carry on");

    let short = list
        .lines()
        .find(|l| l.contains("0002"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let (ok, _, err) = tokio::task::block_in_place(|| {
        companion_cli(&s, &["sessions", "revoke", "--id", &short[..6]])
    });
    assert!(ok, "{err}");
    assert_eq!(d.poll_error(&two).await, "access_denied");
    let (ok, _, err) =
        tokio::task::block_in_place(|| companion_cli(&s, &["sessions", "revoke", PRODUCT, "0001"]));
    assert!(!ok && err.contains("no pending or linked session"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_answer_from_the_token_endpoint_is_refused_unread() {
    let env = Env::new();
    // A hostile token endpoint answering 8 MiB.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let tls = https::server_config(&env.cert_file, &env.key_file, None).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(https::serve(listener, tls, stop.clone(), |_req, _peer| {
        let mut body = b"{\"access_token\":\"".to_vec();
        body.resize(8 << 20, b'A');
        async move { http::Response::new(http_body_util::Full::new(Bytes::from(body))) }
    }));
    let config = env.companion_config(&env.companion_toml(
        "127.0.0.1:8443",
        "https://127.0.0.1:8443/authresponse",
        &base,
        "",
    ));
    let lwa =
        avs_companion::lwa_client::LwaClient::new(&config, kit::secret::Secret::new("secret"))
            .unwrap();
    let err = lwa
        .exchange_code("code", &kit::secret::Secret::new("verifier"))
        .await
        .expect_err("an 8 MiB answer was accepted");
    assert!(err.to_string().contains("larger than 65536 bytes"), "{err}");
    stop.cancel();
    let _ = served.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_without_a_length_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new();
    // HTTP/1.1 with no Content-Length: the body runs until the server
    // closes, and this one never does on its own.
    let mut tls = (*https::server_config(&env.cert_file, &env.key_file, None).unwrap()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(tcp).await.unwrap();
        let mut head = vec![0u8; 4096];
        let _ = s.read(&mut head).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"access_token\":\"")
            .await
            .unwrap();
        let chunk = vec![b'A'; 16 * 1024];
        // At most 64 MiB, so a broken client cannot keep this test forever.
        for _ in 0..4096 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });
    let config = env.companion_config(&env.companion_toml(
        "127.0.0.1:8443",
        "https://127.0.0.1:8443/authresponse",
        &base,
        "",
    ));
    let lwa =
        avs_companion::lwa_client::LwaClient::new(&config, kit::secret::Secret::new("secret"))
            .unwrap();
    let err = lwa
        .exchange_code("code", &kit::secret::Secret::new("verifier"))
        .await
        .expect_err("an endless answer was accepted");
    assert!(err.to_string().contains("larger than 65536 bytes"), "{err}");
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the client kept reading")
        .unwrap();
    let total = sent.load(std::sync::atomic::Ordering::SeqCst);
    // Well under the 64 MiB on offer, with room for the kernel's socket buffers.
    assert!(
        total < 32 << 20,
        "the client read {total} bytes before stopping"
    );
}
