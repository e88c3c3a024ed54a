//! avsd gets, keeps and renews its access token through the real
//! `avs-companion` and `avs-sim lwa`, and shows it all on D-Bus.

use std::path::Path;

use futures_util::StreamExt;
use support::companion::WAIT;
use support::system::{World, auth_proxy, now, wait_state};
use support::{Daemon, Notify};

fn session_file(state: &Path) -> std::path::PathBuf {
    state.join("session.json")
}

/// Run the real `avsctl` against the world's bus.
async fn avsctl(world: &World, command: &str) -> (std::process::ExitStatus, String) {
    let out = tokio::process::Command::new(support::bin("avsctl"))
        .arg(command)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus.address)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A property read straight from avsd (busctl, no proxy cache).
fn get_property(world: &World, name: &str) -> String {
    let out = world.bus.busctl(&[
        "get-property",
        "org.avsd.Avs1",
        "/org/avsd/Avs1",
        "org.avsd.Avs1.Authorization",
        name,
    ]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_boot_login_then_kill_9_needs_no_new_login() {
    let world = World::new(3600).await;
    let state = world.env.dir.path().join("avsd-state");
    let notify = Notify::bind();
    let config = world.avsd_config(600, true);
    let avsd = Daemon::start_in(&world.bus, Some(&notify), &config, Some(&state), &[]);
    notify.wait_for("READY=1", WAIT);
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;

    // What a person reads with busctl, and what systemctl status shows.
    let out = world.bus.busctl(&[
        "get-property",
        "org.avsd.Avs1",
        "/org/avsd/Avs1",
        "org.avsd.Avs1.Authorization",
        "LoginUrl",
        "UserCode",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let url = lines
        .next()
        .unwrap()
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_string();
    let code = lines
        .next()
        .unwrap()
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_string();
    assert!(
        url.starts_with(&format!("https://{}/provision/", world.companion_addr)),
        "{url}"
    );
    assert!(!code.is_empty());
    // STATUS= is for everyone (`systemctl status`): no URL, no code.
    let status = notify.wait_for(
        "STATUS=Waiting for login: `sudo avsctl status` shows the URL and code",
        WAIT,
    );
    assert!(!status.is_empty());
    for line in &status {
        assert!(
            !line.contains(&code) && !line.contains(&url),
            "the login code in STATUS=: {line}"
        );
    }

    world.log_in(&url).await;
    wait_state(&auth, "authorized", &avsd).await;
    let expires = auth.token_expires_at().await.unwrap();
    assert!(expires > now() + 3000, "TokenExpiresAt {expires}");
    assert_eq!(auth.login_url().await.unwrap(), "");
    assert_eq!(auth.last_error().await.unwrap(), "");

    // The session survives on disk, private, and holds no token.
    use std::os::unix::fs::PermissionsExt;
    let file = session_file(&state);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let session_id = saved["session_id"].as_str().unwrap().to_string();
    assert!(!String::from_utf8_lossy(&std::fs::read(&file).unwrap()).contains("Atza|"));

    // kill -9, start again: authorized without anyone logging in.
    avsd.signal("KILL");
    let log_before = avsd.log_text();
    drop(avsd);
    let avsd = Daemon::start_ready_in(&world.bus, &config, &state);
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "authorized", &avsd).await;

    // avsctl tells a person the same.
    let out = std::process::Command::new(support::bin("avsctl"))
        .arg("status")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus.address)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("Authorization: authorized") && status.contains("expires in"),
        "{status}"
    );

    // No token or session id in any log line or property.
    let logs = format!("{log_before}\n{}", avsd.log_text());
    assert!(!logs.contains(&session_id), "session id logged");
    world.assert_no_secrets_in(&logs).await;
    let all = world
        .bus
        .busctl(&["introspect", "org.avsd.Avs1", "/org/avsd/Avs1"]);
    let props = String::from_utf8_lossy(&all.stdout);
    assert!(!props.contains(&session_id) && !props.contains("Atza|"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avsctl_login_waits_for_the_browser() {
    let world = World::new(3600).await;
    let state = world.env.dir.path().join("avsd-state");
    let config = world.avsd_config(600, false);
    let avsd = Daemon::start_ready_in(&world.bus, &config, &state);
    let auth = auth_proxy(&world.bus).await;
    assert_eq!(auth.state().await.unwrap(), "unregistered");

    let mut login = tokio::process::Command::new(support::bin("avsctl"))
        .arg("login")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus.address)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = login.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut url = String::new();
    let mut printed = String::new();
    while url.is_empty() {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap();
        let line =
            line.unwrap_or_else(|| panic!("avsctl ended early:\n{printed}\n{}", avsd.log_text()));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(u) = line.strip_prefix("To log in, open ") {
            url = u.to_string();
        }
    }
    world.log_in(&url).await;
    let status = tokio::time::timeout(WAIT, login.wait())
        .await
        .unwrap()
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        printed.push_str(&line);
        printed.push('\n');
    }
    assert!(status.success(), "{printed}");
    assert!(printed.contains('\u{2588}'), "no QR code:\n{printed}");
    assert!(printed.contains("Logged in"), "{printed}");
    // Our own proxy hears the change a moment after avsctl's did.
    wait_state(&auth, "authorized", &avsd).await;
    let expires = auth.token_expires_at().await.unwrap();

    // Logging in again says so and keeps the session: Start() would have
    // dropped it before answering, so a direct read after avsctl exits
    // would show it.
    let (status, printed) = avsctl(&world, "login").await;
    assert!(status.success(), "{printed}");
    assert!(printed.contains("already authorized"), "{printed}");
    assert_eq!(get_property(&world, "State"), "s \"authorized\"");
    assert_eq!(
        get_property(&world, "TokenExpiresAt"),
        format!("t {expires}")
    );
    assert!(session_file(&state).exists());
    assert!(!avsd.log_text().contains("session forgotten"));

    // avsctl reset forgets everything, on the bus and on disk.
    let (status, printed) = avsctl(&world, "reset").await;
    assert!(status.success(), "{printed}");
    wait_state(&auth, "unregistered", &avsd).await;
    assert_eq!(auth.token_expires_at().await.unwrap(), 0);
    assert_eq!(get_property(&world, "TokenExpiresAt"), "t 0");
    assert!(!session_file(&state).exists(), "session file left behind");
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_moves_expiry_forward_without_a_gap() {
    // Tokens live 6 s; avsd renews 2 s ahead. The companion's margin (600 s)
    // exceeds the lifetime, so it refreshes at LWA for every request.
    let world = World::new(6).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(2, true));
    let auth = world.log_in_daemon(&avsd).await;

    let mut changes = auth.receive_token_expires_at_changed().await;
    let mut previous = auth.token_expires_at().await.unwrap();
    let mut renewals = 0;
    while renewals < 3 {
        let change = tokio::time::timeout(WAIT, changes.next())
            .await
            .expect("TokenExpiresAt did not move")
            .unwrap();
        let next = change.get().await.unwrap();
        let seen_at = now_precise();
        // The stream starts with the current value.
        if next == previous {
            continue;
        }
        renewals += 1;
        assert!(next > previous, "expiry went from {previous} to {next}");
        // avsd states expiry in whole seconds rounded down, so the old
        // token was good until at least `previous`: the new one must be
        // seen strictly before that instant.
        assert!(
            seen_at < previous as f64,
            "renewed at {seen_at:.3}, not before the old token expired at {previous}"
        );
        assert_eq!(auth.state().await.unwrap(), "authorized");
        previous = next;
    }
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

/// Unix time with its fraction.
fn now_precise() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_outage_backs_off_and_recovers_by_itself() {
    let mut world = World::new(6).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(2, true));
    let auth = world.log_in_daemon(&avsd).await;

    world.stop_companion().await;
    // The token runs out while the companion is away: State says so, and
    // LastError says what is failing.
    wait_state(&auth, "error", &avsd).await;
    let err = auth.last_error().await.unwrap();
    assert!(
        err.contains("cannot reach the companion") && err.contains("retrying"),
        "{err}"
    );
    let retries = wait_for_retries(&auth, &avsd, 3, WAIT, |_| {}).await;
    assert_backoff_grows(&retries, &avsd);

    world.restart_companion().await;
    wait_state(&auth, "authorized", &avsd).await;
    assert_eq!(auth.last_error().await.unwrap(), "");
    assert!(auth.token_expires_at().await.unwrap() > now());
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_outage_keeps_a_valid_token_and_the_state() {
    // Tokens live 60 s; renewal starts half-way (renew_before is capped at
    // half the lifetime), leaving 30 s of valid token for the retries at
    // 1, 2, 4 and then 10 s ceilings.
    let mut world = World::new(60).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(30, true));
    let auth = world.log_in_daemon(&avsd).await;
    let expires = auth.token_expires_at().await.unwrap();

    world.stop_companion().await;
    // Renewal starts 30 s after the login; then up to 7 s of retries.
    let within = std::time::Duration::from_secs(30) + WAIT;
    let retries = wait_for_retries(&auth, &avsd, 3, within, |last_error| {
        // Each retry: still authorized with the token it holds, and
        // LastError says what is failing.
        assert!(
            last_error.is_empty() || last_error.contains("cannot reach the companion"),
            "{last_error}"
        );
    })
    .await;
    assert_backoff_grows(&retries, &avsd);
    assert_eq!(auth.state().await.unwrap(), "authorized");
    assert_eq!(auth.token_expires_at().await.unwrap(), expires);
    assert!(auth.last_error().await.unwrap().contains("retrying"));

    // The companion returns: the next retry renews, nobody does anything.
    world.restart_companion().await;
    let mut changes = auth.receive_token_expires_at_changed().await;
    let renewed = tokio::time::timeout(WAIT, async {
        loop {
            let next = auth.token_expires_at().await.unwrap();
            assert_eq!(auth.state().await.unwrap(), "authorized");
            if next != expires {
                return next;
            }
            changes.next().await.expect("avsd left the bus");
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no renewal after the companion came back:\n{}",
            avsd.log_text()
        )
    });
    assert!(renewed > expires, "{expires} -> {renewed}");
    assert_eq!(auth.last_error().await.unwrap(), "");
    assert!(!avsd.log_text().contains("access token expired"));
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

/// One failed companion call as avsd logs it.
#[derive(Debug)]
struct Retry {
    attempt: u64,
    delay_ms: u64,
    ceiling_s: u64,
}

/// Wait, woken by each LastError change (avsd announces every retry
/// there), until avsd has logged `n` retries, for at most `within`. On
/// every wake-up check that State and TokenExpiresAt have not moved and
/// hand LastError to `still`. Returns the retries logged so far.
async fn wait_for_retries(
    auth: &avsctl::proxy::AuthorizationProxy<'_>,
    avsd: &Daemon,
    n: usize,
    within: std::time::Duration,
    still: impl Fn(&str),
) -> Vec<Retry> {
    let state = auth.state().await.unwrap();
    let expires = auth.token_expires_at().await.unwrap();
    // Made once: a new stream starts with the current value, so making one
    // per pass would never wait.
    let mut changes = auth.receive_last_error_changed().await;
    let wait = async {
        loop {
            let found = retries(&avsd.log_text());
            assert_eq!(auth.state().await.unwrap(), state, "State moved");
            assert_eq!(
                auth.token_expires_at().await.unwrap(),
                expires,
                "TokenExpiresAt moved"
            );
            still(&auth.last_error().await.unwrap());
            if found.len() >= n {
                return found;
            }
            changes.next().await.expect("avsd left the bus");
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} retries; avsd log:\n{}", avsd.log_text()))
}

/// The first three retries are attempts 1, 2, 3 under ceilings that
/// grow 1, 2, 4 s, each delay within its ceiling.
fn assert_backoff_grows(retries: &[Retry], avsd: &Daemon) {
    let first: Vec<(u64, u64)> = retries
        .iter()
        .take(3)
        .map(|r| (r.attempt, r.ceiling_s))
        .collect();
    assert_eq!(
        first,
        [(1, 1), (2, 2), (3, 4)],
        "retries {retries:?}; avsd log:\n{}",
        avsd.log_text()
    );
    for r in retries.iter().take(3) {
        assert!(r.delay_ms <= r.ceiling_s * 1000, "{r:?}");
    }
}

/// Each retry from avsd's log: the "companion call failed (attempt N, …)"
/// warning and the "retrying in D ms (ceiling C s)" line after it.
fn retries(log: &str) -> Vec<Retry> {
    let mut out = Vec::new();
    let mut attempt = None;
    for line in log.lines() {
        if let Some(rest) = line.split("companion call failed (attempt ").nth(1) {
            attempt = rest.split(',').next().and_then(|a| a.parse().ok());
        } else if let Some(rest) = line.split("retrying in ").nth(1) {
            let Some((delay, rest)) = rest.split_once(" ms (ceiling ") else {
                continue;
            };
            let ceiling = rest.split(" s)").next().unwrap_or_default();
            if let (Some(attempt), Ok(delay_ms), Ok(ceiling_s)) =
                (attempt.take(), delay.parse(), ceiling.parse())
            {
                out.push(Retry {
                    attempt,
                    delay_ms,
                    ceiling_s,
                });
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_at_lwa_asks_the_user_to_log_in_again() {
    let world = World::new(6).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(2, true));
    let auth = world.log_in_daemon(&avsd).await;

    for token in world.sim.issued_refresh_tokens().await {
        world
            .sim
            .control("revoke", serde_json::json!({ "refresh_token": token }))
            .await;
    }
    wait_state(&auth, "error", &avsd).await;
    let err = auth.last_error().await.unwrap();
    assert!(err.contains("avsctl login"), "{err}");
    assert_eq!(auth.token_expires_at().await.unwrap(), 0);
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_session_file_means_a_fresh_registration() {
    let world = World::new(3600).await;
    let state = world.env.dir.path().join("avsd-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        session_file(&state),
        b"{\"companion_url\": \"https://x\", \"sess",
    )
    .unwrap();
    let avsd = Daemon::start_ready_in(&world.bus, &world.avsd_config(600, true), &state);
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    let log = avsd.log_text();
    assert!(
        log.contains("is damaged") && log.contains("registering again"),
        "{log}"
    );
    assert!(state.join("session.json.damaged").exists());
    // And the new registration is saved in its place.
    assert!(session_file(&state).exists());
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_registration_code_is_replaced_by_itself() {
    let mut world = World::new(3600).await;
    // Codes live 2 s (the config file's minimum is 60); avsd polls each second.
    world
        .restart_companion_with(|c| c.timing.registration_ttl_secs = 2)
        .await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(600, true));
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    let first = auth.user_code().await.unwrap();
    let first_url = auth.login_url().await.unwrap();
    assert!(!first.is_empty());

    let mut codes = auth.receive_user_code_changed().await;
    let second = tokio::time::timeout(WAIT, async {
        loop {
            let code = auth.user_code().await.unwrap();
            if !code.is_empty() && code != first {
                return code;
            }
            codes.next().await.expect("avsd left the bus");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no new code; avsd log:\n{}", avsd.log_text()));
    // Registered again, not stuck or failed: still waiting, a new URL, no error.
    assert_eq!(auth.state().await.unwrap(), "waiting-for-user");
    let url = auth.login_url().await.unwrap();
    assert!(url.ends_with(&second) && url != first_url, "{url}");
    assert_eq!(auth.last_error().await.unwrap(), "");
    let log = avsd.log_text();
    assert!(
        log.contains("the registration code expired; registering again"),
        "{log}"
    );
    world.assert_no_secrets_in(&log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denying_consent_at_lwa_tells_the_user_to_log_in_again() {
    let world = World::new(3600).await;
    let state = world.env.dir.path().join("avsd-state");
    let avsd = Daemon::start_ready_in(&world.bus, &world.avsd_config(600, true), &state);
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    world
        .deny(&support::system::fresh(auth.inner(), "LoginUrl").await)
        .await;

    wait_state(&auth, "error", &avsd).await;
    let err = auth.last_error().await.unwrap();
    assert!(err.contains("avsctl login"), "{err}");
    assert_eq!(auth.token_expires_at().await.unwrap(), 0);
    assert_eq!(auth.login_url().await.unwrap(), "");
    assert_eq!(auth.user_code().await.unwrap(), "");
    assert!(
        !session_file(&state).exists(),
        "the refused session is kept"
    );
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

/// `avsctl reset` ends the session at the companion, not only on the
/// device: a copy of the old session id (a backup, an SD-card image) gets
/// no token afterwards. With the companion gone, reset still forgets the
/// session here and the log says it could not be revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_revokes_the_session_at_the_companion() {
    let mut world = World::new(3600).await;
    let state = world.env.dir.path().join("avsd-state");
    let config = world.avsd_config(600, true);
    let avsd = Daemon::start_ready_in(&world.bus, &config, &state);
    let auth = world.log_in_daemon(&avsd).await;

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(session_file(&state)).unwrap()).unwrap();
    let old_session = saved["session_id"].as_str().unwrap().to_string();
    let device = support::companion::Device {
        client: world.env.client(),
        base: format!("https://{}", world.companion_addr),
    };
    let (status, _) = device.poll(&old_session).await;
    assert_eq!(status, 200, "the session gets tokens before the reset");

    let (exit, said) = avsctl(&world, "reset").await;
    assert!(exit.success(), "{said}");
    wait_state(&auth, "unregistered", &avsd).await;
    assert!(!session_file(&state).exists());
    assert!(
        avsd.log_text()
            .contains("the companion revoked the session"),
        "{}",
        avsd.log_text()
    );
    assert_eq!(device.poll_error(&old_session).await, "access_denied");

    // A second login, then a reset while the companion is down.
    auth.start().await.unwrap();
    wait_state(&auth, "waiting-for-user", &avsd).await;
    world
        .log_in(&support::system::fresh(auth.inner(), "LoginUrl").await)
        .await;
    wait_state(&auth, "authorized", &avsd).await;
    world.stop_companion().await;
    let (exit, said) = avsctl(&world, "reset").await;
    assert!(exit.success(), "{said}");
    wait_state(&auth, "unregistered", &avsd).await;
    assert!(!session_file(&state).exists());
    let log = avsd.log_text();
    assert!(
        log.contains("the session was forgotten on this device only"),
        "{log}"
    );
    world.assert_no_secrets_in(&log).await;
}
