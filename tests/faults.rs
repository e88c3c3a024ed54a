//! Nothing breaks avsd (issue 10): faults made for real against the real
//! binaries. A TCP proxy in this process sits between avsd and the AVS
//! stand-in and cuts (RST or FIN), black-holes, stalls and refuses
//! connections; the stand-in answers 503, 429 and 500 while avsd
//! reconnects; avsd is killed with SIGKILL during its login, right after
//! it is authorized, while connected and at random moments, and started
//! again on the same state directory; the companion is killed with SIGKILL
//! during a login and around token refreshes; the companion gets malformed
//! and oversized HTTP requests; and avsd's D-Bus object is fed calls that
//! make no sense. After each fault avsd is `connected` again
//! on exactly one connection, `Authorization.State` never left
//! `authorized`, no second login was needed, its session file and the
//! companion's database are whole, and it still answers on the bus.
//! `scripts/soak` runs these tests round after round for an hour.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use avsctl::proxy::{AuthorizationProxy, DialogProxy};
use serde_json::json;
use support::Daemon;
use support::companion::WAIT;
use support::faults::dns::DnsJail;
use support::faults::rig::{CONNECTION, RigOpts, STATE, rig, rig_with};
use support::faults::{Cut, Recorder};
use support::system::{AvsSim, World, auth_proxy, wait_connection, wait_state};

/// The delays avsd announced for its reconnect attempts ("next try in X s",
/// "reconnecting in X s"), in order.
fn retry_delays(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| {
            let rest = l
                .split("next try in ")
                .nth(1)
                .or_else(|| l.split("reconnecting in ").nth(1))?;
            rest.split(" s").next()?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_come_back_on_one_connection() {
    let r = rig().await;
    for (i, how) in [Cut::Reset, Cut::Close, Cut::Reset, Cut::Close]
        .into_iter()
        .enumerate()
    {
        let fault = format!("cut {} ({how:?})", i + 1);
        let mark = r.rec.len();
        let cut_at = Instant::now();
        r.proxy.cut_all(how);
        let back = r.assert_recovered(mark, &fault).await;
        eprintln!("{fault}: connected again after {:?}", back - cut_at);
    }
    let stats = r.avs.stats().await;
    assert_eq!(
        stats["connections"]["peak"], 1,
        "never two connections at once: {stats:#}"
    );
    // Four cuts in a row without a stable link: every retry stayed under
    // the back-off table's ceilings (250 ms, 1 s, 2 s, 4 s, ...).
    let delays = retry_delays(&r.avsd.log_text());
    assert!(!delays.is_empty(), "{}", r.avsd.log_text());
    assert_delays_under_ceilings(&delays);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avs_errors_while_reconnecting_are_retried_without_a_new_login() {
    let r = rig().await;
    // Each cut and each error is a failed attempt, and the back-off only
    // resets after a minute of stable link: six failures in a row here, so
    // the last delay may reach the sixth ceiling (16 s).
    let faults = [
        ("code=503&count=1&on=downchannel", 503, 1),
        ("code=429&count=1&on=downchannel", 429, 1),
        ("code=500&count=1&on=events", 500, 1),
    ];
    for (query, status, count) in faults {
        let fault = format!("cut, then AVS answers {status} x{count} ({query})");
        let before = r.avs.stats().await["rejections"].as_array().unwrap().len();
        r.avs.post(&format!("/status?{query}")).await;
        let mark = r.rec.len();
        r.proxy.cut_all(Cut::Reset);
        r.assert_recovered_within(mark, &fault, Duration::from_secs(40))
            .await;
        let stats = r.avs.stats().await;
        let rejected: Vec<u64> = stats["rejections"].as_array().unwrap()[before..]
            .iter()
            .map(|x| x["status"].as_u64().unwrap())
            .collect();
        assert_eq!(rejected, vec![status; count], "{fault}: {stats:#}");
        assert_eq!(stats["connections"]["peak"], 1, "{fault}: {stats:#}");
    }
    // No token was renewed for errors that are not about the token.
    let log = r.avsd.log_text();
    assert!(!log.contains("refused the access token"), "{log}");
    for status in ["503", "429"] {
        assert!(
            log.contains(&format!("the downchannel answered HTTP {status}")),
            "{log}"
        );
    }
}

/// How long the link-down test keeps the link down: 5 s, or
/// `AVSD_FAULTS_LINK_DOWN_SECS` (scripts/soak uses 60 s and more).
fn link_down_secs() -> u64 {
    std::env::var("AVSD_FAULTS_LINK_DOWN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// The back-off table's ceilings (250 ms, 1 s, 2 s, ... 64 s, then 64 s).
fn assert_delays_under_ceilings(delays: &[f64]) {
    let ceilings = [0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
    for (i, d) in delays.iter().enumerate() {
        assert!(*d <= ceilings[i.min(7)] + 0.01, "{delays:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_down_for_a_while_comes_back_within_the_back_off_bound() {
    let down = link_down_secs();
    let fault = format!("link down {down} s");
    let r = rig().await;
    let mark = r.rec.len();
    // The link goes down: the connection is reset and new ones are refused.
    r.proxy.refuse(true);
    r.proxy.cut_all(Cut::Reset);
    r.rec
        .wait_after(mark, CONNECTION, |v| v != "connected", WAIT)
        .await
        .expect("avsd noticed the cut");
    // The fault itself: a dead link for `down` seconds.
    tokio::time::sleep(Duration::from_secs(down)).await;
    let refused = r.proxy.refused();
    assert!(refused >= 2, "avsd tried only {refused} times in {down} s");
    r.proxy.refuse(false);
    let up_at = Instant::now();
    // After quick failures avsd may sleep up to a late ceiling (32 s after
    // six, 64 s at most).
    let back_within = Duration::from_secs(if down <= 5 { 40 } else { 75 });
    let back = r.assert_recovered_within(mark, &fault, back_within).await;
    let took = back - up_at;
    // Once the link is back, avsd is connected within the delay it was
    // sleeping (at most the longest it announced), plus the handshake.
    let delays = retry_delays(&r.avsd.log_text());
    assert_delays_under_ceilings(&delays);
    let bound = delays.iter().copied().fold(0.0, f64::max) + 2.0;
    eprintln!(
        "{fault}: {refused} refused tries, delays {delays:?}, \
         connected {took:?} after the link came back"
    );
    assert!(
        took.as_secs_f64() <= bound,
        "took {took:?}, bound {bound} s; log:\n{}",
        r.avsd.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_tls_handshake_is_given_up_and_retried() {
    let r = rig().await;
    let mark = r.rec.len();
    // New connections open but never answer the ClientHello.
    r.proxy.stall_new(true);
    r.proxy.cut_all(Cut::Reset);
    // avsd gives up a hanging attempt itself (its connect timeout, 10 s)
    // and closes that socket.
    r.proxy
        .wait_until(
            "avsd giving up a hanging handshake",
            Duration::from_secs(30),
            |p| p.black_closed_by_client() >= 1,
        )
        .await;
    r.proxy.stall_new(false);
    r.proxy.heal_black_holes();
    r.assert_recovered(mark, "hanging TLS handshake").await;
    // It said why (logged before it reconnected).
    assert!(
        r.avsd
            .log_text()
            .contains("cannot connect to AVS (attempt 2, next try in"),
        "{}",
        r.avsd.log_text()
    );
    assert!(
        r.avsd.log_text().contains("no answer within 10s"),
        "{}",
        r.avsd.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_dns_is_retried_until_it_answers_again() {
    let jail = DnsJail::new();
    let r = rig_with(RigOpts {
        host: "localhost",
        wrapper: jail.wrapper.clone(),
        ..RigOpts::default()
    })
    .await;
    let mark = r.rec.len();
    jail.resolve(false);
    r.proxy.cut_all(Cut::Reset);
    // avsd keeps trying, and says that the lookup is what fails.
    r.avsd
        .wait_log("DNS lookup of localhost failed", 3, Duration::from_secs(60))
        .await;
    assert_eq!(r.proxy.accepted(), 1, "no connection without an address");
    jail.resolve(true);
    r.assert_recovered(mark, "DNS failing").await;
    assert_delays_under_ceilings(&retry_delays(&r.avsd.log_text()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_found_by_the_ping() {
    let r = rig().await;
    let pings = r.avs.stats().await["pings"].as_u64().unwrap();
    r.avs.wait(&format!("pings={}", pings + 1)).await;
    let mark = r.rec.len();
    let holed_at = Instant::now();
    assert_eq!(r.proxy.black_hole_all(), 1);
    // Nothing is closed: avsd only learns from its unanswered ping (30 s),
    // and then uses a new connection.
    let back = r.assert_recovered_after_black_hole(mark).await;
    let took = back - holed_at;
    eprintln!("black hole: connected again after {took:?}");
    assert!(took >= Duration::from_secs(25), "noticed in {took:?}?");
    assert!(
        r.avsd.log_text().contains("no ping answer within"),
        "{}",
        r.avsd.log_text()
    );
    // avsd let go of the dead connection itself.
    r.proxy
        .wait_until("avsd closing the black-holed connection", WAIT, |p| {
            p.black_held_by_client() == 0
        })
        .await;
    assert_eq!(r.proxy.heal_black_holes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_under_a_stalled_event_is_pinged_at_once() {
    // Pings after 5 idle minutes, as by default: the idle ping alone would
    // find this black hole only after more than 5 minutes.
    let r = rig_with(RigOpts {
        ping_interval: 300,
        ..RigOpts::default()
    })
    .await;
    // The stand-in holds event answers back for 10 s, so the event avsd
    // sends below is still unanswered when the hole opens.
    r.avs.post("/delay?ms=10000&on=events").await;
    let unknown = json!({"directive": {"header": {"namespace": "Bogus", "name": "Thing",
        "messageId": "stalled-1"}, "payload": {}}});
    r.avs.push("", unknown).await;
    r.avsd.wait_log("cannot handle Bogus.Thing", 1, WAIT).await;
    let mark = r.rec.len();
    let holed_at = Instant::now();
    assert_eq!(r.proxy.black_hole_all(), 1);
    r.avs.post("/delay?ms=0&on=events").await;
    // No answer within 30 s, a ping at once, no answer to it within 30 s.
    let back = r
        .assert_recovered_after_black_hole_within(mark, Duration::from_secs(90))
        .await;
    eprintln!(
        "black hole under a stalled event: connected again after {:?}",
        back - holed_at
    );
    let log = r.avsd.log_text();
    assert!(
        log.contains("an exchange with AVS stalled; pinging the connection now")
            && log.contains("no ping answer within"),
        "{log}"
    );
}

// ---------------------------------------------------------------- process

/// The state directory's session file: present, whole JSON with the
/// fields avsd writes, mode 0600 in a 0700 directory, nothing set aside
/// as damaged. Returns it.
fn assert_session_whole(state: &Path, when: &str) -> serde_json::Value {
    let file = state.join("session.json");
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{when}: {}: {e}", file.display()));
    let session: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{when}: session.json is not whole JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    for key in ["companion_url", "product_id", "dsn", "session_id", "linked"] {
        assert!(
            session.get(key).is_some(),
            "{when}: no {key} in the session"
        );
    }
    assert!(
        !state.join("session.json.damaged").exists(),
        "{when}: a damaged session was set aside"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "{when}");
    assert_eq!(mode(state), 0o700, "{when}");
    session
}

/// SIGKILL, then wait until the process is gone.
fn kill_9(avsd: &mut Daemon) {
    avsd.signal("KILL");
    let status = avsd.wait_exit(WAIT).expect("avsd died");
    assert!(!status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_point_never_costs_a_second_login() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let config = world.avsd_config_with_avs(&avs, 600);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let start = || Daemon::start_ready_in(&world.bus, &config, &state);

    // 1. Killed while waiting for the user: the registration survives.
    let mut avsd = start();
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    let code = auth.user_code().await.unwrap();
    let session = assert_session_whole(&state, "waiting for the user");
    assert_eq!(session["linked"], false);
    kill_9(&mut avsd);
    let avsd = start();
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    assert_eq!(
        auth.user_code().await.unwrap(),
        code,
        "a restart started a new registration"
    );

    // 2. Killed right after the user consented, before or while avsd
    // fetches its first token: the next start picks the login up.
    world
        .log_in(&support::system::fresh(auth.inner(), "LoginUrl").await)
        .await;
    let mut avsd = avsd;
    kill_9(&mut avsd);
    assert_session_whole(&state, "killed right after the consent");
    let logins = world.sim.counter("allowed").await;
    let code_grants = world.sim.counter("code_grants").await;
    assert_eq!((logins, code_grants), (1, 1));

    // 3. Killed as soon as it is authorized, and again once connected:
    // every start is authorized from the saved session alone.
    let mut connections = avs.stats().await["connections"]["total"].as_u64().unwrap();
    for round in 1..=6 {
        let when = format!("start {round}");
        let mut avsd = start();
        let conn = world.bus.connect().await;
        let auth = AuthorizationProxy::new(&conn).await.unwrap();
        match round % 3 {
            // Right after authorized (the connection may be on its way).
            1 => wait_state(&auth, "authorized", &avsd).await,
            // While connected.
            2 => {
                wait_state(&auth, "authorized", &avsd).await;
                let dialog = DialogProxy::new(&conn).await.unwrap();
                wait_connection(&dialog, "connected", &avsd).await;
                let stats = avs
                    .wait(&format!(
                        "current=1&connections={}&event=System.SynchronizeState",
                        connections + 1
                    ))
                    .await;
                assert_eq!(stats["open"][0]["synced"], true, "{when}: {stats:#}");
            }
            // At a random moment of the start: loading the session,
            // fetching a token, connecting.
            _ => {
                let ms = rand::random_range(0..1500);
                eprintln!("{when}: kill -9 {ms} ms after READY");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        kill_9(&mut avsd);
        let session = assert_session_whole(&state, &when);
        assert_eq!(session["linked"], true, "{when}");
        // The kernel closes the dead process's connection.
        let stats = avs.wait("current=0").await;
        connections = stats["connections"]["total"].as_u64().unwrap();
    }
    let avsd = start();
    let conn = world.bus.connect().await;
    let auth = AuthorizationProxy::new(&conn).await.unwrap();
    let dialog = DialogProxy::new(&conn).await.unwrap();
    wait_state(&auth, "authorized", &avsd).await;
    wait_connection(&dialog, "connected", &avsd).await;
    avs.wait("current=1").await;
    assert_session_whole(&state, "the last start");
    assert_eq!(
        (
            world.sim.counter("allowed").await,
            world.sim.counter("code_grants").await
        ),
        (1, 1),
        "a second login happened"
    );
    assert!(
        auth.token_expires_at().await.unwrap() > support::system::now(),
        "no valid token"
    );
}

/// `avs-companion` as a process on the world's address and database (the
/// in-process one stopped first), so it can be killed with SIGKILL.
async fn companion_process(world: &World) -> tokio::process::Child {
    let toml = world.env.companion_toml(
        &world.companion_addr.to_string(),
        &world.redirect,
        &world.sim.base,
        "",
    ) + "\n[timing]\npoll_interval_secs = 1\n";
    let path = world.env.dir.path().join("companion-process.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = tokio::process::Command::new(support::bin("avs-companion"));
    cmd.arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null());
    let (child, base, _log) = support::companion::spawn_listening(cmd).await;
    assert_eq!(base, format!("https://{}", world.companion_addr));
    child
}

async fn kill_9_companion(child: &mut tokio::process::Child) {
    child.start_kill().unwrap();
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the companion died")
        .unwrap();
}

/// Wait, through PropertiesChanged, until TokenExpiresAt is above `than`.
async fn wait_token_after(auth: &AuthorizationProxy<'_>, than: u64, avsd: &Daemon) -> u64 {
    use futures_util::StreamExt;
    let mut changes = auth.receive_token_expires_at_changed().await;
    let wait = async {
        loop {
            let now = auth.token_expires_at().await.unwrap();
            if now > than {
                return now;
            }
            changes.next().await.expect("avsd left the bus");
        }
    };
    match tokio::time::timeout(WAIT, wait).await {
        Ok(t) => t,
        Err(_) => panic!(
            "no token renewed past {than}; avsd log:\n{}",
            avsd.log_text()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lwa_failing_during_refreshes_costs_neither_login_nor_link() {
    // 12 s tokens renewed 6 s ahead: every renewal makes the companion
    // refresh at LWA (its own margin, 600 s, exceeds the lifetime).
    let r = rig_with(RigOpts {
        token_lifetime: 12,
        renew_before: 6,
        ..RigOpts::default()
    })
    .await;
    let mark = r.rec.len();
    let lwa = &r.world.sim;
    for (knob, setting) in [
        ("fail", json!({"count": 2, "status": 503})),
        ("fail", json!({"count": 2, "status": 500})),
        ("delay", json!({"count": 1, "millis": 2500})),
    ] {
        // Just after a renewal the next is seconds away: set the fault now.
        let now = r.auth.token_expires_at().await.unwrap();
        let renewed = wait_token_after(&r.auth, now, &r.avsd).await;
        let (calls, grants) = (
            lwa.counter("token_calls").await,
            lwa.counter("refresh_grants").await,
        );
        lwa.control(knob, setting.clone()).await;
        wait_token_after(&r.auth, renewed, &r.avsd).await;
        let what = format!("LWA {knob} {setting}");
        assert_eq!(lwa.counter("refresh_grants").await, grants + 1, "{what}");
        if knob == "fail" {
            assert_eq!(lwa.counter("token_calls").await, calls + 3, "{what}");
        }
        r.assert_stayed_authorized(&what).await;
    }
    assert_eq!(
        r.rec.values(CONNECTION, mark),
        Vec::<String>::new(),
        "the AVS connection stayed up"
    );
    assert_eq!(r.proxy.accepted(), 1, "on one connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_companion_mid_login_and_mid_refresh() {
    // Tokens live 16 s: avsd renews each after 8 s, and the companion
    // refreshes it at LWA every time.
    let mut world = World::new(16).await;
    world.stop_companion().await;
    let mut companion = companion_process(&world).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(600, true));
    let conn = world.bus.connect().await;
    let rec = Recorder::start(&conn).await;
    let auth = AuthorizationProxy::new(&conn).await.unwrap();
    wait_state(&auth, "waiting-for-user", &avsd).await;

    // Mid-login: avsd polls the companion every second; the companion is
    // gone for 2 s (the fault), then back on the same database.
    kill_9_companion(&mut companion).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    companion = companion_process(&world).await;
    world
        .log_in(&support::system::fresh(auth.inner(), "LoginUrl").await)
        .await;
    wait_state(&auth, "authorized", &avsd).await;

    // Mid-refresh: killed at a random moment of a renewal period, gone for
    // 2 s; the next token comes from the restarted companion and avsd
    // stays authorized.
    for round in 1..=2 {
        let after = Duration::from_millis(rand::random_range(0..8000));
        eprintln!("refresh {round}: kill -9 of the companion after {after:?}");
        tokio::time::sleep(after).await;
        let expires = auth.token_expires_at().await.unwrap();
        kill_9_companion(&mut companion).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        companion = companion_process(&world).await;
        wait_token_after(&auth, expires, &avsd).await;
        assert_eq!(auth.state().await.unwrap(), "authorized");
    }
    kill_9_companion(&mut companion).await;

    let states = rec.values(STATE, 0);
    let first_authorized = states.iter().position(|s| s == "authorized").unwrap();
    assert!(
        states[..first_authorized]
            .iter()
            .all(|s| s == "waiting-for-user"),
        "{states:?}"
    );
    assert!(
        states[first_authorized..].iter().all(|s| s == "authorized"),
        "State left authorized: {states:?}; avsd log:\n{}",
        avsd.log_text()
    );
    assert_eq!(world.sim.counter("allowed").await, 1, "a second login");
    // The companion's database survived every SIGKILL.
    let db = rusqlite::Connection::open_with_flags(
        &world.env.db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let sessions: i64 = db
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 1);
}

// -------------------------------------------------- bad HTTP, companion

/// A TLS connection to the world's companion (HTTP/1.1), for bytes no
/// HTTP client would send.
async fn raw_tls(world: &World) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let roots = https::load_roots(&world.env.ca_file).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(world.companion_addr)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Send `request` on a fresh connection; the status line of the answer
/// (empty when the companion closed without one).
async fn raw_exchange(world: &World, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = raw_tls(world).await;
    // The companion may answer and close before reading everything.
    let _ = tls.write_all(request).await;
    let _ = tls.flush().await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(2).any(|w| w == b"\r\n") {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the companion answered in time");
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_to_the_companion_get_clear_errors() {
    let world = World::new(3600).await;
    let json = |path: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    let big_body = [b"{\"productId\":\"".as_slice(), &[b'a'; 100_000], b"\"}"].concat();
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("a 1 MB header", huge_header.into_bytes(), &["431"]),
        ("500 headers", many_headers.into_bytes(), &["431", "400"]),
        ("garbage", b"\x00\x01GARBAGE\r\n\r\n".to_vec(), &["400"]),
        (
            "a bad request line",
            b"GET /\xff\xfe HTTP/9.9\r\n\r\n".to_vec(),
            &["400", "505"],
        ),
        (
            "a body past the limit",
            json("/provision/regCode", &big_body),
            &["413"],
        ),
        (
            "JSON that is not JSON",
            json("/provision/regCode", b"{]"),
            &["400"],
        ),
        (
            "wrong JSON types",
            json("/provision/regCode", br#"{"productId": 7, "dsn": []}"#),
            &["400"],
        ),
        (
            "a session id of 10 KB",
            json(
                "/provision/accessToken",
                format!(r#"{{"sessionId":"{}"}}"#, "s".repeat(10_000)).as_bytes(),
            ),
            &["400"],
        ),
        (
            "a 2 KB path",
            format!(
                "GET /provision/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                "Z".repeat(2000)
            )
            .into_bytes(),
            &["404", "400"],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, request, want) in cases {
        let status = raw_exchange(&world, &request).await;
        let code = status.split(' ').nth(1).unwrap_or("");
        if !want.contains(&code) {
            wrong.push(format!("{what}: {status:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Still serving: a device registers.
    let r = world
        .env
        .client()
        .post(format!(
            "https://{}/provision/regCode",
            world.companion_addr
        ))
        .json(&serde_json::json!({"productId": support::companion::PRODUCT, "dsn": "after-abuse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ------------------------------------------------------------------ D-Bus

const DEST: &str = "org.avsd.Avs1";
const PATH: &str = "/org/avsd/Avs1";
const AUTH: &str = "org.avsd.Avs1.Authorization";
const DIALOG: &str = "org.avsd.Avs1.Dialog";
const PROPS: &str = "org.freedesktop.DBus.Properties";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `dbus-send --print-reply` to avsd on `bus`.
fn dbus_send(bus: &support::Bus, args: &[&str]) -> std::process::Output {
    std::process::Command::new("dbus-send")
        .arg(format!("--bus={}", bus.address))
        .args(["--print-reply", "--reply-timeout=5000"])
        .arg(format!("--dest={DEST}"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonsense_over_d_bus_gets_errors_and_avsd_keeps_answering() {
    let bus = support::Bus::start();
    let mut avsd = Daemon::start_ready(&bus, support::MINIMAL_CONFIG);
    let auth = auth_proxy(&bus).await;
    let before = auth.state().await.unwrap();
    let mut wrong = Vec::new();

    // busctl: every one is refused (by avsd or, for what the policy does
    // not let through, by the bus), and avsd answers the next call.
    let big = "x".repeat(100_000);
    let cases: Vec<Vec<&str>> = vec![
        vec!["call", DEST, PATH, AUTH, "Frobnicate"],
        vec!["call", DEST, PATH, AUTH, "frobnicate", "s", "x"],
        vec!["call", DEST, PATH, "org.avsd.Avs1.Nope", "Tap"],
        vec!["call", DEST, "/org/avsd/Avs1/nope", DIALOG, "Tap"],
        vec!["call", DEST, "/", DIALOG, "Tap"],
        vec!["set-property", DEST, PATH, AUTH, "State", "s", "authorized"],
        vec![
            "set-property",
            DEST,
            PATH,
            AUTH,
            "TokenExpiresAt",
            "t",
            "99999999999",
        ],
        vec![
            "set-property",
            DEST,
            PATH,
            AUTH,
            "TokenExpiresAt",
            "s",
            "soon",
        ],
        vec![
            "set-property",
            DEST,
            PATH,
            DIALOG,
            "Connection",
            "s",
            "connected",
        ],
        vec!["set-property", DEST, PATH, DIALOG, "Nope", "s", "x"],
        vec!["get-property", DEST, PATH, AUTH, "Nope"],
        vec!["get-property", DEST, PATH, "org.avsd.Avs1.Nope", "State"],
        vec!["call", DEST, PATH, PROPS, "Get", "u", "1"],
        vec!["call", DEST, PATH, PROPS, "Get", "ss", AUTH, &big],
        vec!["call", DEST, PATH, PROPS, "GetAll", "s", &big],
        vec!["call", DEST, PATH, PROPS, "GetAll", "s", ""],
        vec![
            "call", DEST, PATH, PROPS, "Set", "ssv", AUTH, "State", "u", "3",
        ],
        vec![
            "call",
            DEST,
            PATH,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
            "s",
            "x",
        ],
    ];
    for args in &cases {
        let shown = args
            .iter()
            .map(|a| if a.len() > 40 { "<100 KB>" } else { a })
            .collect::<Vec<_>>()
            .join(" ");
        let out = bus.busctl(args);
        let err = text(&out.stderr);
        if out.status.success() {
            wrong.push(format!("busctl {shown} succeeded: {}", text(&out.stdout)));
        } else if err.contains("timed out") || err.trim().is_empty() {
            wrong.push(format!("busctl {shown}: {err}"));
        }
        let out = bus.busctl(&["get-property", DEST, PATH, AUTH, "State"]);
        assert!(
            out.status.success(),
            "after busctl {shown}: {}; avsd log:\n{}",
            text(&out.stderr),
            avsd.log_text()
        );
    }

    // dbus-send prints the error's name.
    let auth_iface = format!("string:{AUTH}");
    let dialog_iface = format!("string:{DIALOG}");
    let named: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec![PATH, "org.avsd.Avs1.Authorization.Frobnicate"],
            &["org.freedesktop.DBus.Error.UnknownMethod"],
        ),
        (
            vec![PATH, "org.freedesktop.DBus.Properties.Get", "int32:1"],
            // zbus's own Properties answers its generic error, with a
            // sentence naming the signature mismatch.
            &[
                "org.freedesktop.DBus.Error.InvalidArgs",
                "org.freedesktop.zbus.Error: Signature mismatch",
            ],
        ),
        (
            vec![
                PATH,
                "org.freedesktop.DBus.Properties.Get",
                &dialog_iface,
                "string:NoSuchProperty",
            ],
            &["org.freedesktop.DBus.Error.UnknownProperty"],
        ),
        (
            vec![
                PATH,
                "org.freedesktop.DBus.Properties.GetAll",
                "string:org.avsd.Avs1.Nope",
            ],
            &["org.freedesktop.DBus.Error.UnknownInterface"],
        ),
        // Set of a read-only property: refused by the bus policy for
        // anyone outside root and group avsd; for them (the policy lets
        // them set Speaker.Volume and the like) zbus answers
        // UnknownProperty, as it does for a property with no setter.
        (
            vec![
                PATH,
                "org.freedesktop.DBus.Properties.Set",
                &auth_iface,
                "string:State",
                "variant:string:authorized",
            ],
            &[
                "org.freedesktop.DBus.Error.AccessDenied",
                "org.freedesktop.DBus.Error.PropertyReadOnly",
                "org.freedesktop.DBus.Error.UnknownProperty",
            ],
        ),
        (
            vec!["/org/avsd/Avs1/nope", "org.avsd.Avs1.Dialog.Tap"],
            &["org.freedesktop.DBus.Error.UnknownObject"],
        ),
    ];
    for (args, names) in &named {
        let out = dbus_send(&bus, args);
        let err = text(&out.stderr);
        if out.status.success() || !names.iter().any(|n| err.contains(n)) {
            wrong.push(format!(
                "dbus-send {args:?}: want {names:?}, got {err}{}",
                text(&out.stdout)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "answered without the right error:\n{}\navsd log:\n{}",
        wrong.join("\n"),
        avsd.log_text()
    );

    // A burst: 4 connections with 50 concurrent calls each (under the
    // bus's limit of pending replies per connection), every call with the
    // wrong arguments followed by a good one.
    let mut calls = Vec::new();
    for _ in 0..4 {
        let conn = bus.connect().await;
        for i in 0..50u32 {
            let conn = conn.clone();
            calls.push(tokio::spawn(async move {
                let bad = conn
                    .call_method(Some(DEST), PATH, Some(PROPS), "Get", &(i, "junk"))
                    .await;
                let bad = match bad {
                    Err(zbus::Error::MethodError(name, ..)) => name.to_string(),
                    other => format!("not an error from avsd: {other:?}"),
                };
                let props = zbus::fdo::PropertiesProxy::builder(&conn)
                    .destination(DEST)
                    .unwrap()
                    .path(PATH)
                    .unwrap()
                    .build()
                    .await
                    .unwrap();
                let good = props
                    .get_all(zbus::names::InterfaceName::from_static_str_unchecked(AUTH))
                    .await
                    .map(|all| all.len());
                (bad, good.map_err(|e| e.to_string()))
            }));
        }
    }
    for c in calls {
        let (bad, good) = c.await.unwrap();
        assert!(bad.starts_with("org.freedesktop."), "{bad}");
        assert_eq!(good, Ok(7), "every Authorization property");
    }

    // Still up, still answering, nothing changed.
    let out = bus.busctl(&["get-property", DEST, PATH, DIALOG, "Connection"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "s \"disconnected\"");
    assert_eq!(auth_proxy(&bus).await.state().await.unwrap(), before);
    assert!(
        avsd.wait_exit(Duration::from_millis(100)).is_none(),
        "avsd exited; log:\n{}",
        avsd.log_text()
    );
    let log = avsd.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Slowloris: a client that finished the TLS handshake but never finishes
/// its request is dropped, so such clients cannot use up the companion's
/// file descriptors and lock everybody out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_companion_drops_requests_that_never_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let world = World::new(3600).await;
    let mut partial = raw_tls(&world).await;
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
        .await
        .unwrap();
    let mut idle = raw_tls(&world).await;
    let mut short = raw_tls(&world).await;
    short
        .write_all(
            b"POST /provision/regCode HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\"",
        )
        .await
        .unwrap();
    for (what, tls) in [
        ("half a header", &mut partial),
        ("nothing after the handshake", &mut idle),
        ("a body shorter than its Content-Length", &mut short),
    ] {
        let mut buf = [0u8; 256];
        // Closed (EOF, an error, or a 408 answer) once its time is up: 10 s
        // for headers and bodies, 30 s for a connection that says nothing.
        let r = tokio::time::timeout(Duration::from_secs(45), tls.read(&mut buf)).await;
        assert!(r.is_ok(), "{what}: the connection is still open after 45 s");
    }
}
