//! avsd gets, keeps and renews its access token through the real
//! `avs-companion` and `avs-sim lwa`, and shows it all on D-Bus.

mod companion_support;
mod support;
mod system_support;

use std::path::Path;

use companion_support::WAIT;
use futures_util::StreamExt;
use support::{Daemon, Notify};
use system_support::{World, auth_proxy, now, wait_state};

fn session_file(state: &Path) -> std::path::PathBuf {
    state.join("session.json")
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
    let status = notify.wait_for(
        &format!("STATUS=Waiting for login: open {url} and enter code {code}"),
        WAIT,
    );
    assert!(!status.is_empty());

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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_avsctl"))
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
    assert!(
        !logs.contains("Atza|") && !logs.contains("Atzr|"),
        "token logged"
    );
    let all = world
        .bus
        .busctl(&["introspect", "org.avsd.Avs1", "/org/avsd/Avs1"]);
    let props = String::from_utf8_lossy(&all.stdout);
    assert!(!props.contains(&session_id) && !props.contains("Atza|"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avsctl_login_waits_for_the_browser() {
    let world = World::new(3600).await;
    let config = world.avsd_config(600, false);
    let avsd = Daemon::start_ready(&world.bus, &config);
    let auth = auth_proxy(&world.bus).await;
    assert_eq!(auth.state().await.unwrap(), "unregistered");

    let mut login = tokio::process::Command::new(env!("CARGO_BIN_EXE_avsctl"))
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_moves_expiry_forward_without_a_gap() {
    // Tokens live 6 s; avsd renews 2 s ahead. The companion's margin (600 s)
    // exceeds the lifetime, so it refreshes at LWA for every request.
    let world = World::new(6).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(2, true));
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    world.log_in(&auth.login_url().await.unwrap()).await;
    wait_state(&auth, "authorized", &avsd).await;

    let mut changes = auth.receive_token_expires_at_changed().await;
    let mut previous = auth.token_expires_at().await.unwrap();
    let mut renewals = 0;
    while renewals < 3 {
        let change = tokio::time::timeout(WAIT, changes.next())
            .await
            .expect("TokenExpiresAt did not move")
            .unwrap();
        let next = change.get().await.unwrap();
        let seen_at = now();
        // The stream starts with the current value.
        if next == previous {
            continue;
        }
        renewals += 1;
        assert!(next > previous, "expiry went from {previous} to {next}");
        assert!(
            seen_at <= previous,
            "renewed at {seen_at}, after the old token expired at {previous}"
        );
        assert_eq!(auth.state().await.unwrap(), "authorized");
        previous = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_outage_backs_off_and_recovers_by_itself() {
    let mut world = World::new(6).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(2, true));
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    world.log_in(&auth.login_url().await.unwrap()).await;
    wait_state(&auth, "authorized", &avsd).await;

    world.stop_companion().await;
    // The token runs out while the companion is away: State says so, and
    // LastError says what is failing.
    wait_state(&auth, "error", &avsd).await;
    let err = auth.last_error().await.unwrap();
    assert!(
        err.contains("cannot reach the companion") && err.contains("retrying"),
        "{err}"
    );
    // Three failed tries, each logged with its attempt number and a delay
    // under that attempt's ceiling (1, 2, 4 s).
    let attempts = loop {
        let found = retry_delays(&avsd.log_text());
        if found.len() >= 3 {
            break found;
        }
        let mut changes = auth.receive_last_error_changed().await;
        tokio::time::timeout(WAIT, changes.next())
            .await
            .expect("no more retries");
    };
    for (i, (attempt, delay)) in attempts.iter().take(3).enumerate() {
        assert_eq!(*attempt, i as u64 + 1);
        let ceiling = [1.0, 2.0, 4.0][i];
        assert!(
            *delay <= ceiling + 0.05,
            "attempt {attempt} waits {delay} s > {ceiling} s"
        );
    }

    world.restart_companion().await;
    wait_state(&auth, "authorized", &avsd).await;
    assert_eq!(auth.last_error().await.unwrap(), "");
    assert!(auth.token_expires_at().await.unwrap() > now());
}

/// (attempt, delay in s) of each "companion call failed" log line.
fn retry_delays(log: &str) -> Vec<(u64, f64)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("companion call failed (attempt ").nth(1)?;
            let (attempt, rest) = rest.split_once(", next try in ")?;
            let delay = rest.split(" s)").next()?;
            Some((attempt.parse().ok()?, delay.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_at_lwa_asks_the_user_to_log_in_again() {
    let world = World::new(6).await;
    let avsd = Daemon::start_ready(&world.bus, &world.avsd_config(2, true));
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    world.log_in(&auth.login_url().await.unwrap()).await;
    wait_state(&auth, "authorized", &avsd).await;

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
}
