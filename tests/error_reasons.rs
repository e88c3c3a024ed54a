//! `LastErrorReason` beside each `LastError`, and the allowed values of
//! every enumerated property in the introspection (issue 22): real error
//! paths are driven (no companion configured, the companion unreachable, a
//! missing wake-word model, a muted microphone, AVS refusing the token of
//! a Recognize), and every value avsd announced or answered is checked
//! against the `org.avsd.Avs1.AllowedValues` annotations of the live object.

use std::collections::HashMap;
use std::time::Duration;

use avsctl::proxy::{AuthorizationProxy, MicrophoneProxy};
use support::dialog::{Mic, Rig, SPEAKER_10MS, Speaker};
use support::faults::Recorder;
use support::system::{AvsSim, World, auth_proxy, wait_state};
use support::{Bus, Daemon, MINIMAL_CONFIG};

const WAIT: Duration = Duration::from_secs(60);
const ANNOTATION: &str = "org.avsd.Avs1.AllowedValues";

const MIC16: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

/// `Interface.Property` (short interface name) to its allowed values, from
/// the live introspection.
async fn allowed(bus: &Bus) -> HashMap<String, Vec<String>> {
    let conn = bus.connect().await;
    let xml = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination("org.avsd.Avs1")
        .unwrap()
        .path("/org/avsd/Avs1")
        .unwrap()
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    let attr = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        line[start..].split('"').next().map(str::to_string)
    };
    let (mut iface, mut prop) = (String::new(), String::new());
    let mut out = HashMap::new();
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<interface ") {
            iface = attr(line, "name").unwrap_or_default();
        } else if line.starts_with("<property ") {
            prop = attr(line, "name").unwrap_or_default();
        } else if line.starts_with(&format!("<annotation name=\"{ANNOTATION}\"")) {
            let values = attr(line, "value").unwrap_or_default();
            let short = iface.trim_start_matches("org.avsd.Avs1.");
            out.insert(
                format!("{short}.{prop}"),
                values.split(' ').map(str::to_string).collect(),
            );
        }
    }
    for must in [
        "Authorization.State",
        "Authorization.LastErrorReason",
        "Dialog.State",
        "Dialog.Connection",
        "Dialog.LastErrorReason",
        "Player.PlaybackStatus",
    ] {
        assert!(out.contains_key(must), "no {ANNOTATION} on {must}:\n{xml}");
    }
    out
}

/// Every announced value of an annotated property is one it allows.
fn all_announced_allowed(rec: &Recorder, allowed: &HashMap<String, Vec<String>>) -> usize {
    let seen = rec.seen.lock().unwrap();
    let mut checked = 0;
    for (_, prop, value) in seen.iter() {
        if let Some(values) = allowed.get(prop) {
            assert!(
                values.contains(value),
                "{prop}={value} announced, not in {ANNOTATION} {values:?}"
            );
            checked += 1;
        }
    }
    checked
}

/// Wait until `property` (`Interface.Property`) reads `reason`, or
/// announces it after `mark` (a change made before the recorder
/// subscribed is only read).
async fn wait_reason(
    bus: &Bus,
    rec: &Recorder,
    mark: usize,
    property: &str,
    reason: &str,
    log: &Daemon,
) {
    let (iface, prop) = property.split_once('.').unwrap();
    let out = bus.busctl(&[
        "get-property",
        "org.avsd.Avs1",
        "/org/avsd/Avs1",
        &format!("org.avsd.Avs1.{iface}"),
        prop,
    ]);
    if String::from_utf8_lossy(&out.stdout).trim() == format!("s \"{reason}\"") {
        return;
    }
    if rec
        .wait_after(mark, property, |v| v == reason, WAIT)
        .await
        .is_none()
    {
        panic!(
            "{property} never became {reason}; announced {:?}; avsd log:\n{}",
            rec.values(property, mark),
            log.log_text()
        );
    }
}

async fn auth_now(auth: &AuthorizationProxy<'_>) -> (String, String) {
    (
        auth.last_error().await.unwrap(),
        auth.last_error_reason().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_reasons_name_the_failure() {
    // Nothing configured: Start is refused, and the reason says why.
    let bus = Bus::start();
    let avsd = Daemon::start_ready(&bus, MINIMAL_CONFIG);
    let allowed_values = allowed(&bus).await;
    let auth = auth_proxy(&bus).await;
    assert_eq!(auth_now(&auth).await, (String::new(), "none".to_string()));
    let rec = Recorder::start(&bus.connect().await).await;
    auth.start().await.expect_err("Start without companion.url");
    wait_reason(
        &bus,
        &rec,
        0,
        "Authorization.LastErrorReason",
        "not-configured",
        &avsd,
    )
    .await;
    let (text, reason) = auth_now(&auth).await;
    assert!(text.contains("companion.url"), "{text}");
    assert_eq!(reason, "not-configured");
    assert!(all_announced_allowed(&rec, &allowed_values) >= 2);
    drop(avsd);

    // A companion nobody answers at: retried, and said to be unreachable.
    let world = World::new(3600).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = world.avsd_config(600, true).replace(
        &format!("url = \"https://{}\"", world.companion_addr),
        &format!("url = \"https://127.0.0.1:{port}\""),
    );
    assert!(config.contains(&format!("127.0.0.1:{port}")), "{config}");
    let avsd = Daemon::start_ready(&world.bus, &config);
    // Subscribed once avsd owns its name: zbus filters by the owner.
    let rec = Recorder::start(&world.bus.connect().await).await;
    let auth = auth_proxy(&world.bus).await;
    wait_reason(
        &world.bus,
        &rec,
        0,
        "Authorization.LastErrorReason",
        "companion-unreachable",
        &avsd,
    )
    .await;
    wait_state(&auth, "error", &avsd).await;
    let (text, reason) = auth_now(&auth).await;
    assert!(text.contains("cannot reach the companion"), "{text}");
    assert_eq!(reason, "companion-unreachable");
    all_announced_allowed(&rec, &allowed_values);
    // avsctl shows it: after the words in `status`, as its own key in `show`.
    let avsctl = |args: &[&str]| {
        let out = std::process::Command::new(support::bin("avsctl"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus.address)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status = avsctl(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Last error:") && l.ends_with(" [companion-unreachable]")),
        "{status}"
    );
    let show = avsctl(&["show"]);
    assert!(
        show.lines()
            .any(|l| l == "Authorization.LastErrorReason=companion-unreachable"),
        "{show}"
    );
    assert!(
        show.lines().any(|l| l == "Dialog.LastErrorReason=none"),
        "{show}"
    );
    assert!(allowed_values["Authorization.LastErrorReason"].contains(&reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialog_reasons_name_the_failure() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    // The wake word on with a model that is not there.
    let section = "[wakeword]\nenabled = true\nmodel = \"/nonexistent/alexa.json\"\n";
    let rig = Rig::start_on(world, avs, |c| format!("{c}{section}"), MIC16).await;
    let rec = Recorder::start(&rig.world.bus.connect().await).await;
    let _mic = Mic::new(&rig.path("mic.fifo"), 320);
    let _speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    let allowed_values = allowed(&rig.world.bus).await;
    let reason = || async { rig.dialog.last_error_reason().await.unwrap() };

    rig.wait_last_error("/nonexistent/alexa.json").await;
    assert_eq!(reason().await, "model-missing");

    // Muted: Tap is refused, and LastError says so with its reason.
    let mic = MicrophoneProxy::new(&rig.world.bus.connect().await)
        .await
        .unwrap();
    mic.set_muted(true).await.unwrap();
    let mark = rec.len();
    rig.dialog.tap().await.expect_err("Tap while muted");
    wait_reason(
        &rig.world.bus,
        &rec,
        mark,
        "Dialog.LastErrorReason",
        "microphone-muted",
        &rig.avsd,
    )
    .await;
    assert!(
        rig.dialog
            .last_error()
            .await
            .unwrap()
            .contains("avsctl mic on"),
        "the muted LastError names the fix"
    );
    mic.set_muted(false).await.unwrap();

    // AVS refuses the token of the next event: the Recognize fails so.
    rig.avs.post("/refuse_token?on=events").await;
    let mark = rec.len();
    rig.dialog
        .tap()
        .await
        .expect("Tap with a token AVS will refuse");
    wait_reason(
        &rig.world.bus,
        &rec,
        mark,
        "Dialog.LastErrorReason",
        "token-refused",
        &rig.avsd,
    )
    .await;
    let text = rig.dialog.last_error().await.unwrap();
    assert!(text.contains("refused the access token"), "{text}");
    assert_eq!(reason().await, "token-refused");

    // A new dialog, once avsd reconnected with a new token, clears both.
    let lost = rec
        .wait_after(mark, "Dialog.Connection", |v| v == "disconnected", WAIT)
        .await
        .expect("avsd drops the link AVS closed after the 403")
        .0;
    rec.wait_after(lost, "Dialog.Connection", |v| v == "connected", WAIT)
        .await
        .unwrap_or_else(|| panic!("never connected again:\n{}", rig.avsd.log_text()));
    rig.wait_state("idle", 0).await;
    let from = rig.state_log().len();
    rig.dialog
        .tap()
        .await
        .expect("Tap once the token is renewed");
    rig.wait_state("listening", from).await;
    assert_eq!(rig.dialog.last_error().await.unwrap(), "");
    assert_eq!(reason().await, "none");
    rig.dialog.stop().await.unwrap();

    let checked = all_announced_allowed(&rec, &allowed_values);
    assert!(checked >= 8, "only {checked} annotated values announced");
}
