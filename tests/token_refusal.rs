//! A refused token heals in seconds and a revoked login is noticed at once
//! (issue 14, items 1 and 2), against the real binaries: AVS (the stand-in)
//! answers 403 to the downchannel, to an event, to a ping; LWA (the
//! stand-in) expires the access tokens early or revokes the grant, and AVS
//! refuses their tokens from then on. For each: the `Dialog.Connection` and
//! `Authorization.State` values avsd announced, the time from the refusal
//! to a new connection (printed; `scripts/bench` reports the figure),
//! exactly one LWA call per refused token, and a dialog answered after a
//! refused Recognize. Also: the companion refreshes for a device reporting
//! refused tokens in a loop at most `lwa.refused_refreshes_per_minute`
//! times a minute and tells it `slow_down` otherwise.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::companion::query_of;
use support::companion::{Setup, WAIT};
use support::dialog::{Mic, SPEAKER_10MS, Speaker, speech16};
use support::faults::rig::{CONNECTION, Rig, STATE, rig};
use support::faults::{Cut, Recorder};
use support::system::wait_connection;

/// The LWA stand-in's counters that tell how often LWA was asked.
async fn lwa_calls(r: &Rig) -> (u64, u64) {
    (
        r.world.sim.counter("token_calls").await,
        r.world.sim.counter("refresh_grants").await,
    )
}

/// When `property` last took `value` at or after `mark`, and when it next
/// took `then` after that.
fn span(rec: &Recorder, mark: usize, value: &str, then: &str) -> Option<Duration> {
    let seen = rec.seen.lock().unwrap();
    let ours: Vec<_> = seen[mark..]
        .iter()
        .filter(|(_, p, _)| p == CONNECTION)
        .collect();
    let end = ours.iter().rposition(|(_, _, v)| v == then)?;
    let start = ours[..end].iter().rposition(|(_, _, v)| v == value)?;
    Some(ours[end].0 - ours[start].0)
}

/// The last refusal the AVS stand-in answered: (path, status, description).
async fn last_rejection(r: &Rig) -> (String, u64, String) {
    let stats = r.avs.stats().await;
    let last = stats["rejections"]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or(Value::Null);
    (
        last["path"].as_str().unwrap_or("").to_string(),
        last["status"].as_u64().unwrap_or(0),
        last["description"].as_str().unwrap_or("").to_string(),
    )
}

/// After `strike` (at `mark`): avsd announced exactly `want` on
/// Dialog.Connection, is connected again on one connection with a token
/// LWA refreshed exactly once, and stayed authorized throughout. Prints
/// the time from avsd noticing the refusal to being connected again.
async fn heals(r: &Rig, fault: &str, mark: usize, before: (u64, u64), want: &[&str]) {
    let struck = Instant::now();
    r.assert_recovered(mark, fault).await;
    let seen = r.rec.values(CONNECTION, mark);
    assert_eq!(
        seen,
        want,
        "{fault}: Dialog.Connection went {seen:?}; avsd log:\n{}",
        r.avsd.log_text()
    );
    let healed = span(&r.rec, mark, "disconnected", "connected").expect("both were seen");
    println!(
        "{fault}: refused token -> connected with a new one in {:.0} ms ({:.0} ms after the fault was set)",
        healed.as_secs_f64() * 1000.0,
        struck.elapsed().as_secs_f64() * 1000.0
    );
    let after = lwa_calls(r).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "{fault}: one LWA refresh per refused token (token calls, refreshes); avsd log:\n{}",
        r.avsd.log_text()
    );
    let log = r.avsd.log_text();
    assert!(log.contains("AVS refused the access token"), "{log}");
    assert!(
        log.contains("a new access token replaces the one AVS refused"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_to_a_ping_heals_with_one_refresh() {
    let r = rig().await;
    let before = lwa_calls(&r).await;
    let mark = r.rec.len();
    // avsd pings every second in the rig.
    r.avs.post("/refuse_token?on=ping").await;
    heals(
        &r,
        "403 to a ping",
        mark,
        before,
        &["disconnected", "connecting", "connected"],
    )
    .await;
    let (path, status, why) = last_rejection(&r).await;
    assert_eq!((path.as_str(), status), ("/ping", 403), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_to_the_downchannel_heals_with_one_refresh() {
    let r = rig().await;
    let before = lwa_calls(&r).await;
    r.avs.post("/refuse_token?on=downchannel").await;
    let mark = r.rec.len();
    // The downchannel is opened once per connection: cut it so a new one
    // asks with the token AVS will now refuse.
    r.proxy.cut_all(Cut::Reset);
    heals(
        &r,
        "403 to the downchannel",
        mark,
        before,
        &[
            "disconnected",
            "connecting",
            "disconnected",
            "connecting",
            "connected",
        ],
    )
    .await;
    let (path, status, why) = last_rejection(&r).await;
    assert_eq!(
        (path.as_str(), status),
        ("/v20160207/directives", 403),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_to_a_reopened_downchannel_heals_with_one_refresh() {
    let r = rig().await;
    let before = lwa_calls(&r).await;
    r.avs.post("/refuse_token?on=downchannel").await;
    let mark = r.rec.len();
    // Malformed bytes make avsd reopen the downchannel on the same link;
    // AVS refuses the token there.
    r.avs
        .push_raw("Content-Type: application/json\r\n\r\n{\"directive\":")
        .await;
    heals(
        &r,
        "403 to a reopened downchannel",
        mark,
        before,
        &["disconnected", "connecting", "connected"],
    )
    .await;
    let (path, status, why) = last_rejection(&r).await;
    assert_eq!(
        (path.as_str(), status),
        ("/v20160207/directives", 403),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_to_an_event_while_connecting_heals_with_one_refresh() {
    let r = rig().await;
    let before = lwa_calls(&r).await;
    r.avs.post("/refuse_token?on=events").await;
    let mark = r.rec.len();
    // The next connection's first event (Alexa.Discovery) is refused.
    r.proxy.cut_all(Cut::Reset);
    heals(
        &r,
        "403 to an event",
        mark,
        before,
        &[
            "disconnected",
            "connecting",
            "disconnected",
            "connecting",
            "connected",
        ],
    )
    .await;
    let (path, status, why) = last_rejection(&r).await;
    assert_eq!((path.as_str(), status), ("/v20160207/events", 403), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_lwa_expires_early_heal_with_one_refresh() {
    let r = rig().await;
    let before = lwa_calls(&r).await;
    let mark = r.rec.len();
    let expired = r.world.sim.control("expire", json!({})).await;
    assert!(expired["expired"].as_u64().unwrap() >= 1, "{expired}");
    heals(
        &r,
        "access token expired early at LWA",
        mark,
        before,
        &["disconnected", "connecting", "connected"],
    )
    .await;
    let (_, status, why) = last_rejection(&r).await;
    assert_eq!(status, 403);
    assert!(why.contains("expired it early"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_revoked_at_lwa_is_noticed_at_once() {
    let r = rig().await;
    let before = lwa_calls(&r).await;
    let mark = r.rec.len();
    let revoked_at = Instant::now();
    let revoked = r.world.sim.control("revoke", json!({})).await;
    assert_eq!(revoked["revoked"], 1, "{revoked}");
    // The next ping's 403 leads to a refresh, LWA's invalid_grant, and the
    // end of the login.
    let Some((_, seen_at)) = r.rec.wait_after(mark, STATE, |v| v == "error", WAIT).await else {
        panic!(
            "Authorization.State never became error; changes {:?}; avsd log:\n{}",
            r.rec.values(STATE, mark),
            r.avsd.log_text()
        )
    };
    println!(
        "revoked grant: Authorization.State error {:.0} ms after the revocation",
        (seen_at - revoked_at).as_secs_f64() * 1000.0
    );
    // LastError says what to do (announced with or right after the state).
    let said = r
        .rec
        .wait_after(
            mark,
            "Authorization.LastError",
            |v| v.contains("avsctl login"),
            WAIT,
        )
        .await;
    assert!(
        said.is_some(),
        "LastError never said to log in again: {:?}",
        r.rec.values("Authorization.LastError", mark)
    );
    assert_eq!(r.rec.values(STATE, mark), ["error"]);
    let connection = r.rec.values(CONNECTION, mark);
    assert_eq!(connection, ["disconnected"], "{}", r.avsd.log_text());
    let dialog = avsctl::proxy::DialogProxy::new(&r.world.bus.connect().await)
        .await
        .unwrap();
    assert_eq!(dialog.connection().await.unwrap(), "disconnected");
    let after = lwa_calls(&r).await;
    assert_eq!(after.0 - before.0, 1, "one LWA call for the refused token");
    assert_eq!(after.1, before.1, "no refresh was granted");
    let errors = r.world.sim.get("counters").await["errors"]["invalid_grant"].clone();
    assert_eq!(errors, 1, "LWA answered invalid_grant once");
    let (_, status, why) = last_rejection(&r).await;
    assert_eq!(status, 403);
    assert!(why.contains("revoked the grant"), "{why}");
}

const MIC16: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recognize_heals_and_the_next_dialog_is_answered() {
    let rig = support::dialog::Rig::start(MIC16).await;
    let rec = Recorder::start(&rig.world.bus.connect().await).await;
    let mic = Mic::new(&rig.path("mic.fifo"), 320);
    let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    let question = speech16(rig.dir.path(), "q", "what is the weather like");
    rig.avs
        .post("/dialog?end_of_speech_ms=500&stop_capture_ms=10000")
        .await;
    let calls = |name: &'static str| {
        let sim = &rig.world.sim;
        async move { sim.counter(name).await }
    };
    let (token_calls, refreshes) = (calls("token_calls").await, calls("refresh_grants").await);

    // The Recognize's token is refused: the dialog fails, avsd reconnects
    // with a new token.
    rig.avs.post("/refuse_token?on=events").await;
    let mark = rec.len();
    let from = rig.state_log().len();
    rig.dialog.tap().await.expect("Tap on a connected avsd");
    let _said = mic.say(question.clone());
    let listening = rig.wait_state("listening", from).await;
    rig.wait_state("idle", listening).await;
    let Some((lost, _)) = rec
        .wait_after(mark, CONNECTION, |v| v == "disconnected", WAIT)
        .await
    else {
        panic!("avsd never said it lost the link; {}", rig.avsd.log_text())
    };
    assert!(
        rec.wait_after(lost, CONNECTION, |v| v == "connected", WAIT)
            .await
            .is_some(),
        "avsd never connected again; avsd log:\n{}",
        rig.avsd.log_text()
    );
    // AVS closes the connection after the 403 (GOAWAY): when avsd sees the
    // close before the refusal has reached its connection task, one more
    // attempt with the refused token meets a 403 on the downchannel first.
    let seen = rec.values(CONNECTION, mark);
    assert!(
        seen == ["disconnected", "connecting", "connected"]
            || seen
                == [
                    "disconnected",
                    "connecting",
                    "disconnected",
                    "connecting",
                    "connected"
                ],
        "Dialog.Connection went {seen:?}; avsd log:\n{}",
        rig.avsd.log_text()
    );
    let healed = span(&rec, mark, "disconnected", "connected").expect("both seen");
    println!(
        "403 to a Recognize: connected with a new token in {:.0} ms",
        healed.as_secs_f64() * 1000.0
    );
    assert_eq!(calls("token_calls").await - token_calls, 1);
    assert_eq!(calls("refresh_grants").await - refreshes, 1);
    assert!(rec.values(STATE, 0).iter().all(|s| s == "authorized"));

    // The next dialog is answered.
    wait_connection(&rig.dialog, "connected", &rig.avsd).await;
    let from = rig.state_log().len();
    let heard = speaker.played().len();
    rig.dialog.tap().await.expect("Tap after the refusal");
    let _said = mic.say(question);
    let listening = rig.wait_state("listening", from).await;
    rig.wait_state("idle", listening).await;
    let states = rig.state_log()[from..].to_vec();
    assert_eq!(
        states,
        ["listening", "thinking", "speaking", "idle"],
        "LastError {:?}; avsd log:\n{}",
        rig.dialog.last_error().await,
        rig.avsd.log_text()
    );
    assert!(speaker.played().len() > heard, "the answer was played");
    rig.avs_wait("event=SpeechSynthesizer.SpeechFinished").await;
}

/// Link a device at the companion as a person would; its session id and
/// first access token.
async fn linked_device(s: &Setup) -> (String, String) {
    let device = s.device();
    let (_, session, login_url) = device.register_ok("0001").await;
    let browser = s.browser();
    let consent = browser.open_device_page(&login_url).await;
    let back = browser.consent(&consent, true).await;
    assert!(query_of(&back).contains_key("code"), "{back}");
    let (status, page, _) = browser.get(&back).await;
    assert_eq!(status, 200, "{page}");
    let (status, v) = device.poll(&session).await;
    assert_eq!(status, 200, "{v}");
    (session, v["access_token"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reporting_refused_tokens_in_a_loop_gets_the_allowed_refreshes_only() {
    let s = Setup::with_server_extra(&[], "").await;
    let (session, first) = linked_device(&s).await;
    let device = s.device();
    let refreshes = s.sim.counter("refresh_grants").await;
    let mut token = first.clone();
    let (mut renewed, mut slowed) = (0, 0);
    // Default: 4 a minute. Ten reports in a row, well within a minute.
    for _ in 0..10 {
        let (status, v) = device
            .post(
                "/provision/accessToken",
                json!({"sessionId": session, "refusedToken": token}),
            )
            .await;
        match status {
            200 => {
                let new = v["access_token"].as_str().unwrap().to_string();
                assert_ne!(new, token, "a refused token is never handed back");
                token = new;
                renewed += 1;
            }
            400 => {
                assert_eq!(v["error"], "slow_down", "{v}");
                let why = v["error_description"].as_str().unwrap();
                assert!(why.contains("4 a minute"), "{why}");
                slowed += 1;
            }
            other => panic!("HTTP {other}: {v}"),
        }
    }
    assert_eq!((renewed, slowed), (4, 6));
    assert_eq!(s.sim.counter("refresh_grants").await - refreshes, 4);

    // A report of a token that is no longer the cached one gets the cached
    // one, without asking LWA, even over the limit.
    let (status, v) = device
        .post(
            "/provision/accessToken",
            json!({"sessionId": session, "refusedToken": first}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["access_token"], token.as_str());
    assert_eq!(s.sim.counter("refresh_grants").await - refreshes, 4);
    // A plain request still gets the cached token.
    let (status, v) = device.poll(&session).await;
    assert_eq!(
        (status, v["access_token"].as_str()),
        (200, Some(token.as_str()))
    );
}

#[test]
fn the_refusal_limit_is_a_strict_setting() {
    let env = support::companion::Env::new();
    let toml = env.companion_toml(
        "127.0.0.1:1",
        "https://127.0.0.1:1/authresponse",
        "https://127.0.0.1:2",
        "",
    );
    assert!(toml.contains("[lwa]\n"), "{toml}");
    let with = |v: &str| {
        toml.replace(
            "[lwa]\n",
            &format!("[lwa]\nrefused_refreshes_per_minute = {v}\n"),
        )
    };
    assert_eq!(
        env.companion_config(&toml).lwa.refused_refreshes_per_minute,
        4
    );
    assert_eq!(
        env.companion_config(&with("2"))
            .lwa
            .refused_refreshes_per_minute,
        2
    );
    let path = env.dir.path().join("bad.toml");
    std::fs::write(&path, with("0")).unwrap();
    let err = avsd_config::load::<avs_companion::CompanionConfig>(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lwa.refused_refreshes_per_minute"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shorter_lived_than_the_renewal_margin_is_warned_about() {
    // LWA hands out 40 s tokens; avsd renews 600 s ahead by default.
    let r = support::faults::rig::rig_with(support::faults::rig::RigOpts {
        token_lifetime: 40,
        ..Default::default()
    })
    .await;
    r.avsd
        .wait_log(
            "s, no more than companion.renew_before_secs (600 s)",
            1,
            WAIT,
        )
        .await;
}
