//! The microphone privacy switch (`org.avsd.Avs1.Microphone.Muted`): the
//! real avsd with its capture device a FIFO-backed ALSA PCM. Muted, avsd
//! holds no descriptor of the capture FIFO and refuses Tap with a named
//! error; unmuted, Tap listens again; the switch survives a restart.

use std::time::Duration;

use avsctl::proxy::MicrophoneProxy;
use futures_util::StreamExt;
use support::dialog::{Mic, Rig, SPEAKER_10MS, Speaker, holds, wait_holds};
use support::{Bus, Daemon, MINIMAL_CONFIG};

const MIC16: &str = "capture_device = \"mic\"\ncapture_format = \"i16:16000:1\"\n\
                     playback_device = \"spk\"\nplayback_format = \"i16:48000:2\"\n";

fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            format!("{name}: {}", msg.as_deref().unwrap_or(""))
        }
        other => other.to_string(),
    }
}

/// Run avsctl against `bus`; its standard output.
fn avsctl(bus: &Bus, args: &[&str]) -> String {
    let out = std::process::Command::new(support::bin("avsctl"))
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "avsctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn microphone(bus: &Bus) -> MicrophoneProxy<'static> {
    MicrophoneProxy::builder(&bus.connect().await)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muting_closes_the_microphone_and_refuses_talk_until_unmuted() {
    let rig = Rig::start(MIC16).await;
    let fifo = rig.path("mic.fifo");
    let _mic = Mic::new(&fifo, 320);
    let _speaker = Speaker::new(&rig.path("spk.fifo"), SPEAKER_10MS);
    let pid = rig.avsd.pid();
    let mic = microphone(&rig.world.bus).await;
    assert!(!mic.muted().await.unwrap());
    let signals = MicrophoneProxy::new(&rig.world.bus.connect().await)
        .await
        .unwrap();
    let mut changes = signals.receive_muted_changed().await;
    changes.next().await; // the current value, read when the stream starts

    // Listening: the device is open; muting ends the request and closes it.
    rig.dialog.tap().await.expect("Tap while on");
    let at = rig.wait_state("listening", 0).await;
    wait_holds(pid, &fifo, true).await;
    mic.set_muted(true)
        .await
        .expect("root or group avsd may mute");
    let announced = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("PropertiesChanged for Muted")
        .expect("avsd left the bus");
    assert!(announced.get().await.unwrap(), "announced as muted");
    rig.wait_state("idle", at).await;
    wait_holds(pid, &fifo, false).await;

    for attempt in ["tap", "hold"] {
        let err = match attempt {
            "tap" => rig.dialog.tap().await,
            _ => rig.dialog.hold().await,
        }
        .expect_err("talk while muted");
        let text = error_name(&err);
        assert!(
            text.starts_with("org.avsd.Avs1.Error.MicrophoneMuted")
                && text.contains("avsctl mic on"),
            "{attempt}: {text}"
        );
    }
    assert!(!holds(pid, &fifo), "a refused Tap opened nothing");

    mic.set_muted(false).await.unwrap();
    assert!(!mic.muted().await.unwrap());
    let from = rig.state_log().len();
    rig.dialog.tap().await.expect("Tap once unmuted");
    rig.wait_state("listening", from).await;
    wait_holds(pid, &fifo, true).await;
    rig.dialog.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switch_survives_a_restart() {
    let bus = Bus::start();
    let state = tempfile::tempdir().unwrap();
    let mut avsd = Daemon::start_ready_in(&bus, MINIMAL_CONFIG, state.path());
    let mic = microphone(&bus).await;
    assert!(!mic.muted().await.unwrap(), "on by default");
    assert!(avsctl(&bus, &["status"]).contains("Microphone:    on\n"));
    avsctl(&bus, &["mic", "off"]);
    assert!(mic.muted().await.unwrap(), "avsctl mic off mutes");
    assert!(avsctl(&bus, &["status"]).contains("Microphone:    off (muted)\n"));
    avsd.signal("TERM");
    assert!(avsd.wait_exit(Duration::from_secs(20)).is_some());

    let again = Daemon::start_ready_in(&bus, MINIMAL_CONFIG, state.path());
    assert!(microphone(&bus).await.muted().await.unwrap(), "still muted");
    avsctl(&bus, &["mic", "on"]);
    assert!(!microphone(&bus).await.muted().await.unwrap());
    // The wake word's switch, off by default (tests/wakeword_enabled.rs
    // checks that it is kept across restarts).
    let status = avsctl(&bus, &["status"]);
    assert!(status.contains("Wake word:     off\n"), "{status}");
    avsctl(&bus, &["wakeword", "on"]);
    assert!(avsctl(&bus, &["status"]).contains("Wake word:     on\n"));
    assert!(
        again.log_text().contains("the microphone is muted"),
        "said in the log:\n{}",
        again.log_text()
    );
}
