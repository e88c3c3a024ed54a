//! Code-based linking end to end: the real avsd (`[auth] method = "code"`)
//! against `avs-sim lwa`'s code pair, code page and device-code grant, and
//! `avs-sim avs`; driven through `avsctl` and D-Bus as a person would.

use std::path::Path;
use std::time::{Duration, Instant};

use avsctl::proxy::DialogProxy;
use rand::Rng;
use serde_json::Value;
use support::companion::WAIT;
use support::system::{AvsSim, World, auth_proxy, fresh, wait_connection, wait_state};
use support::{Daemon, Notify};

/// avsd's config for a code login at `world`'s stand-in, talking to `avs`
/// when given; refreshes `renew_before` seconds ahead.
fn code_config(
    world: &World,
    avs: Option<&AvsSim>,
    renew_before: u64,
    register_on_start: bool,
) -> String {
    let base = match avs {
        Some(avs) => world.avsd_config_with_avs(avs, renew_before),
        None => world.avsd_config(renew_before, true),
    };
    let base = base.replace(
        "register_on_start = true",
        &format!("register_on_start = {register_on_start}"),
    );
    format!("{base}{}", world.code_auth_section())
}

fn start(world: &World, config: &str, state: &Path) -> Daemon {
    let notify = Notify::bind();
    let avsd = Daemon::start_in(&world.bus, Some(&notify), config, Some(state), &[]);
    notify.wait_for("READY=1", Duration::from_secs(20));
    avsd
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

/// The stand-in's code-based-linking report (`/_sim/cbl`).
async fn cbl(world: &World) -> Value {
    world.sim.get("cbl").await
}

/// Wait until the stand-in's report satisfies `ok` (a counter to reach, a
/// poll to arrive); the report then.
async fn wait_cbl(world: &World, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = cbl(world).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until LastError contains `text`; its value.
async fn wait_last_error(world: &World, text: &str, avsd: &Daemon) -> String {
    let auth = auth_proxy(&world.bus).await;
    let mut changes = auth.receive_last_error_changed().await;
    let wait = async {
        loop {
            let now = fresh(auth.inner(), "LastError").await;
            if now.contains(text) {
                return now;
            }
            futures_util::StreamExt::next(&mut changes).await;
        }
    };
    match tokio::time::timeout(WAIT, wait).await {
        Ok(v) => v,
        Err(_) => panic!(
            "LastError never said {text:?}; avsd log:\n{}",
            avsd.log_text()
        ),
    }
}

/// The token file is whole JSON, 0600, and holds a refresh token or a
/// pending code pair.
fn assert_token_file_whole(state: &Path) -> Value {
    use std::os::unix::fs::PermissionsExt;
    let file = state.join("lwa-token.json");
    let bytes = std::fs::read(&file).unwrap();
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("the token file is not whole ({e}): {bytes:?}"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    let dir_mode = std::fs::metadata(state).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "state directory mode");
    assert!(
        v["refresh_token"].is_string() || v["pending"].is_object(),
        "{v:#}"
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avsctl_login_by_code_to_a_connected_avs_link() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let state = world.env.dir.path().join("avsd-state");
    let avsd = start(&world, &code_config(&world, Some(&avs), 600, false), &state);
    let auth = auth_proxy(&world.bus).await;
    assert_eq!(auth.state().await.unwrap(), "unregistered");
    assert_eq!(auth.method().await.unwrap(), "code");

    let mut login = tokio::process::Command::new(support::bin("avsctl"))
        .arg("login")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus.address)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = login.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let (mut url, mut code, mut printed) = (String::new(), String::new(), String::new());
    while code.is_empty() {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("avsctl ended early:\n{printed}\n{}", avsd.log_text()));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(u) = line.strip_prefix("To log in, open ") {
            url = u.to_string();
        }
        if let Some(c) = line.strip_prefix("and enter the code ") {
            code = c.to_string();
        }
    }
    assert!(printed.contains('\u{2588}'), "no QR code:\n{printed}");
    assert_eq!(url, format!("{}/code", world.sim.base), "{printed}");
    assert_eq!(code, fresh(auth.inner(), "UserCode").await);
    let (_, status) = avsctl(&world, "status").await;
    assert!(
        status.contains("Authorization: waiting-for-user"),
        "{status}"
    );
    assert!(
        status.contains("Login method:  code-based linking"),
        "{status}"
    );

    let page = world.answer_code(&url, &code, true).await;
    assert!(page.contains("Device linked"), "{page}");
    let done = tokio::time::timeout(WAIT, login.wait())
        .await
        .unwrap()
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        printed.push_str(&line);
        printed.push('\n');
    }
    assert!(done.success(), "{printed}");
    assert!(printed.contains("Logged in"), "{printed}");
    wait_state(&auth, "authorized", &avsd).await;
    assert!(auth.token_expires_at().await.unwrap() > 0);
    // The consent's URL and code are gone once linked.
    assert_eq!(fresh(auth.inner(), "LoginUrl").await, "");

    let dialog = DialogProxy::new(&world.bus.connect().await).await.unwrap();
    wait_connection(&dialog, "connected", &avsd).await;
    let stats = avs.wait("current=1&event=System.SynchronizeState").await;
    assert_eq!(stats["connections"]["total"], 1, "{stats:#}");

    let report = cbl(&world).await;
    assert_eq!(report["counters"]["codepairs"], 1, "{report:#}");
    assert_eq!(report["counters"]["grants"], 1, "{report:#}");
    assert_eq!(report["counters"]["early_polls"], 0, "{report:#}");
    let saved = assert_token_file_whole(&state);
    assert!(saved["pending"].is_null(), "{saved:#}");
    world.assert_no_secrets_in(&avsd.log_text()).await;
    let issued = world.sim.issued_refresh_tokens().await;
    assert!(issued.iter().any(|t| saved["refresh_token"] == t.as_str()));

    // A restart uses the saved refresh token: no second code pair.
    drop(avsd);
    let avsd = start(&world, &code_config(&world, Some(&avs), 600, false), &state);
    wait_state(&auth, "authorized", &avsd).await;
    assert_eq!(cbl(&world).await["counters"]["codepairs"], 1);
    world.assert_no_secrets_in(&avsd.log_text()).await;

    // Reset deletes the refresh token from the device.
    let (ok, said) = avsctl(&world, "reset").await;
    assert!(ok.success(), "{said}");
    wait_state(&auth, "unregistered", &avsd).await;
    assert!(!state.join("lwa-token.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_keeps_the_interval_and_doubles_on_slow_down() {
    let world = World::new(3600).await;
    // The stand-in's interval is 1 s; its first answer is slow_down.
    world
        .sim
        .control("cbl/slow_down", serde_json::json!({"count": 1}))
        .await;
    let state = world.env.dir.path().join("avsd-state");
    let avsd = start(&world, &code_config(&world, None, 600, true), &state);
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    let report = wait_cbl(&world, "five polls", |v| {
        v["pairs"][0]["poll_ms"]
            .as_array()
            .is_some_and(|p| p.len() >= 5)
    })
    .await;
    let polls: Vec<u64> = report["pairs"][0]["poll_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(report["counters"]["early_polls"], 0, "{report:#}");
    assert_eq!(report["counters"]["forced_slow_downs"], 1, "{report:#}");
    assert!(
        polls[0] >= 1000,
        "first poll before the interval: {polls:?}"
    );
    // After slow_down the interval is 2 s from then on, never shorter.
    for gap in polls.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= 2000,
            "a poll gap of {gap} ms after slow_down: {polls:?}"
        );
    }
    assert_eq!(auth.state().await.unwrap(), "waiting-for-user");
    assert_token_file_whole(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_denial_and_lwa_failing_each_end_in_error_with_what_to_do() {
    let world = World::new(3600).await;
    let state = world.env.dir.path().join("avsd-state");
    let avsd = start(&world, &code_config(&world, None, 600, true), &state);
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;

    // The code pair's lifetime (600 s) passes at the stand-in.
    world
        .sim
        .control("advance", serde_json::json!({"secs": 700}))
        .await;
    wait_state(&auth, "error", &avsd).await;
    let e = wait_last_error(&world, "expired", &avsd).await;
    assert!(e.contains("avsctl login"), "{e}");
    assert!(!state.join("lwa-token.json").exists());

    // The user presses Deny.
    auth.start().await.unwrap();
    wait_state(&auth, "waiting-for-user", &avsd).await;
    let url = fresh(auth.inner(), "LoginUrl").await;
    let code = fresh(auth.inner(), "UserCode").await;
    let page = world.answer_code(&url, &code, false).await;
    assert!(page.contains("Access not allowed"), "{page}");
    wait_state(&auth, "error", &avsd).await;
    let e = wait_last_error(&world, "denied", &avsd).await;
    assert!(e.contains("avsctl login"), "{e}");

    // LWA answers 503: an error saying so and that avsd retries...
    world
        .sim
        .control("fail", serde_json::json!({"count": 1000, "status": 503}))
        .await;
    auth.start().await.unwrap();
    let e = wait_last_error(&world, "503", &avsd).await;
    assert!(e.contains("retrying in"), "{e}");
    assert_eq!(fresh(auth.inner(), "State").await, "error");
    // ...and it does, once LWA is back.
    world
        .sim
        .control("fail", serde_json::json!({"count": 0}))
        .await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    let report = cbl(&world).await;
    assert_eq!(report["counters"]["early_polls"], 0, "{report:#}");
    // No token was issued; the device code is the secret to look for.
    let saved = assert_token_file_whole(&state);
    let device_code = saved["pending"]["device_code"].as_str().unwrap();
    let log = avsd.log_text();
    assert!(!log.contains(device_code), "the device code in avsd's log");
    assert!(!log.contains("Atza|") && !log.contains("Atzr|"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_code_login_and_refreshes_needs_no_second_login() {
    // Access tokens of 4 s, refreshed 2 s ahead: a refresh every 2 s.
    let world = World::new(4).await;
    let state = world.env.dir.path().join("avsd-state");
    let config = code_config(&world, None, 2, true);
    let mut rng = rand::rng();

    let mut avsd = start(&world, &config, &state);
    let auth = auth_proxy(&world.bus).await;
    wait_state(&auth, "waiting-for-user", &avsd).await;
    let code = fresh(auth.inner(), "UserCode").await;
    for _ in 0..3 {
        let at = Duration::from_millis(rng.random_range(0..1500));
        tokio::time::sleep(at).await;
        avsd.signal("KILL");
        avsd.wait_exit(WAIT).expect("avsd died");
        assert_token_file_whole(&state);
        avsd = start(&world, &config, &state);
        wait_state(&auth, "waiting-for-user", &avsd).await;
        assert_eq!(fresh(auth.inner(), "UserCode").await, code, "a new code");
    }
    let url = fresh(auth.inner(), "LoginUrl").await;
    let page = world.answer_code(&url, &code, true).await;
    assert!(page.contains("Device linked"), "{page}");
    wait_state(&auth, "authorized", &avsd).await;

    let mut log = avsd.log_text();
    for _ in 0..4 {
        let at = Duration::from_millis(rng.random_range(0..3000));
        tokio::time::sleep(at).await;
        avsd.signal("KILL");
        avsd.wait_exit(WAIT).expect("avsd died");
        let saved = assert_token_file_whole(&state);
        assert!(saved["refresh_token"].is_string(), "{saved:#}");
        avsd = start(&world, &config, &state);
        wait_state(&auth, "authorized", &avsd).await;
        log.push_str(&avsd.log_text());
    }
    let report = cbl(&world).await;
    assert_eq!(
        report["counters"]["codepairs"], 1,
        "a second login: {report:#}"
    );
    assert!(world.sim.counter("refresh_grants").await >= 4);
    world.assert_no_secrets_in(&log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_after_a_code_login() {
    use support::dialog::{Mic, Rig, SPEAKER_10MS, Speaker, speech16};
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let code = world.code_auth_section();
    // The rig logs avsd in through LoginUrl and UserCode: with this config,
    // at the stand-in's code page.
    let rig = Rig::start_on(
        world,
        avs,
        |c| format!("{c}{code}"),
        "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
         playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n",
    )
    .await;
    assert_eq!(rig.auth.method().await.unwrap(), "code");
    assert_eq!(cbl(&rig.world).await["counters"]["grants"], 1);
    let mic = Mic::new(&rig.path("mic.fifo"), 320);
    let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    rig.avs
        .post("/dialog?end_of_speech_ms=500&stop_capture_ms=10000")
        .await;
    let question = speech16(rig.dir.path(), "q", "what time is it");
    rig.dialog.tap().await.expect("Tap");
    let _said = mic.say(question);
    rig.wait_state("speaking", 1).await;
    rig.wait_state("idle", 1).await;
    let stats = rig.avs_wait("event=SpeechSynthesizer.SpeechFinished").await;
    assert_eq!(stats["recognizes"][0]["outcome"], "speak", "{stats:#}");
    // Half a second of the answer reached the speaker.
    speaker.wait_sound(SPEAKER_10MS * 50).await;
    rig.world.assert_no_secrets_in(&rig.avsd.log_text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_revoked_at_amazon_ends_in_error_and_forgets_the_token() {
    // Access tokens of 4 s, refreshed 2 s ahead.
    let world = World::new(4).await;
    let state = world.env.dir.path().join("avsd-state");
    let avsd = start(&world, &code_config(&world, None, 2, true), &state);
    let auth = world.log_in_daemon(&avsd).await;
    let saved = assert_token_file_whole(&state);
    assert!(saved["refresh_token"].is_string());
    // The user removes the device in their Amazon account.
    let revoked = world.sim.control("revoke", serde_json::json!({})).await;
    assert!(revoked["revoked"].as_u64() >= Some(1), "{revoked:#}");
    wait_state(&auth, "error", &avsd).await;
    let e = wait_last_error(&world, "invalid_grant", &avsd).await;
    assert!(e.contains("avsctl login"), "{e}");
    assert!(!state.join("lwa-token.json").exists());
    world.assert_no_secrets_in(&avsd.log_text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_avs_refuses_is_refreshed_at_lwa_once() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let config = code_config(&world, Some(&avs), 600, true).replace(
        &format!("endpoint = \"{}\"\n", avs.base),
        &format!("endpoint = \"{}\"\nping_interval_secs = 1\n", avs.base),
    );
    assert!(config.contains("ping_interval_secs = 1"), "{config}");
    let state = world.env.dir.path().join("avsd-state");
    let avsd = start(&world, &config, &state);
    let auth = world.log_in_daemon(&avsd).await;
    let dialog = DialogProxy::new(&world.bus.connect().await).await.unwrap();
    wait_connection(&dialog, "connected", &avsd).await;
    avs.wait("current=1&event=System.SynchronizeState").await;
    assert_eq!(world.sim.counter("refresh_grants").await, 0);

    // LWA expires the access token early: AVS answers the next ping 403,
    // avsd refreshes with its saved refresh token and connects again.
    world.sim.control("expire", serde_json::json!({})).await;
    avs.wait("downchannels=2&current=1").await;
    wait_connection(&dialog, "connected", &avsd).await;
    assert_eq!(world.sim.counter("refresh_grants").await, 1);
    assert_eq!(fresh(auth.inner(), "State").await, "authorized");
    assert_eq!(cbl(&world).await["counters"]["codepairs"], 1);
    world.assert_no_secrets_in(&avsd.log_text()).await;
}
