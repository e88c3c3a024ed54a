//! The Speaker volume end to end: the real avsd plays through real ALSA
//! (FIFO-backed PCMs) for `avs-sim avs`, which sends SetVolume,
//! AdjustVolume and SetMute (scripted into an answer or pushed on the
//! downchannel) and checks the VolumeChanged / MuteChanged events against
//! Amazon's documentation and against what it sent. D-Bus sets the volume
//! too, through the shipped policy; every change is announced.

use std::time::Duration;

use avsctl::proxy::{DialogProxy, SpeakerProxy};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::audio::s16le;
use support::dialog::{Mic, Rig, SPEAKER_10MS, Speaker, speech16};
use support::system::{AvsSim, World, wait_connection, wait_connection_within};
use support::{Bus, Daemon, Notify};

const AUDIO: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

/// The stand-in ends a request after this much silence following speech.
const END_OF_SPEECH: &str = "end_of_speech_ms=500&stop_capture_ms=10000";

/// A proxy that reads avsd's values, not zbus's cache of them.
async fn speaker_now(bus: &Bus) -> SpeakerProxy<'static> {
    SpeakerProxy::builder(&bus.connect().await)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// Every Speaker.Volume announced with PropertiesChanged, in order.
async fn record_volumes(bus: &Bus) -> tokio::sync::watch::Receiver<Vec<u8>> {
    let props = zbus::fdo::PropertiesProxy::builder(&bus.connect().await)
        .destination("org.avsd.Avs1")
        .unwrap()
        .path("/org/avsd/Avs1")
        .unwrap()
        .build()
        .await
        .unwrap();
    let mut changes = props.receive_properties_changed().await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    tokio::spawn(async move {
        let _props = props;
        while let Some(signal) = changes.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.interface_name().as_str() != "org.avsd.Avs1.Speaker" {
                continue;
            }
            if let Some(zbus::zvariant::Value::U8(v)) = args.changed_properties().get("Volume") {
                let v = *v;
                tx.send_modify(|all| all.push(v));
            }
        }
    });
    rx
}

async fn wait_announced(rx: &tokio::sync::watch::Receiver<Vec<u8>>, volume: u8) {
    let mut waiting = rx.clone();
    let seen = tokio::time::timeout(
        Duration::from_secs(30),
        waiting.wait_for(|v| v.contains(&volume)),
    )
    .await
    .map(|r| r.is_ok());
    assert!(
        seen.unwrap_or(false),
        "Volume {volume} was never announced: {:?}",
        rx.borrow()
    );
}

/// The Speaker events the stand-in took or refused: (name, volume, muted, status).
fn speaker_events(stats: &Value) -> Vec<(String, i64, bool, u64)> {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Speaker.")
        })
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["payload"]["volume"].as_i64().unwrap_or(-1),
                e["payload"]["muted"].as_bool().unwrap_or_default(),
                e["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// `POST /answer`: the next Recognize's answer carries `directives` after its Speak.
async fn script_answer(avs: &AvsSim, directives: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/answer", avs.control))
        .body(json!({ "directives": directives }).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "answer: {}", r.status());
}

fn directive(name: &str, payload: Value) -> Value {
    json!({"directive": {
        "header": {"namespace": "Speaker", "name": name, "messageId": uuid()},
        "payload": payload,
    }})
}

/// A messageId no other directive of this test run has.
fn uuid() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("speaker-test-{}-{n}", std::process::id())
}

/// `busctl set-property … Speaker Volume y N` on `bus`, as uid nobody in
/// `groups` (root runs the tests; setpriv drops to nobody).
fn busctl_set_volume_as_nobody(bus: &Bus, groups: &str, volume: u8) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534"])
        .arg(if groups.is_empty() {
            "--clear-groups".to_string()
        } else {
            format!("--groups={groups}")
        })
        .arg("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "set-property",
            "org.avsd.Avs1",
            "/org/avsd/Avs1",
            "org.avsd.Avs1.Speaker",
            "Volume",
            "y",
            &volume.to_string(),
        ])
        .output()
        .unwrap()
}

/// Energy of the left channel of 48 kHz stereo i16.
fn energy(bytes: &[u8]) -> f64 {
    s16le(bytes)
        .chunks_exact(2)
        .map(|f| f64::from(f[0]) * f64::from(f[0]))
        .sum()
}

/// Ask a question; returns the speaker's byte count when the answer began.
async fn ask(rig: &Rig, mic: &Mic, speaker: &Speaker, question: &[u8]) -> usize {
    let from = rig.state_log().len();
    let start = speaker.bytes.lock().unwrap().len();
    rig.dialog.tap().await.expect("Tap");
    let _said = mic.say(question.to_vec());
    let speaking = rig.wait_state("speaking", from).await;
    rig.wait_state("idle", speaking).await;
    start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_volume_from_avs_quietens_the_output_and_dbus_sets_it_back() {
    let rig = Rig::start(AUDIO).await;
    let mic = Mic::new(&rig.path("mic.fifo"), 320);
    let speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    rig.avs.post(&format!("/dialog?{END_OF_SPEECH}")).await;
    let question = speech16(rig.dir.path(), "q", "set the volume to three");
    let bus = &rig.world.bus;
    let announced = record_volumes(bus).await;
    let now = speaker_now(bus).await;
    assert_eq!(
        now.volume().await.unwrap(),
        100,
        "a new device plays at full volume"
    );

    // Alexa answers "set the volume to three" with speech and SetVolume 30.
    script_answer(
        &rig.avs,
        json!([{"namespace": "Speaker", "name": "SetVolume", "payload": {"volume": 30}}]),
    )
    .await;
    ask(&rig, &mic, &speaker, &question).await;
    let stats = rig.avs_wait("event=Speaker.VolumeChanged").await;
    assert_eq!(
        speaker_events(&stats),
        [("Speaker.VolumeChanged".into(), 30, false, 204)],
        "{stats:#}"
    );
    assert_eq!(now.volume().await.unwrap(), 30);
    wait_announced(&announced, 30).await;

    // The next answer plays at 30.
    let at30 = ask(&rig, &mic, &speaker, &question).await;
    // root sets it back over D-Bus (busctl, through the shipped policy).
    let out = std::process::Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "set-property",
            "org.avsd.Avs1",
            "/org/avsd/Avs1",
            "org.avsd.Avs1.Speaker",
            "Volume",
            "y",
            "100",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = rig.avs_wait("event=Speaker.VolumeChanged&count=2").await;
    assert_eq!(
        speaker_events(&stats)[1],
        ("Speaker.VolumeChanged".into(), 100, false, 204)
    );
    wait_announced(&announced, 100).await;
    let at100 = ask(&rig, &mic, &speaker, &question).await;

    // The same answer, quieter by the curve: (30/100)^3, -31.4 dB.
    let played = speaker.played();
    let quiet = energy(&played[at30..at100]);
    let loud = energy(&played[at100..]);
    assert!(loud > 0.0, "the answer at 100 was heard");
    let db = 10.0 * (quiet / loud).log10();
    let want = 20.0 * f64::from(avsd::volume::gain_for(30, false)).log10();
    println!("the answer at volume 30 played {db:.2} dB against 100 (the curve says {want:.2} dB)");
    assert!((db - want).abs() < 1.5, "{db:.2} dB, want {want:.2} dB");

    // Policy: nobody may not set the volume; a member of group avsd may.
    let refused = busctl_set_volume_as_nobody(bus, "", 10);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("Access denied"), "{err}");
    assert_eq!(now.volume().await.unwrap(), 100);
    if let Some(gid) = support::ensure_avsd_group() {
        let out = busctl_set_volume_as_nobody(bus, &gid.to_string(), 80);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats = rig.avs_wait("event=Speaker.VolumeChanged&count=3").await;
        assert_eq!(
            speaker_events(&stats)[2],
            ("Speaker.VolumeChanged".into(), 80, false, 204)
        );
        wait_announced(&announced, 80).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_volume_directives_are_refused_and_change_nothing() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let (avsd, _auth) = world
        .logged_in(&world.avsd_config_with_avs(&avs, 600))
        .await;
    let dialog = DialogProxy::new(&world.bus.connect().await).await.unwrap();
    wait_connection(&dialog, "connected", &avsd).await;
    let now = speaker_now(&world.bus).await;

    avs.push("", directive("SetVolume", json!({"volume": 150})))
        .await;
    avs.push("", directive("SetVolume", json!({"volume": "30"})))
        .await;
    avs.push("", directive("AdjustVolume", json!({"volume": -101})))
        .await;
    avs.push("", directive("SetMute", json!({"mute": "yes"})))
        .await;
    let stats = avs.wait("event=System.ExceptionEncountered&count=4").await;
    let refusals: Vec<&Value> = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "System.ExceptionEncountered")
        .collect();
    for e in &refusals {
        assert_eq!(
            e["payload"]["error"]["type"], "UNEXPECTED_INFORMATION_RECEIVED",
            "{e:#}"
        );
        assert_eq!(e["status"], 204, "{e:#}");
    }
    assert_eq!(now.volume().await.unwrap(), 100);
    assert!(!now.muted().await.unwrap());
    // D-Bus refuses an out-of-range volume the same way.
    let err = now.set_volume(150).await.expect_err("150 is not a volume");
    assert!(err.to_string().contains("out of range"), "{err}");
    assert_eq!(now.volume().await.unwrap(), 100);

    // Good ones: each answered as the stand-in expects.
    avs.push("", directive("AdjustVolume", json!({"volume": -30})))
        .await;
    avs.push("", directive("SetMute", json!({"mute": true})))
        .await;
    let stats = avs.wait("event=Speaker.MuteChanged").await;
    assert_eq!(
        speaker_events(&stats),
        [
            ("Speaker.VolumeChanged".into(), 70, false, 204),
            ("Speaker.MuteChanged".into(), 70, true, 204),
        ],
        "nothing for the refused directives: {stats:#}"
    );
    assert_eq!(now.volume().await.unwrap(), 70);
    assert!(now.muted().await.unwrap());

    // avsctl, the local buttons of a shell.
    let avsctl = |args: &[&str]| {
        let out = std::process::Command::new(support::bin("avsctl"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &world.bus.address)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(avsctl(&["unmute"]).0, Some(0));
    assert_eq!(
        avsctl(&["volume", "-20"]),
        (Some(0), "Volume: 50\n".to_string())
    );
    assert_eq!(avsctl(&["volume", "loud"]).0, Some(2));
    let (code, status) = avsctl(&["status"]);
    assert_eq!(code, Some(0));
    assert!(status.contains("Volume:        50\n"), "{status}");
    let stats = avs.wait("event=Speaker.VolumeChanged&count=2").await;
    assert_eq!(
        speaker_events(&stats)[2..],
        [
            ("Speaker.MuteChanged".into(), 70, false, 204),
            ("Speaker.VolumeChanged".into(), 50, false, 204),
        ],
        "{stats:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_change_survives_kill_9_and_reaches_avs_once() {
    let world = World::new(3600).await;
    let avs = AvsSim::start(&world.env, &[]).await;
    let config = world.avsd_config_with_avs(&avs, 600);
    let (mut avsd, _auth) = world.logged_in(&config).await;
    let state = avsd.config.parent().unwrap().join("state");
    let dialog = DialogProxy::new(&world.bus.connect().await).await.unwrap();
    wait_connection(&dialog, "connected", &avsd).await;
    let now = speaker_now(&world.bus).await;

    now.set_volume(40).await.unwrap();
    avs.wait("event=Speaker.VolumeChanged").await;

    // AVS goes away; two changes while offline, then a power cut.
    avs.post("/refuse?secs=5").await;
    avs.post("/cut").await;
    wait_connection(&dialog, "disconnected", &avsd).await;
    now.set_volume(45).await.unwrap();
    now.set_volume(55).await.unwrap();
    avsd.signal("KILL");
    assert!(avsd.wait_exit(Duration::from_secs(10)).is_some());

    let notify = Notify::bind();
    let again = Daemon::start_in(&world.bus, Some(&notify), &config, Some(&state), &[]);
    notify.wait_for("READY=1", Duration::from_secs(20));
    let dialog = DialogProxy::new(&world.bus.connect().await).await.unwrap();
    assert_eq!(
        speaker_now(&world.bus).await.volume().await.unwrap(),
        55,
        "restored"
    );
    wait_connection_within(&dialog, "connected", &again, Duration::from_secs(60)).await;
    avs.wait("event=Speaker.VolumeChanged&count=2").await;
    // A later change marks the end: anything sent twice would come before it.
    speaker_now(&world.bus).await.set_muted(true).await.unwrap();
    let stats = avs.wait("event=Speaker.MuteChanged").await;
    assert_eq!(
        speaker_events(&stats),
        [
            ("Speaker.VolumeChanged".into(), 40, false, 204),
            ("Speaker.VolumeChanged".into(), 55, false, 204),
            ("Speaker.MuteChanged".into(), 55, true, 204),
        ],
        "the latest offline value once: {stats:#}"
    );
    drop(avsd);
}
